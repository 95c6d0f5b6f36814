"""What the layer benchmarks share: their command line (repeats, density, threads, set here) and
the line naming the host's half-precision units."""

from __future__ import annotations

import argparse

import torch

from sparsepass.codegen.target import canonical_target, half_precision_features


def parse_layer_bench_args(doc: str) -> argparse.Namespace:
    """Parse --repeats/--density/--threads, set PyTorch's threads and seed 0."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def host_units() -> str:
    """The half-precision units PyTorch (and sparsepass) use on this CPU, for a header line."""
    return ", ".join(sorted(half_precision_features(canonical_target()))) or "none"
