"""Crafted sidecars: the runtime refuses each with a clear message and the process
survives; the Python reader (swgguf.formats.sidecar) refuses the same files.

Files are written with ``gguf_io.copy_gguf``, which adds tensors and keys without any
validation, so the bytes reach the runtime exactly as an attacker would write them.
"""

from __future__ import annotations

import subprocess
import sys

import gguf
import numpy as np
import pytest

from swgguf.formats import gguf_io, sidecar
from swgguf.errors import SwggufError

U32 = gguf.GGUFValueType.UINT32
U64 = gguf.GGUFValueType.UINT64
BASE = "blk.0.ffn_down"  # numpy shape (256, 512) in the tiny model, F32
F32_TYPE = int(gguf.GGMLQuantizationType.F32)


def _good() -> tuple[dict[str, np.ndarray], dict[str, object]]:
    tensors = {
        BASE + ".swg_cols": np.array([3, 17], np.int32),
        BASE + ".swg_resid": np.zeros((256, 2), np.float16),
        BASE + ".swg_sw_pos": np.array([[5, 17]], np.int32),
        BASE + ".swg_sw_val": np.array([4.0], np.float16),
    }
    kv = {
        sidecar.KEY_VERSION: (sidecar.SIDECAR_VERSION, U32),
        sidecar.KEY_TENSORS: [BASE],
        sidecar.KEY_WEIGHT_TYPES: ([F32_TYPE], U32),
    }
    return tensors, kv


def _case(tensors=None, drop=(), kv=None):
    t, k = _good()
    t.update(tensors or {})
    for name in drop:
        t.pop(name)
    k.update(kv or {})
    return t, k


CASES = {
    # name: (tensors/kv of the crafted file, runtime message, Python message)
    "column out of range": (_case({BASE + ".swg_cols": np.array([3, 9999], np.int32)}),
                            "column index 9999 out of range [0, 512)", "column index 9999 out of range"),
    "negative column": (_case({BASE + ".swg_cols": np.array([-1, 17], np.int32)}),
                        "column index -1 out of range", "column index -1 out of range"),
    "columns not increasing": (_case({BASE + ".swg_cols": np.array([17, 3], np.int32)}),
                               "strictly increasing", "strictly increasing"),
    "too many columns": (_case({BASE + ".swg_cols": np.arange(513, dtype=np.int32),
                                BASE + ".swg_resid": np.zeros((256, 513), np.float16)}),
                         "513 columns, expected 1..512", "has 513 entries"),
    "wrong dtype": (_case({BASE + ".swg_resid": np.zeros((256, 2), np.float32)}),
                    "has type f32, expected f16", ".swg_resid has type F32, expected F16"),
    "length mismatch": (_case({BASE + ".swg_resid": np.zeros((256, 3), np.float16)}),
                        ".swg_resid has ne [3, 256, 1, 1], expected [2, 256]", ".swg_resid has ne [3, 256, 1, 1]"),
    "half of a pair missing": (_case(drop=[BASE + ".swg_sw_val"]),
                               ".swg_sw_pos is present but .swg_sw_val is missing", "without its pair"),
    "residual without columns": (_case(drop=[BASE + ".swg_cols"]),
                                 ".swg_resid is present but .swg_cols is missing", "without its pair"),
    "super-weight row out of range": (_case({BASE + ".swg_sw_pos": np.array([[999, 17]], np.int32)}),
                                      "super-weight row 999 out of range", "super-weight row 999 out of range"),
    "super-weight column not protected": (_case({BASE + ".swg_sw_pos": np.array([[5, 6]], np.int32)}),
                                          "super-weight column 6 is not among", "super-weight column 6 is not among"),
    "non-finite residual": (_case({BASE + ".swg_resid": np.full((256, 2), np.inf, np.float16)}),
                            "is not finite", "non-finite"),
    "tensor that does not exist": (
        _case({"blk.7.ffn_down.swg_cols": np.array([1], np.int32),
               "blk.7.ffn_down.swg_resid": np.zeros((256, 1), np.float16)},
              kv={sidecar.KEY_TENSORS: [BASE, "blk.7.ffn_down"],
                  sidecar.KEY_WEIGHT_TYPES: ([F32_TYPE, F32_TYPE], U32)}),
        "no such weight tensor 'blk.7.ffn_down.weight'", "which is not in the file"),
    "not listed in the keys": (_case(kv={sidecar.KEY_TENSORS: ["output"], sidecar.KEY_WEIGHT_TYPES: ([F32_TYPE], U32)}),
                               "has no sidecar tensors", "lists"),
    "unknown version": (_case(kv={sidecar.KEY_VERSION: (3, U32)}), "swgguf.sidecar.version", "swgguf.sidecar.version"),
    "stale residuals": (_case(kv={sidecar.KEY_WEIGHT_TYPES: ([int(gguf.GGMLQuantizationType.Q4_K)], U32)}),
                        "the residuals are stale", "the residuals are stale"),
}


def _hashes(weights, kv) -> dict[str, object]:
    """The hash key for the bases ``kv`` lists (0 for a weight the file lacks)."""
    bases = kv[sidecar.KEY_TENSORS]
    return {sidecar.KEY_WEIGHT_HASHES: ([sidecar.weight_hash(weights[b + ".weight"]) if b + ".weight" in weights
                                         else 0 for b in bases], U64)}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, tiny_f32):
    d = tmp_path_factory.mktemp("crafted")
    files = {}
    weights = {t.name: t for t in gguf_io.open_gguf(tiny_f32).tensors}
    for i, (name, ((tensors, kv), _, _)) in enumerate(CASES.items()):
        files[name] = gguf_io.copy_gguf(tiny_f32, d / f"case{i}.gguf", add=list(tensors.items()),
                                        kv={**kv, **_hashes(weights, kv)})
    tensors, kv = _good()
    files["good"] = gguf_io.copy_gguf(tiny_f32, d / "good.gguf", add=list(tensors.items()),
                                      kv={**kv, **_hashes(weights, kv)})
    return files


def _probe(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swgguf.runtime.probe", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_uncorrupted_file_loads(crafted):
    proc = _probe(crafted["good"])
    assert proc.returncode == 0, proc.stderr
    assert "1 sidecars" in proc.stdout
    assert set(sidecar.read_sidecars(crafted["good"])) == {BASE}


@pytest.mark.parametrize("case", list(CASES))
def test_runtime_refuses_crafted_sidecar(crafted, case):
    proc = _probe(crafted[case])
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # an error, not a signal
    lines = [l for l in proc.stderr.splitlines() if l.startswith("swgguf: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert CASES[case][1] in lines[0]
    assert str(crafted[case]) in lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_python_reader_refuses_crafted_sidecar(crafted, case):
    with pytest.raises(SwggufError, match=None) as err:
        sidecar.read_sidecars(crafted[case])
    assert CASES[case][2] in str(err.value)
