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

from swgguf import conversion as cv
from swgguf.runtime.build import build_stock_library
from stock_probe import run_probe

TOKENS = ",".join(str(t) for t in range(3, 35))


@pytest.fixture(scope="module")
def stock_lib():
    return build_stock_library()


def _probe(model, out, lib_dir=None) -> subprocess.CompletedProcess:
    return run_probe(model, out, TOKENS, lib_dir)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_f32, tiny_cfg, tiny_weights):
    from test_convert_tiny import record_imatrix  # the tiny model's activation statistics

    d = tmp_path_factory.mktemp("stock")
    imatrix, _, _ = record_imatrix(tiny_cfg, tiny_weights, d / "imatrix.gguf")
    opts = cv.ConvertOptions.from_flags(ftype="Q4_K_M", protect_sw=True, protect_cols=2, salience_imatrix=imatrix)
    return {
        "plain": cv.convert(tiny_f32, d / "plain.gguf", cv.ConvertOptions.from_flags(ftype="Q4_K_M")).output,
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


LORA_PROBE = """
import sys, numpy as np, llama_cpp
model, lora, out = sys.argv[1:4]
kw = dict(n_ctx=64, n_batch=64, n_ubatch=64, logits_all=True, verbose=False, type_k=0, type_v=0)
llm = llama_cpp.Llama(model, lora_path=lora or None, **kw)
llm.eval([int(t) for t in sys.argv[4].split(",")])
np.save(out, np.array(llm.scores[:llm.n_tokens], dtype=np.float32))
"""


def _lora_logits(model, lora, out, lib_dir=None) -> np.ndarray:
    env = dict(os.environ)
    env.pop("LLAMA_CPP_LIB_PATH", None)
    if lib_dir is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    proc = subprocess.run([sys.executable, "-c", LORA_PROBE, str(model), str(lora or ""), str(out), TOKENS],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


def test_lora_compat_gives_stock_llama_cpp_the_same_correction(tmp_path, stock_lib, tiny_f32, tiny_cfg,
                                                               tiny_weights, files):
    """--lora-compat: a plain file (llama-quantize's bytes) + an adapter that stock
    llama.cpp loads with --lora; together they give the protected file's logits."""
    from test_convert_tiny import record_imatrix

    imatrix, _, _ = record_imatrix(tiny_cfg, tiny_weights, tmp_path / "imatrix.gguf")
    opts = cv.ConvertOptions.from_flags(ftype="Q4_K_M", protect_sw=True, protect_cols=2, salience_imatrix=imatrix,
                             lora_compat=True)
    report = cv.convert(tiny_f32, tmp_path / "out.gguf", opts)
    assert report.lora_adapter == tmp_path / "out.lora.gguf"
    assert report.output.read_bytes() == files["plain"].read_bytes()  # the base is the plain quantization
    with_lora = _lora_logits(report.output, report.lora_adapter, tmp_path / "a.npy", stock_lib)
    sidecar_run = _lora_logits(files["protected"], None, tmp_path / "b.npy")
    plain = _lora_logits(report.output, None, tmp_path / "c.npy", stock_lib)
    # the same F32 correction, summed in another order: ~1e-6
    assert np.abs(with_lora - sidecar_run).max() < 1e-3
    assert np.abs(plain - sidecar_run).max() > 100 * np.abs(with_lora - sidecar_run).max()
