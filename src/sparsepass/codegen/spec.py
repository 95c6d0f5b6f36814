"""KernelSpec: everything that decides a generated kernel's code, and nothing else.

A spec is the key of the kernel caches (in memory and on disk) and is what a
rewritten graph stores to find its kernel again, as a JSON string, so a saved
or exported graph can rebuild its kernels in a fresh process. The sparsity
pattern itself is data (indptr/indices buffers), not part of the spec: every
768 -> 3072 layer with 32x1 blocks shares one compiled kernel.
"""

from __future__ import annotations

import dataclasses
import json

from sparsepass.codegen.io_dtype import check_io_dtype
from sparsepass.codegen.target import target_key

#: Upper bound on the parts block rows are split into; enough to balance many cores.
MAX_PARTS = 128

#: Elementwise functions a kernel can apply before it stores its output.
EPILOGUES = ("none", "relu", "relu6", "gelu", "gelu_tanh", "silu", "tanh")

#: Loop layouts: "rows" vectorises over a block's rows (tall blocks, R >= 8);
#: "tokens" vectorises over rows of X (short blocks and unstructured); "channels" is
#: "tokens" for a 1x1 conv in NCHW: X is [N, K, M] and Y [N, N_out, M], no transposes;
#: "amx" multiplies bfloat16 R x C blocks (C = 2..32) on Intel AMX tiles (bsr_linear_amx).
LAYOUTS = ("rows", "tokens", "channels", "amx")


class SpecMixin:
    """What every kernel spec offers the build and cache: its target, JSON, construction."""

    target: str

    @property
    def target_dict(self) -> dict:
        return json.loads(self.target)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def make(cls, *, target: dict, **fields):
        """Build a spec from a canonical target dict (rather than its JSON)."""
        return cls(target=target_key(target), **fields)


@dataclasses.dataclass(frozen=True)
class KernelSpec(SpecMixin):
    """A BSR linear kernel ``Y = epilogue(X @ W.T + bias)`` for one weight shape.

    Attributes
    ----------
    out_features, in_features : the dense weight's (N, K)
    block : (R, C), the BSR block shape over the weight
    layout : one of LAYOUTS
    tile : rows of X per register tile ("rows") or tokens per vector tile ("tokens")
    epilogue : one of EPILOGUES
    target : the canonical target dict, as sorted JSON (see codegen.target)
    residual : a tensor shaped like Y is added before the epilogue (``Y = act(X W^T + b + R)``)
    dtype : the dtype of X, the residual and Y (one of io_dtype.IO_DTYPES); the kernel
        computes in float32 whatever it is, and weights and bias are float32
    op : the kernel family; "bsr_linear" for now
    """

    out_features: int
    in_features: int
    block: tuple[int, int]
    layout: str
    tile: int
    target: str
    epilogue: str = "none"
    residual: bool = False
    dtype: str = "float32"
    op: str = "bsr_linear"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown kernel layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.epilogue not in EPILOGUES:
            raise ValueError(f"unknown epilogue {self.epilogue!r}; expected one of {EPILOGUES}")
        if min(self.block) < 1 or self.tile < 1:
            raise ValueError(f"bad block {self.block} or tile {self.tile}")
        check_io_dtype(self.dtype)

    @property
    def block_rows(self) -> int:
        """Number of block rows (ceil(N / R)): the padded output is block_rows * R wide."""
        return -(-self.out_features // self.block[0])

    @property
    def parts(self) -> int:
        """Parts the block rows are split into for balanced parallel work."""
        return min(self.block_rows, MAX_PARTS)

    @classmethod
    def from_json(cls, text: str) -> "KernelSpec":
        fields = json.loads(text)
        fields["block"] = tuple(fields["block"])
        return cls(**fields)
