"""The patched runtime against a float64 NumPy reference of the same model
(llm.c style: reference -> golden logits -> native path within a stated tolerance).

F32 model: the runtime must add exactly the stored residuals, so logits agree
to 1e-3 (observed ~1e-6; F32 KV cache). Q4_K model: llama.cpp quantizes the
activations of a Q4_K matmul to 8 bits, so the tolerance is looser, and the
test also requires the runtime to be far closer to the corrected reference
than to the uncorrected one.
"""

from __future__ import annotations

import numpy as np
import pytest

from swgguf import synthetic
from swgguf.formats import sidecar
from swgguf.runtime.quantize import quantize
from swgguf.runtime import llm

TOKENS = list(range(3, 67))
# max |logit difference| allowed on the F32 model (logits up to ~5). CPU: observed ~1e-6.
# CUDA: ggml-cuda runs F32 GEMMs through cuBLAS in TF32 mode (CUBLAS_TF32_TENSOR_OP_MATH:
# inputs rounded to 10 mantissa bits, F32 accumulation and range), for the model's own
# matmuls and for the correction alike; with the large planted residuals here that gave
# max errors of 0.043 on an H200. The effect checks below stay at 20x the tolerance.
F32_TOL = {"cpu": 1e-3, "cuda": 0.1}
GPU_LAYERS = {"cpu": 0, "cuda": -1}


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    return request.param


def _logits(path, device="cpu", **env) -> np.ndarray:
    with llm.environment(**env):
        model = llm.load(path, llm.LoadOptions(n_ctx=128, n_batch=128, kv_f32=True,
                                               n_gpu_layers=GPU_LAYERS[device]))
    return llm.logits(model, TOKENS)


def _apply(weights, sidecars, sw_scale=1.0):
    out = dict(weights)
    for base, sc in sidecars.items():
        out[base + ".weight"] = weights[base + ".weight"] + sc.dense_correction(sw_scale)
    return out


@pytest.fixture(scope="module")
def f32_case(tmp_path_factory, tiny_f32, tiny_cfg, tiny_weights):
    """Sidecars with large arbitrary residuals on an F32 model: the runtime must add them exactly."""
    rng = np.random.default_rng(1)
    w = tiny_weights
    specs = {  # base -> (columns, scalars)
        "blk.0.ffn_down": ([17, 100, 300], [(5, 17), (9, 250)]),
        "blk.1.attn_q": ([3], []),
        "output": ([10, 11], []),
    }
    sidecars = {}
    for base, (cols, scalars) in specs.items():
        true = w[base + ".weight"].copy()
        true[:, cols] += rng.standard_normal((true.shape[0], len(cols))).astype(np.float32)
        for r, c in scalars:
            true[r, c] = 6.0
        sidecars[base] = sidecar.build_sidecar(base, true, w[base + ".weight"], cols, scalars)
    path = sidecar.write_with_sidecars(tiny_f32, tmp_path_factory.mktemp("f32") / "protected.gguf", sidecars)
    return path, sidecars


def test_f32_sidecar_matches_corrected_reference(f32_case, tiny_cfg, tiny_weights, device):
    path, sidecars = f32_case
    got = _logits(path, device)
    want = synthetic.llama_forward(tiny_cfg, _apply(tiny_weights, sidecars), TOKENS)
    plain = synthetic.llama_forward(tiny_cfg, tiny_weights, TOKENS)
    assert np.abs(got - want).max() < F32_TOL[device]
    assert np.abs(plain - want).max() > 20 * F32_TOL[device]  # the sidecar changes the model
    if device == "cuda":  # the sidecars were placed with their weights, on the GPU
        assert any("sidecars in CUDA" in line for line in llm.swgguf_log_lines()), llm.swgguf_log_lines()


def test_sidecar_off_matches_uncorrected_reference(f32_case, tiny_cfg, tiny_weights, device):
    path, _ = f32_case
    got = _logits(path, device, SWGGUF_SIDECAR="0")
    want = synthetic.llama_forward(tiny_cfg, tiny_weights, TOKENS)
    assert np.abs(got - want).max() < F32_TOL[device]


