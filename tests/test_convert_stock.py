"""A protected file in *stock* llama.cpp: it must fail with a clear message, never
run silently without its sidecar. Stock llama.cpp counts the tensors a model
uses against the file's tensor count, so the extra sidecar tensors make it
refuse the file ("wrong number of tensors"); the plain file of the same
conversion loads there and gives the patched runtime's logits bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from swgguf import convert as cv
from swgguf.runtime.build import build_stock_library

TOKENS = ",".join(str(t) for t in range(3, 35))


@pytest.fixture(scope="module")
def stock_lib():
    return build_stock_library()


def _probe(model, out, lib_dir=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LLAMA_CPP_LIB_PATH", None)
    if lib_dir is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    return subprocess.run([sys.executable, "-m", "swgguf.runtime.probe", str(model), "--tokens", TOKENS,
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_f32, tiny_cfg, tiny_weights):
    from test_convert_tiny import record_imatrix  # the tiny model's activation statistics

    d = tmp_path_factory.mktemp("stock")
    imatrix, _, _ = record_imatrix(tiny_cfg, tiny_weights, d / "imatrix.gguf")
    opts = cv.ConvertOptions(ftype="Q4_K_M", protect_sw=True, protect_cols=2, salience_imatrix=imatrix)
    return {
        "plain": cv.convert(tiny_f32, d / "plain.gguf", cv.ConvertOptions(ftype="Q4_K_M")).output,
        "protected": cv.convert(tiny_f32, d / "protected.gguf", opts).output,
    }


def test_stock_llama_cpp_refuses_the_protected_file(tmp_path, stock_lib, files):
    proc = _probe(files["protected"], tmp_path / "x.npy", stock_lib)
    assert proc.returncode == 1 and not (tmp_path / "x.npy").exists()
    assert "wrong number of tensors" in proc.stderr, proc.stderr[-2000:]


def test_the_patched_runtime_runs_it(tmp_path, files):
    proc = _probe(files["protected"], tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.isfinite(np.load(tmp_path / "x.npy")).all()


def test_stock_runs_the_plain_file_as_the_patched_runtime(tmp_path, stock_lib, files):
    a, b = _probe(files["plain"], tmp_path / "a.npy", stock_lib), _probe(files["plain"], tmp_path / "b.npy")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-1000:] + b.stderr[-1000:]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
