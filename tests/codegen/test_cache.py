"""The disk cache reuses valid entries and rebuilds corrupt or stale ones."""

import json
import os

import pytest

from sparsepass.codegen import build, cache
from sparsepass.codegen.spec import KernelSpec
from sparsepass.codegen.target import canonical_target


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def spec():
    return KernelSpec.make(out_features=48, in_features=20, block=(16, 1), layout="rows", tile=4,
                           target=canonical_target())


class CountingBuild:
    def __init__(self):
        self.calls = 0

    def __call__(self, spec):
        self.calls += 1
        return build.compile_spec(spec)


def replace(path, content: bytes):
    """Overwrite through a new inode: the loaded library stays mapped, as with a real second writer."""
    tmp = path.with_suffix(".damaged")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def entry(root, spec):
    key = cache.cache_key(spec)
    return root / f"{key}.so", root / f"{key}.json"


def test_second_load_uses_the_cache(fresh_cache, spec):
    counting = CountingBuild()
    cache.load_or_build(spec, counting)
    module = cache.load_or_build(spec, counting)
    assert counting.calls == 1
    assert module["bsr_linear"] is not None


@pytest.mark.parametrize("damage", ["truncate_library", "garbage_library", "bad_json", "stale_version",
                                    "missing_json"])
def test_damaged_entry_is_rebuilt(fresh_cache, spec, damage):
    counting = CountingBuild()
    cache.load_or_build(spec, counting)
    lib, meta = entry(fresh_cache, spec)
    if damage == "truncate_library":
        replace(lib, lib.read_bytes()[:100])
    elif damage == "garbage_library":
        replace(lib, b"\x7fELF not really")
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "stale_version":
        record = json.loads(meta.read_text())
        record["provenance"]["sparsepass"] = "0.0.0-old"
        meta.write_text(json.dumps(record))
    else:
        meta.unlink()
    module = cache.load_or_build(spec, counting)
    assert counting.calls == 2
    assert module["bsr_linear"] is not None
    assert json.loads(meta.read_text())["provenance"]["spec"] == spec.to_json()


def test_key_depends_on_spec_and_target(spec):
    other_tile = KernelSpec.make(out_features=48, in_features=20, block=(16, 1), layout="rows", tile=8,
                                 target=canonical_target())
    other_target = KernelSpec.make(out_features=48, in_features=20, block=(16, 1), layout="rows", tile=4,
                                   target={"kind": "llvm", "mcpu": "x86-64", "mtriple": "x86_64-linux-gnu"})
    keys = {cache.cache_key(s) for s in (spec, other_tile, other_target)}
    assert len(keys) == 3


def test_spec_json_round_trip(spec):
    assert KernelSpec.from_json(spec.to_json()) == spec
