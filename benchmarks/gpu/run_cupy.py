"""Run packed sparsepass CUDA kernels on a GPU with CuPy: equality with PyTorch, then timings.

For BERT-base shapes, 128 and 4096 tokens, densities 0.5/0.2/0.1: our BSR
kernel vs PyTorch dense (cuBLAS, FP32 without TF32) vs PyTorch's own BSR matmul,
all on the same GPU in one run. Needs torch, cupy and numpy; not TVM (kernels come from
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


def cuda_ms(fn, repeats: int = 50, budget_ms: float = 1000.0) -> float:
    """Median time of ``fn`` on the GPU, by CUDA events (fewer repeats for a slow ``fn``)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if times and sum(times) > budget_ms:
            break
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def load_kernel(entry: dict):
    """(the kernel's function, how it was loaded): the packed cubin (nvcc, as TVM deploys it),
    else the CUDA source through NVRTC (where the driver refuses the cubin)."""
    cubin = KERNELS / entry.get("cubin", "")
    if entry.get("cubin") and cubin.exists():
        try:
            return cupy.RawModule(path=str(cubin)).get_function(entry["kernel"]), "cubin"
        except cupy.cuda.driver.CUDADriverError as err:
            print(f"{entry['name']}: cubin refused ({err}); compiling the source with NVRTC", flush=True)
    source = (KERNELS / f"{entry['name']}.cu").read_text()
    return cupy.RawModule(code=source, options=("-std=c++17",)).get_function(entry["kernel"]), "nvrtc"


def torch_bsr_runner(w: torch.Tensor, block, x: torch.Tensor):
    """PyTorch's own BSR matmul, or (None, why) where it does not take this block shape."""
    try:
        w_bsr = w.to_sparse_bsr(tuple(block))
        run = lambda: (w_bsr @ x.T).T  # noqa: E731
        run()
        return run, ""
    except (RuntimeError, NotImplementedError, ValueError) as err:
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"


def launcher(function, entry: dict, weight: np.ndarray, tokens: int):
    """(run, X, Y) for our kernel on ``weight`` and a random X of ``tokens`` rows."""
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
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference and the baseline are plain FP32, as ours
    rows = []
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cupy {cupy.__version__}")
    print(f"{'kernel':28} {'tokens':>6} {'dens':>5} {'ours ms':>8} {'cuBLAS ms':>9} {'torch bsr ms':>12} "
          f"{'vs cuBLAS':>9} {'vs bsr':>7} {'max err':>8}")
    for entry in manifest:
        function, loaded = load_kernel(entry)
        for tokens in TOKENS:
            for density in DENSITIES:
                weight = pruned_weight(entry["out_features"], entry["in_features"], entry["block"], density, 0)
                run, x, y = launcher(function, entry, weight, tokens)
                w = torch.from_numpy(weight).cuda()
                run()
                torch.cuda.synchronize()
                expected = x @ w.T
                error = float((y - expected).abs().max() / (expected.abs().max() + 1))
                ours = cuda_ms(run)
                dense = cuda_ms(lambda: x @ w.T)
                bsr_run, bsr_why = torch_bsr_runner(w, entry["block"], x)
                torch_bsr = cuda_ms(bsr_run) if bsr_run is not None else None
                rows.append({"kernel": entry["name"], "loaded": loaded, "tokens": tokens, "density": density,
                             "ours_ms": ours, "cublas_ms": dense, "torch_bsr_ms": torch_bsr,
                             "torch_bsr_unavailable": bsr_why, "relative_error": error})
                bsr_ms, vs_bsr = ("n/a", "n/a") if torch_bsr is None else (f"{torch_bsr:.3f}",
                                                                           f"{torch_bsr / ours:.2f}x")
                print(f"{entry['name']:28} {tokens:>6} {density:>5.2f} {ours:>8.3f} {dense:>9.3f} "
                      f"{bsr_ms:>12} {dense / ours:>8.2f}x {vs_bsr:>7} {error:>8.1e}", flush=True)
                if args.out:  # after every row: a run cut short still leaves what it measured
                    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows},
                                                   indent=1))
    print_goal(rows)


def print_goal(rows: list[dict]) -> None:
    """The goal of the CUDA issue: 10% density, 32x32 blocks, 4096 tokens: >= 3x cuBLAS, ahead of
    torch's BSR matmul, on each BERT-base shape; and every kernel equal to PyTorch."""
    worst = max(row["relative_error"] for row in rows)
    print(f"\nlargest relative error: {worst:.1e} (equal: {'yes' if worst < 1e-5 else 'NO'})")
    for row in rows:
        if row["kernel"].endswith("_32x32") and row["tokens"] == 4096 and row["density"] == 0.1:
            vs_dense = row["cublas_ms"] / row["ours_ms"]
            ahead = "n/a" if row["torch_bsr_ms"] is None else "yes" if row["torch_bsr_ms"] > row["ours_ms"] else "NO"
            print(f"goal {row['kernel']}: {vs_dense:.2f}x cuBLAS (>= 3: {'met' if vs_dense >= 3 else 'NOT met'}), "
                  f"ahead of torch BSR: {ahead}")


if __name__ == "__main__":
    main()
