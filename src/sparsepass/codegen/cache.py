"""The on-disk kernel cache: compiled libraries keyed by a hash of what made them.

What made a library: the kernel spec (shape, block, layout, tile, epilogue,
target), the sparsepass and TVM versions, and the generators' source code.

An entry is ``<key>.so`` plus ``<key>.json`` holding the spec, the versions
that built it and the library's sha256. An entry is used only when all of
them match; a missing, corrupt, truncated or stale entry is rebuilt, never
trusted. Writes go through a temporary file and an atomic rename, so a
crashed or concurrent writer never leaves a half-written library behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

from sparsepass import __version__
from sparsepass.codegen.tvm_api import load_module, tvm

log = logging.getLogger(__name__)

#: Environment variable that moves the cache (default: $XDG_CACHE_HOME/sparsepass/kernels).
CACHE_DIR_ENV = "SPARSEPASS_CACHE_DIR"


def cache_dir() -> Path:
    """The directory of the kernel cache (created on first write)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsepass" / "kernels"


@functools.cache
def generator_fingerprint() -> str:
    """Hash of the code generators' sources: editing a generator invalidates its kernels."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _provenance(spec) -> dict:
    return {"spec": spec.to_json(), "sparsepass": __version__, "tvm": tvm.__version__,
            "generators": generator_fingerprint()}


def cache_key(spec) -> str:
    """Hash of the spec, the target inside it, and the sparsepass and TVM versions."""
    text = json.dumps(_provenance(spec), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` with ``write(temporary path)`` and an atomic rename: never half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_entry(lib: Path, meta: Path, spec):
    """The cached module, or None when the entry is missing or cannot be trusted."""
    if not (lib.exists() and meta.exists()):
        return None
    try:
        recorded = json.loads(meta.read_text())
        if recorded.get("provenance") != _provenance(spec) or recorded.get("sha256") != _sha256(lib):
            log.info("kernel cache entry %s is stale or corrupt; rebuilding", lib.name)
            return None
        return load_module(str(lib))
    except Exception as err:  # unreadable JSON or a library that will not load
        log.info("kernel cache entry %s failed to load (%s); rebuilding", lib.name, err)
        return None


def library_path(spec) -> Path:
    """Where the cache keeps the compiled library of ``spec``."""
    return cache_dir() / f"{cache_key(spec)}.so"


def load_or_build(spec, build: Callable[..., "tvm.runtime.Executable"]):
    """The runtime module for ``spec`` (loaded from `library_path`): from the cache when valid,
    else built and stored."""
    lib = library_path(spec)
    lib.parent.mkdir(parents=True, exist_ok=True)
    meta = lib.with_suffix(".json")
    module = _load_entry(lib, meta, spec)
    if module is not None:
        return module
    executable = build(spec)
    atomic_write(lib, executable.export_library)
    record = {"provenance": _provenance(spec), "sha256": _sha256(lib)}
    atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    return load_module(str(lib))