@pytest.mark.parametrize("alpha", ["0", "2.5"])
def test_sw_scale_matches_scaled_reference(f32_case, tiny_cfg, tiny_weights, alpha, device):
    path, sidecars = f32_case
    got = _logits(path, device, SWGGUF_SW_SCALE=alpha)
    want = synthetic.llama_forward(tiny_cfg, _apply(tiny_weights, sidecars, float(alpha)), TOKENS)
    assert np.abs(got - want).max() < F32_TOL[device]
    # the scalars really moved: alpha=1 is far from this
    full = synthetic.llama_forward(tiny_cfg, _apply(tiny_weights, sidecars), TOKENS)
    assert np.abs(full - want).max() > 20 * F32_TOL[device]


def test_sw_scale_zero_zeroes_the_super_weight(f32_case, tiny_weights):
    _, sidecars = f32_case
    sc = sidecars["blk.0.ffn_down"]
    w = tiny_weights["blk.0.ffn_down.weight"] + sc.dense_correction(0.0)
    # up to the float16 rounding of the stored residual and true value (|6.0| -> 2^-9)
    assert abs(w[5, 17]) < 4e-3 and abs(w[9, 250]) < 4e-3
    assert abs(tiny_weights["blk.0.ffn_down.weight"][9, 250] + sc.dense_correction()[9, 250] - 6.0) < 4e-3


def test_bad_environment_is_refused(f32_case):
    path, _ = f32_case
    with pytest.raises(Exception, match="SWGGUF_SW_SCALE"):
        _logits(path, SWGGUF_SW_SCALE="abc")


def test_sw_scale_that_overflows_is_refused(f32_case):
    """3.4e38 parses, but (alpha - 1) * w_true is not finite: refused when the context is made."""
    path, _ = f32_case
    with pytest.raises(Exception, match="SWGGUF_SW_SCALE"):
        _logits(path, SWGGUF_SW_SCALE="3.4e38")


def test_sw_scale_that_underflows_is_zero(f32_case, tiny_cfg, tiny_weights):
    """1e-50 underflows to 0 in float32 (strtof reports ERANGE): it means alpha = 0, not an error."""
    path, sidecars = f32_case
    got = _logits(path, SWGGUF_SW_SCALE="1e-50")
    want = synthetic.llama_forward(tiny_cfg, _apply(tiny_weights, sidecars, 0.0), TOKENS)
    assert np.abs(got - want).max() < F32_TOL["cpu"]


@pytest.fixture(scope="module")
def q4k_case(tmp_path_factory, tiny_f32, tiny_cfg):
    """A real Q4_K file from llama.cpp's quantizer (its weights live in the CPU
    repack buffer) with large residuals on a few columns: the runtime's
    correction must show up on top of the quantized matmul."""
    d = tmp_path_factory.mktemp("q4k")
    plain = quantize(tiny_f32, d / "q4k.gguf", "Q4_K_M", pure=True)
    deq = synthetic.read_weights(plain)
    rng = np.random.default_rng(2)
    sidecars = {}
    for base, cols in {"blk.0.ffn_down": [17, 200, 400], "blk.1.ffn_up": [7, 8], "output": [100]}.items():
        true = deq[base + ".weight"].copy()
        true[:, cols] += 0.5 * rng.standard_normal((true.shape[0], len(cols))).astype(np.float32)
        sidecars[base] = sidecar.build_sidecar(base, true, deq[base + ".weight"], cols)
    protected = sidecar.write_with_sidecars(plain, d / "q4k-sw.gguf", sidecars)
    return plain, protected, deq, sidecars


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_q4k_sidecar_matches_corrected_reference(q4k_case, tiny_cfg, device):
    plain, protected, deq, sidecars = q4k_case
    want = synthetic.llama_forward(tiny_cfg, _apply(deq, sidecars), TOKENS)
    want_plain = synthetic.llama_forward(tiny_cfg, deq, TOKENS)
    # the runtime's own error at Q4_K (activations quantized to 8 bits), measured on the plain file
    noise = _rms(_logits(plain, device) - want_plain)
    err = _rms(_logits(protected, device) - want)
    effect = _rms(want - want_plain)
    assert effect > 5 * noise, (effect, noise)  # the test can tell a correction from noise
    assert err < 2 * noise, (err, noise)


def test_q4k_sidecar_off_is_the_plain_file(q4k_case, device):
    plain, protected, _, _ = q4k_case
    np.testing.assert_array_equal(_logits(protected, device, SWGGUF_SIDECAR="0"), _logits(plain, device))
