"""Run packed sparsepass CUDA kernels on a GPU with CuPy: equality with PyTorch, then timings.

For BERT-base shapes, 128 and 4096 tokens, densities 0.5/0.2/0.1: our BSR
kernel vs PyTorch dense (cuBLAS) vs PyTorch's own BSR matmul, all on the same
GPU in one run. Needs torch, cupy and numpy; not TVM (kernels come from
pack.py). Run from the repository root on the GPU machine:

    python3 benchmarks/gpu/run_cupy.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cupy
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from sparsepass.codegen.bsr_format import to_bsr  # noqa: E402  (pure numpy)

KERNELS = Path(__file__).resolve().parent / "kernels"
DENSITIES = (0.5, 0.2, 0.1)
TOKENS = (128, 4096)


def pruned_weight(n: int, k: int, block, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = block
    grid = rng.random((-(-n // r), -(-k // c))) < density
    mask = np.kron(grid, np.ones((r, c), dtype=bool))[:n, :k]
    return (rng.standard_normal((n, k)) * mask).astype(np.float32)


def cuda_ms(fn, repeats: int = 50) -> float:
    """Median time of ``fn`` on the GPU, by CUDA events."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def launcher(entry: dict, weight: np.ndarray, tokens: int):
    """(run, output) for our kernel on ``weight`` and a random X of ``tokens`` rows."""
    source = (KERNELS / f"{entry['name']}.cu").read_text()
    function = cupy.RawModule(code=source, options=("-std=c++17",)).get_function(entry["kernel"])
    packed = to_bsr(weight, tuple(entry["block"]), entry["parts"])
    x = torch.randn(tokens, entry["in_features"], device="cuda")
    y = torch.empty(tokens, entry["out_features"], device="cuda")
    arrays = {"X": x, "Y": y, "R": torch.zeros(1, device="cuda"),  # R: no residual
              **{name: torch.from_numpy(getattr(packed, name)).cuda() for name in ("data", "indices", "indptr", "bias")}}
    args = []
    for param in entry["params"]:
        if param.endswith("_ptr"):
            args.append(cupy.asarray(arrays[param[:-4]]))
        elif param == "M":
            args.append(np.int64(tokens))
        else:  # elem_offset*: our arrays start at their first element
            args.append(np.int64(0))
    grid = (-(-entry["out_features"] // entry["block"][0]), -(-tokens // entry["tile"]), 1)
    block = tuple(entry["threads"])
    return (lambda: function(grid, block, tuple(args))), x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    manifest = json.loads((KERNELS / "manifest.json").read_text())
    rows = []
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"{'kernel':28} {'tokens':>6} {'dens':>5} {'ours ms':>8} {'cuBLAS ms':>9} {'torch bsr ms':>12} "
          f"{'vs cuBLAS':>9} {'vs bsr':>7} {'max err':>8}")
    for entry in manifest:
        for tokens in TOKENS:
            for density in DENSITIES:
                weight = pruned_weight(entry["out_features"], entry["in_features"], entry["block"], density, 0)
                run, x, y = launcher(entry, weight, tokens)
                w = torch.from_numpy(weight).cuda()
                run()
                torch.cuda.synchronize()
                expected = x @ w.T
                error = float((y - expected).abs().max() / (expected.abs().max() + 1))
                ours = cuda_ms(run)
                dense = cuda_ms(lambda: x @ w.T)
                w_bsr = w.to_sparse_bsr(tuple(entry["block"]))
                torch_bsr = cuda_ms(lambda: (w_bsr @ x.T).T)
                rows.append({"kernel": entry["name"], "tokens": tokens, "density": density, "ours_ms": ours,
                             "cublas_ms": dense, "torch_bsr_ms": torch_bsr, "relative_error": error})
                print(f"{entry['name']:28} {tokens:>6} {density:>5.2f} {ours:>8.3f} {dense:>9.3f} "
                      f"{torch_bsr:>12.3f} {dense / ours:>8.2f}x {torch_bsr / ours:>6.2f}x {error:>8.1e}",
                      flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
