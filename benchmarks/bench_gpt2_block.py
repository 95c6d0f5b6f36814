"""A GPT-2 (124M-size) transformer block, 128 tokens, its Conv1D projections pruned 32x1 at 90%.

PyTorch dense vs sparsepass's torch.fx path with and without epilogue fusion
(fusion folds the recognised tanh-GELU into c_fc's kernel and the residual adds
into both c_proj kernels) and vs the Relax pipeline, side by side in one run, one
thread by default; medians of interleaved calls.

    python benchmarks/bench_gpt2_block.py [--repeats N] [--density D] [--threads T]
"""

from __future__ import annotations

import torch
from layer_bench_args import parse_layer_bench_args
from relax_runner import build_with_sparsepass, relax_runner
from transformers import GPT2Config, GPT2Model

from sparsepass import frontends, passes, prune
from sparsepass.codegen import runtime
from sparsepass.testing import output_tolerance
from sparsepass.testing.timing import interleaved_median_ms

TOKENS = 128


@torch.no_grad()
def main() -> None:
    args = parse_layer_bench_args(__doc__)
    runtime.set_tvm_pool_threads(args.threads)  # the Relax build runs on TVM's pool
    config = GPT2Config(n_layer=1, vocab_size=1000, bos_token_id=0, eos_token_id=0, use_cache=False)
    model = GPT2Model(config).eval()
    prune.prune_linears(model, (32, 1), args.density)
    ids = torch.randint(0, config.vocab_size, (1, TOKENS))
    graph = frontends.trace(model, (ids,))
    fused = passes.sparsify_graph(graph, example_inputs=(ids,))
    unfused = passes.sparsify_graph(graph, example_inputs=(ids,),
                                    options=passes.SparsifyOptions(fuse_activations=False))
    relax_run, relax_out = relax_runner(build_with_sparsepass(frontends.to_relax(model, (ids,))),
                                        ids)
    expected = model(ids).last_hidden_state
    tolerance = output_tolerance(expected, 4 * config.n_embd)
    outputs = {"fused": fused(ids)[0], "unfused": unfused(ids)[0], "relax": relax_out()}
    for name, out in outputs.items():
        error = float((out - expected).abs().max())
        assert error <= tolerance, f"{name} differs from dense: {error} > {tolerance}"
    print(fused.sparsepass_report)
    names = ["PyTorch dense", "sparsepass fx, no epilogue fusion", "sparsepass fx", "sparsepass Relax pipeline"]
    times = interleaved_median_ms([lambda: model(ids), lambda: unfused(ids), lambda: fused(ids), relax_run],
                                  args.repeats)
    print(f"\nGPT-2 block (768 wide), {TOKENS} tokens, 32x1 blocks at density {args.density}, "
          f"{args.threads} thread(s); outputs equal within {tolerance:.1e}")
    print(f"{'path':36} {'ms':>8} {'vs dense':>9}")
    for name, ms in zip(names, times):
        print(f"{name:36} {ms:>8.3f} {times[0] / ms:>8.2f}x")


if __name__ == "__main__":
    main()
