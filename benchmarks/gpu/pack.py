"""Pack sparsepass's generated CUDA kernels for a GPU machine that has no TVM.

Writes benchmarks/gpu/kernels/<name>.cu (TVM's CUDA source), <name>.sm_90.cubin
(that source through nvcc, as TVM deploys it) and manifest.json (kernel name,
parameter order, launch geometry, shape and block) for every kernel the GPU
benchmark runs. run_cupy.py loads the cubins with CuPy (falling back to NVRTC on
the source where the GPU machine's driver refuses them), checks them against
PyTorch on the GPU and times them.

    python benchmarks/gpu/pack.py          # here, where TVM is installed
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sparsepass.codegen import bsr_linear_cuda
from sparsepass.codegen.cuda_compile import compile_binary, cuda_source
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import canonical_target

OUT = Path(__file__).resolve().parent / "kernels"
#: BERT-base linear shapes (out, in) and the GPU-friendly block shapes the benchmark uses.
SHAPES = ((3072, 768), (768, 3072), (768, 768))
BLOCKS = ((32, 32), (16, 16), (32, 1))
#: The GPU machines lent to this project are H100/H200s.
ARCH = "sm_90"


def kernel_signature(source: str) -> tuple[str, list[str]]:
    """The __global__ function's name and its parameter names, in order."""
    match = re.search(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)", source)
    if match is None:
        raise ValueError("no __global__ function in the CUDA source")
    params = [p.strip().split()[-1] for p in match.group(2).split(",")]
    return match.group(1), params


def main() -> None:
    OUT.mkdir(exist_ok=True)
    manifest = []
    for out_features, in_features in SHAPES:
        for block in BLOCKS:
            spec = KernelSpec.make(out_features=out_features, in_features=in_features, block=block,
                                   layout="rows", tile=1, target=canonical_target("cuda"))
            name = f"bsr_{out_features}x{in_features}_{block[0]}x{block[1]}"
            source = cuda_source(spec)
            (OUT / f"{name}.cu").write_text(source)
            cubin = f"{name}.{ARCH}.cubin"
            (OUT / cubin).write_bytes(compile_binary(source, ARCH))
            kernel, params = kernel_signature(source)
            manifest.append({
                "name": name, "kernel": kernel, "params": params, "cubin": cubin, "out_features": out_features,
                "in_features": in_features, "block": list(block), "parts": spec.parts,
                "tile": bsr_linear_cuda.geometry(spec).tile,
                "threads": list(bsr_linear_cuda.launch_dims(spec, rows=1)[1]),
            })
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"packed {len(manifest)} kernels into {OUT}")


if __name__ == "__main__":
    main()
