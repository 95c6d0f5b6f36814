"""Demo: a BERT-base encoder layer pruned to 32x1 blocks at 90%, sparsified, checked, timed.

Runs with `make demo`: no downloads (transformers builds the layer from a
config with random weights). Prints the per-layer report and the measured
speedup over PyTorch dense, on one thread and on all cores.
"""

from __future__ import annotations

import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from sparsepass import frontends, passes, prune
from sparsepass.testing import output_tolerance
from sparsepass.testing.timing import median_ms

TOKENS = 128
BLOCK = (32, 1)
DENSITY = 0.1


def first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    config = BertConfig()  # BERT-base: hidden 768, FFN 3072, 12 heads
    layer = BertLayer(config).eval()
    prune.prune_linears(layer, BLOCK, DENSITY)
    x = torch.randn(1, TOKENS, config.hidden_size)

    graph = frontends.trace(layer, (x,))
    fast = passes.sparsify_graph(graph, example_inputs=(x,))
    print(fast.sparsepass_report, end="\n\n")

    expected, actual = first(layer(x)), first(fast(x))
    error = float((actual - expected).abs().max())
    tolerance = output_tolerance(expected, config.intermediate_size)
    print(f"max |sparse - dense| = {error:.2e} (tolerance {tolerance:.2e}): "
          f"{'EQUAL' if error <= tolerance else 'DIFFERENT'}")
    if error > tolerance:
        raise SystemExit("sparsified layer differs from the dense one")

    all_cores = torch.get_num_threads()
    for threads in sorted({1, all_cores}):
        torch.set_num_threads(threads)
        dense_ms = median_ms(lambda: layer(x), 30)
        sparse_ms = median_ms(lambda: fast(x), 30)
        print(f"{threads} thread(s): PyTorch dense {dense_ms:.2f} ms, sparsepass {sparse_ms:.2f} ms, "
              f"speedup {dense_ms / sparse_ms:.1f}x")
    torch.set_num_threads(all_cores)


if __name__ == "__main__":
    main()
