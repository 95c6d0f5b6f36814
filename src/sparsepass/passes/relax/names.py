"""Layer names for the Relax report: which PyTorch parameter a weight constant came from.

The importer turns parameters into anonymous constants, so the Relax passes
could only report ``linear3``. `to_relax` records a digest of each weight's bytes
with its parameter's name as a module attribute; the passes look their weights up
there (a pass that makes a new weight from an old one, folding BatchNorm or
removing channels, passes the old name on). A module built some other way has
no names and keeps the numbered ones.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from tvm import ir

ATTR = "sparsepass.constant_names"


def digest(array: np.ndarray) -> str:
    """What identifies a weight's value: its dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(f"{array.dtype}{array.shape}".encode(), digest_size=16)
    h.update(array.tobytes())
    return h.hexdigest()


def with_names(mod: ir.IRModule, names: dict[str, str]) -> ir.IRModule:
    """``mod`` with ``names`` (digest -> layer name) added to its names attribute."""
    return mod.with_attr(ATTR, json.dumps({**constant_names(mod), **names}))


def constant_names(mod: ir.IRModule) -> dict[str, str]:
    """Digest -> layer name, as `to_relax` and the passes recorded them (empty if none)."""
    attrs = mod.attrs
    return json.loads(str(attrs[ATTR])) if attrs is not None and ATTR in attrs else {}


def layer_name(names: dict[str, str], weight: np.ndarray, fallback: str) -> str:
    """The name recorded for ``weight``, else ``fallback``."""
    return names.get(digest(weight), fallback) if names else fallback


def passed_on(names: dict[str, str], pairs) -> dict[str, str]:
    """Names for new weights made from named ones: ``pairs`` of (old array, new array)."""
    out = {}
    for old, new in pairs:
        name = names.get(digest(old)) if names else None
        if name is not None:
            out[digest(new)] = name
    return out
