"""`swgguf convert` on SmolLM2-135M (the shipped Q4_1 dequantized to F16 is the reference).

* The F16 reference is exactly gguf-py's dequantization, rounded to F16.
* Unprotected: byte-identical to `llama-quantize`.
* `swgguf convert REF --q4_k --protect-sw -o out.gguf` (the CLI, defaults only) works,
  finds the published super weights, and the patched runtime's logits match a
  float64 NumPy model of dequant(quantized bytes) + the restored outliers.
* Protected Q4_K_M (built-in calibration text) and Q3_K_M (imatrix from the first 2%
  of WikiText-2, used by quantizer and salience alike) have lower mean KLD vs F16 than
  the plain files, on WikiText-2 windows from its second half (disjoint from the
  calibration part).
"""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from swgguf import conversion as cv
from swgguf import synthetic
from swgguf.conversion import make_f16_reference
from swgguf.default_model import default_model_path
from swgguf.evaluate import evaluate
from swgguf.evaluate.text import calibration_slice, text_from
from swgguf.formats import sidecar
from swgguf.protect import provenance as prov
from swgguf.runtime import vocab
from swgguf.runtime.build import tools_dir

pytestmark = pytest.mark.slow

SMOL = synthetic.LlamaConfig(n_vocab=49152, n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536,
                             n_ctx=8192, rope_base=100000.0, rms_eps=1e-5)
PROMPT = ("The lighthouse keeper wrote in his journal every night: the wind, the sea, and the ships "
          "that passed on their way north.")
N_WINDOWS, N_CTX = 8, 256


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smollm2")


@pytest.fixture(scope="module")
def ref(work) -> Path:
    return make_f16_reference(default_model_path(), work / "ref-f16.gguf")


def test_reference_is_the_exact_dequantization(ref):
    src = {t.name: t for t in gguf.GGUFReader(str(default_model_path())).tensors}
    out = {t.name: t for t in gguf.GGUFReader(str(ref)).tensors}
    assert src.keys() == out.keys()
    for name in ("token_embd.weight", "blk.11.ffn_down.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight"):
        want = synthetic.dequantize_tensor(src[name])
        if src[name].tensor_type != gguf.GGMLQuantizationType.F32:
            want = want.astype(np.float16)
        np.testing.assert_array_equal(np.asarray(out[name].data).reshape(want.shape), want)
    assert float(synthetic.dequantize_tensor(out["blk.11.ffn_down.weight"])[507, 1229]) == 5.875


def test_plain_is_byte_identical_to_llama_quantize(ref, work):
    ours = cv.convert(ref, work / "ours-q4km.gguf", cv.ConvertOptions.from_flags(ftype="Q4_K_M")).output
    theirs = work / "theirs-q4km.gguf"
    proc = subprocess.run([str(tools_dir() / "llama-quantize"), str(ref), str(theirs), "Q4_K_M"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert filecmp.cmp(ours, theirs, shallow=False)


@pytest.fixture(scope="module")
def protected_q4(ref, work) -> Path:
    """The documented command, run as a user would (defaults only)."""
    out = work / "out.gguf"
    swgguf = Path(sys.executable).parent / "swgguf"
    proc = subprocess.run([str(swgguf), "convert", str(ref), "--q4_k", "--protect-sw", "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sidecar:" in proc.stderr and "bits per weight" in proc.stderr
    return out


def test_auto_detection_finds_the_published_super_weights(protected_q4):
    scalars = gguf.GGUFReader(str(protected_q4)).get_field(prov.KEY_SCALARS).contents()
    assert "blk.2.ffn_down[507,90]" in scalars and "blk.11.ffn_down[507,1229]" in scalars
    sidecars = sidecar.read_sidecars(protected_q4)
    assert 1229 in sidecars["blk.11.ffn_down"].cols  # the super activation's column is among the most salient
    # the default budget: as many bytes as 2 columns in every tensor, spent by salience
    policy = gguf.GGUFReader(str(protected_q4)).get_field(prov.KEY_POLICY).contents()
    assert policy == f"budget:{cv.DEFAULT_BUDGET}" == "budget:2cols"
    n_out = {"attn_q": 576, "attn_k": 192, "attn_v": 192, "attn_output": 576, "ffn_gate": 1536, "ffn_up": 1536,
             "ffn_down": 576}
    two_cols = 2 * sum(SMOL.n_layer * (n * 2 + 4) for n in n_out.values())  # 2 columns in each of the 210
    used = sum(sc.resid.nbytes + sc.cols.nbytes for sc in sidecars.values())
    assert 0.95 * two_cols < used <= two_cols + len(scalars) * (576 * 2 + 4)
    assert len({sc.n_cols for sc in sidecars.values()}) > 2  # spent unevenly, where salience is


def test_protected_logits_match_the_restored_reference(protected_q4, work, ref):
    """Tolerance: the runtime quantizes the activations of quantized matmuls to 8 bits,
    so the plain file is off its own float64 reference by a noise floor (computed here);
    the protected file must stay within 1.25 x that floor of dequant + restored outliers,
    and be far from dequant alone."""
    from test_convert_tiny import runtime_and_references

    tokens = vocab.tokenize(ref, PROMPT)

    def run(path):
        return runtime_and_references(path, SMOL, tokens, n_ctx=64, tied=True)

    plain = cv.convert(ref, work / "plain-q4km.gguf", cv.ConvertOptions.from_flags(ftype="Q4_K_M")).output
    p_got, p_want, _ = run(plain)
    got, want, unrestored = run(protected_q4)
    floor = np.abs(p_got - p_want).mean()
    assert np.abs(got - want).mean() < 1.25 * floor, (np.abs(got - want).mean(), floor)
    # measured (mean |d logit|, logits of magnitude ~10): 0.235 from the restored reference,
    # 0.61 from dequant alone
    assert np.abs(got - unrestored).mean() > 2 * np.abs(got - want).mean()


def test_protected_files_have_lower_kld(ref, work, protected_q4, wikitext):
    text = text_from(wikitext, 0.5, N_CTX * N_WINDOWS * 8)  # ~4 characters per token, with margin
    calib = calibration_slice(wikitext, work / "calib.txt", 0.0, 0.02)  # disjoint from the windows (>= 50%)
    q3 = {name: cv.convert(ref, work / f"q3km-{name}.gguf",
                           cv.ConvertOptions.from_flags(ftype="Q3_K_M", calib=calib, calib_chunks=4, protect_sw=name == "prot"))
          for name in ("plain", "prot")}
    assert gguf.GGUFReader(str(q3["prot"].output)).get_field(prov.KEY_IMATRIX_QUANT).contents() is True
    plain_q4 = work / "plain-q4km.gguf"
    if not plain_q4.exists():
        cv.convert(ref, plain_q4, cv.ConvertOptions.from_flags(ftype="Q4_K_M"))
    models = [plain_q4, protected_q4, q3["plain"].output, q3["prot"].output]
    results = evaluate(models, ref=ref, text=text, ctx=N_CTX, chunks=N_WINDOWS)
    assert results[0].is_ref and all(r.kld.n_tokens == N_WINDOWS * (N_CTX - 1) for r in results[1:])
    r = [x.kld for x in results[1:]]
    for plain, prot in ((r[0], r[1]), (r[2], r[3])):
        # measured: -38% (Q4_K_M) and -40% (Q3_K_M) on these windows
        assert prot.mean < 0.8 * plain.mean, (plain, prot)
        assert plain.mean - prot.mean > 3 * (plain.stderr ** 2 + prot.stderr ** 2) ** 0.5
    # and the sidecar costs well under 1% of the file
    for path in (protected_q4, q3["prot"].output):
        assert sum(s.nbytes for s in sidecar.read_sidecars(path).values()) < 0.01 * path.stat().st_size
