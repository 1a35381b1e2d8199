"""`swgguf convert` on the tiny synthetic llama model (conftest: width 256, a
planted super weight at blk.0.ffn_down[5, 17] whose input channel spikes).

* Without --protect-sw the file is byte for byte what the real `llama-quantize`
  binary writes from the same input and options (imatrix, overrides included).
* With --protect-sw the residuals restore the true weights at the chosen
  columns to float16 precision, and the patched runtime's logits match the
  float64 NumPy model built from dequant(quantized bytes) + the restored
  outliers (llm.c style: reference -> native path within a stated tolerance).
"""

from __future__ import annotations

import filecmp
import struct
import subprocess

import gguf
import numpy as np
import pytest

from swgguf import conversion as cv
from swgguf import synthetic
from swgguf.cli import main as cli_main
from swgguf.errors import SwggufError
from swgguf.formats import gguf_io, manifest, sidecar
from swgguf.formats.files import sha256_file
from swgguf.formats.imatrix import load_imatrix, save_imatrix
from swgguf.protect import provenance as prov
from swgguf.protect.salience import allocate_budget
from swgguf.runtime import llm
from swgguf.runtime.build import tools_dir

TOKENS = list(range(3, 67))
CALIB_SEQS = [list(np.random.default_rng(s).integers(0, 512, 64)) for s in range(4)]
# max |logit difference| between the runtime and the NumPy model of the same weights
# for a file with quantized matmuls: the CPU backend quantizes the activations of a
# k-quant matmul to 8 bits (observed ~0.02 on logits of scale ~3)
QUANT_TOL = 0.1


# --- fixtures: an importance matrix recorded from the NumPy forward -----------------


class _Recorded(np.ndarray):
    """A weight that records the mean square of each input channel it multiplies."""

    stats: dict[str, list] = {}

    def __array_finalize__(self, obj) -> None:
        self.wname = getattr(obj, "wname", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [np.asarray(x) for x in inputs]
        if ufunc is np.matmul and isinstance(inputs[1], _Recorded) and inputs[1].wname:
            x = args[0].reshape(-1, args[0].shape[-1])
            entry = _Recorded.stats.setdefault(inputs[1].wname, [0.0, 0])
            entry[0] = entry[0] + (x.astype(np.float64) ** 2).sum(axis=0)
            entry[1] += x.shape[0]
        return getattr(ufunc, method)(*args, **kwargs)


def record_imatrix(cfg, weights, path):
    """llama-imatrix's statistics (sum of x², token count per weight) for the NumPy model."""
    _Recorded.stats = {}
    w = {}
    for name, a in weights.items():
        if a.ndim == 2 and name != "token_embd.weight":
            r = a.view(_Recorded)
            r.wname = name
            w[name] = r
        else:
            w[name] = a
    for seq in CALIB_SEQS:
        synthetic.llama_forward(cfg, w, seq)
    sums = {n: s for n, (s, _) in _Recorded.stats.items()}
    counts = {n: np.array([c]) for n, (_, c) in _Recorded.stats.items()}
    return save_imatrix(path, sums, counts, ["synthetic"], len(CALIB_SEQS), 64), sums, counts


@pytest.fixture(scope="module")
def tiny_imatrix(tmp_path_factory, tiny_cfg, tiny_weights):
    path, _, _ = record_imatrix(tiny_cfg, tiny_weights, tmp_path_factory.mktemp("im") / "imatrix.gguf")
    return path


@pytest.fixture(scope="module")
def tiny_dat(tmp_path_factory, tiny_cfg, tiny_weights):
    """The same statistics in llama.cpp's legacy .dat format (values = mean x² x ncall)."""
    _, sums, counts = record_imatrix(tiny_cfg, tiny_weights, tmp_path_factory.mktemp("dat") / "unused.gguf")
    path = tmp_path_factory.mktemp("dat") / "imatrix.dat"
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(sums)))
        for name in sorted(sums):
            b = name.encode()
            ncall = 3
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, sums[name].size))
            f.write((sums[name] / counts[name][0] * ncall).astype("<f4").tobytes())
        f.write(struct.pack("<i", 4) + struct.pack("<i", 9) + b"synthetic")
    return path


def _llama_quantize(src, dst, ftype, *flags):
    tool = tools_dir() / "llama-quantize"
    proc = subprocess.run([str(tool), *flags, str(src), str(dst), ftype], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dst


# --- byte identity with llama-quantize ------------------------------------------------

IDENTITY_CASES = {
    "Q4_K_M": ("Q4_K_M", {}, []),
    "Q2_K": ("Q2_K", {}, []),
    "Q3_K_S pure": ("Q3_K_S", {"pure": True}, ["--pure"]),
    "Q8_0": ("Q8_0", {}, []),
    "Q4_K_M imatrix": ("Q4_K_M", {"imatrix": "gguf"}, ["--imatrix", "gguf"]),
    "Q3_K_M imatrix.dat + overrides": (
        "Q3_K_M",
        {"imatrix": "dat", "tensor_types": [("attn_v", "q8_0"), ("ffn_down", "q6_k")], "output_tensor_type": "q4_k"},
        ["--imatrix", "dat", "--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn_down=q6_k",
         "--output-tensor-type", "q4_k"]),
}


@pytest.mark.parametrize("case", list(IDENTITY_CASES))
def test_plain_is_byte_identical_to_llama_quantize(tmp_path, tiny_f32, tiny_imatrix, tiny_dat, case):
    ftype, kwargs, flags = IDENTITY_CASES[case]
    files = {"gguf": tiny_imatrix, "dat": tiny_dat}
    kwargs = {k: (files[v] if k == "imatrix" else v) for k, v in kwargs.items()}
    flags = [str(files[f]) if f in files else f for f in flags]
    ours = cv.convert(tiny_f32, tmp_path / "ours.gguf", cv.ConvertOptions.from_flags(ftype=ftype, **kwargs)).output
    theirs = _llama_quantize(tiny_f32, tmp_path / "theirs.gguf", ftype, *flags)
    assert filecmp.cmp(ours, theirs, shallow=False)
    # and the options did something: the override and the imatrix change the bytes
    if kwargs:
        plain = _llama_quantize(tiny_f32, tmp_path / "plain.gguf", ftype)
        assert not filecmp.cmp(ours, plain, shallow=False)


def test_imatrix_formats_agree(tiny_imatrix, tiny_dat):
    a, b = load_imatrix(tiny_imatrix), load_imatrix(tiny_dat)
    assert sorted(a.values) == sorted(b.values) and "output.weight" in a.values
    for name in a.values:
        np.testing.assert_allclose(a.values[name], b.values[name], rtol=1e-6)
    # the planted super activation dominates the ffn_down input
    v = a.values["blk.0.ffn_down.weight"]
    assert int(np.argmax(v)) == 17 and v[17] > 100 * np.median(v)


# --- the protected file ---------------------------------------------------------------


def write_manifest(path, model, weights=((0, 5, 17, 4.0),)):
    """A `swgguf detect` manifest naming the planted super weight."""
    info = manifest.ModelInfo(path=str(model), format="gguf", architecture="llama", sha256=sha256_file(model),
                              n_layers=2)
    sws = [manifest.SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
           for l, r, c, v in weights]
    m = manifest.Manifest(model=info, detection=manifest.DetectionInfo(prompt="", threshold=1.0,
                                                                      threshold_rule="planted"),
                          super_weights=sws)
    return manifest.save_manifest(m, path)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory, tiny_f32):
    return write_manifest(tmp_path_factory.mktemp("manifest") / "m.json", tiny_f32)


@pytest.fixture(scope="module")
def protected(tmp_path_factory, tiny_f32, tiny_imatrix, tiny_manifest):
    d = tmp_path_factory.mktemp("protected")
    opts = cv.ConvertOptions.from_flags(ftype="Q3_K_M", protect_sw=True, protect_cols=4, salience_imatrix=tiny_imatrix,
                             manifest=tiny_manifest)
    report = cv.convert(tiny_f32, d / "protected.gguf", opts)
    plain = cv.convert(tiny_f32, d / "plain.gguf", cv.ConvertOptions.from_flags(ftype="Q3_K_M")).output
    return report, plain


def test_protected_tensor_data_is_the_plain_quantization(protected):
    """The sidecar is added next to the quantized tensors, which stay llama-quantize's bytes."""
    report, plain = protected
    ours = {t.name: t for t in gguf.GGUFReader(str(report.output)).tensors}
    for t in gguf.GGUFReader(str(plain)).tensors:
        assert ours[t.name].tensor_type == t.tensor_type
        assert np.array_equal(np.asarray(ours[t.name].data), np.asarray(t.data)), t.name


def test_residuals_restore_the_true_columns(protected, tiny_weights):
    report, _ = protected
    sidecars = sidecar.read_sidecars(report.output)
    deq = synthetic.read_weights(report.output)
    # every quantized 2-D weight but token_embd has a sidecar
    assert len(sidecars) == 2 * 7 + 1 and "output" in sidecars and "token_embd" not in sidecars
    for base, sc in sidecars.items():
        true = tiny_weights[base + ".weight"]
        restored = deq[base + ".weight"] + sc.dense_correction()
        err_before = np.abs(deq[base + ".weight"][:, sc.cols] - true[:, sc.cols]).max()
        err_after = np.abs(restored[:, sc.cols] - true[:, sc.cols]).max()
        # float16 residual: at most half an ulp of |R| <= a quantization step
        assert err_after <= err_before * 2**-10 + 1e-7, base
    sw = sidecars["blk.0.ffn_down"]
    assert 17 in sw.cols and sw.sw_pos.tolist() == [[5, 17]] and float(sw.sw_val[0]) == 4.0
    assert report.scalars == [("blk.0.ffn_down", 5, 17)] and report.scalar_source == "manifest:m.json"


def runtime_and_references(path, cfg, tokens=TOKENS, n_ctx=128, tied=False):
    """The runtime's logits of ``path``, and the NumPy model's from dequant(weights) +
    the sidecars' corrections and from dequant(weights) alone (``tied``: output =
    token_embd, as in SmolLM2). Also used by test_convert_smollm2."""
    model = llm.load(path, llm.LoadOptions(n_ctx=n_ctx, n_batch=n_ctx, kv_f32=True))
    got = llm.logits(model, tokens)
    deq = synthetic.read_weights(path)
    restored = dict(deq)
    for base, sc in sidecar.read_sidecars(path).items():
        restored[base + ".weight"] = deq[base + ".weight"] + sc.dense_correction()
    if tied:
        for d in (deq, restored):
            d["output.weight"] = d["token_embd.weight"]
    return got, synthetic.llama_forward(cfg, restored, tokens), synthetic.llama_forward(cfg, deq, tokens)


def test_protected_logits_match_the_restored_reference(protected, tiny_cfg):
    """Tolerance: the CPU backend quantizes the activations of every quantized matmul to
    8 bits, so even the plain file is off its own float64 reference by |d| mean 0.020,
    max 0.16 (logits of mean magnitude 0.8). The protected file must stay within
    that noise of *its* reference (dequant + restored outliers): observed 0.021 / 0.20."""
    report, plain = protected
    got, want, unrestored = runtime_and_references(report.output, tiny_cfg)
    p_got, p_want, _ = runtime_and_references(plain, tiny_cfg)
    floor = np.abs(p_got - p_want).mean()
    assert np.abs(got - want).mean() < 1.25 * floor and np.abs(got - want).max() < 0.3
    # the sidecar moved the model by far more than the noise, towards its reference
    assert np.abs(got - unrestored).mean() > 2 * np.abs(got - want).mean()


def test_provenance_is_recorded(protected, tiny_imatrix, tiny_manifest):
    report, _ = protected
    reader = gguf.GGUFReader(str(report.output))
    get = lambda key: reader.get_field(key).contents()  # noqa: E731
    assert get(sidecar.KEY_SWGGUF_VERSION) == __import__("swgguf").__version__
    assert get(sidecar.KEY_VERSION) == sidecar.SIDECAR_VERSION
    assert get(prov.KEY_POLICY) == "top_k(4)" and get(prov.KEY_FTYPE) == "Q3_K_M"
    assert get(prov.KEY_COLS_PER_TENSOR) == [sc.n_cols for sc in sidecar.read_sidecars(report.output).values()]
    assert get(prov.KEY_CALIB_SHA) == sha256_file(tiny_imatrix)
    assert get(prov.KEY_MANIFEST_SHA) == sha256_file(tiny_manifest)
    assert get(prov.KEY_SCALARS) == ["blk.0.ffn_down[5,17]"]
    assert get(prov.KEY_IMATRIX_QUANT) is False


def test_scalars_only(tmp_path, tiny_f32, tiny_imatrix, tiny_manifest):
    opts = cv.ConvertOptions.from_flags(ftype="Q4_K_M", protect_sw=True, protect_cols=0, salience_imatrix=tiny_imatrix,
                             manifest=tiny_manifest)
    report = cv.convert(tiny_f32, tmp_path / "sw.gguf", opts)
    sidecars = sidecar.read_sidecars(report.output)
    assert list(sidecars) == ["blk.0.ffn_down"]
    sc = sidecars["blk.0.ffn_down"]
    assert sc.cols.tolist() == [17] and np.count_nonzero(sc.resid) <= 1


def test_budget_caps_the_sidecar(tmp_path, tiny_f32, tiny_imatrix):
    opts = cv.ConvertOptions.from_flags(ftype="Q2_K", protect_sw=True, sidecar_budget="8K", salience_imatrix=tiny_imatrix)
    report = cv.convert(tiny_f32, tmp_path / "b.gguf", opts)
    sidecars = sidecar.read_sidecars(report.output)
    cols_bytes = sum(sc.resid.nbytes + sc.cols.nbytes for sc in sidecars.values())
    assert 4 * 1024 < cols_bytes <= 8 * 1024 + 600  # + the scalar's own column, outside the budget
    assert len({sc.n_cols for sc in sidecars.values()}) > 1  # spread by salience, not uniformly


def test_budget_allocation_is_greedy_by_salience_per_byte():
    scores = {"a": np.array([9.0, 1.0, 0.0, 0.0]), "b": np.array([4.0, 3.0, 2.5, 0.5]),
              "c": np.array([0.2, 0.1, 0.0, 0.0])}
    n_out = {"a": 10, "b": 10, "c": 10}  # one column costs 10 * 2 + 4 bytes everywhere
    got = allocate_budget(scores, n_out, 4 * 24)
    assert {n: c.tolist() for n, c in got.items()} == {"a": [0], "b": [0, 1, 2]}
    # at most one tensor: the one whose columns carried the most salience gets the whole budget
    capped = allocate_budget(scores, n_out, 4 * 24, max_tensors=1)
    assert {n: c.tolist() for n, c in capped.items()} == {"b": [0, 1, 2, 3]}
    assert allocate_budget(scores, n_out, 4 * 24, max_per_tensor=1, max_tensors=2).keys() == {"a", "b"}


def test_max_tensors_bounds_the_protected_tensors(tmp_path, tiny_f32, tiny_imatrix, tiny_manifest):
    opts = cv.ConvertOptions.from_flags(ftype="Q2_K", protect_sw=True, sidecar_budget="2cols", max_tensors=2,
                             salience_imatrix=tiny_imatrix, manifest=tiny_manifest)
    sidecars = sidecar.read_sidecars(cv.convert(tiny_f32, tmp_path / "m.gguf", opts).output)
    with_cols = [b for b, sc in sidecars.items() if sc.n_cols > sc.n_scalars]
    assert 1 <= len(with_cols) <= 2
    # the planted super weight's tensor keeps its scalar whatever the cap
    assert "blk.0.ffn_down" in sidecars


def test_clip_quantizes_the_block_median_and_restores_the_super_weight(tmp_path, tiny_f32, tiny_imatrix,
                                                                       tiny_weights, tiny_manifest):
    opts = cv.ConvertOptions.from_flags(ftype="Q4_K_M", protect_sw=True, protect_cols=0, clip=True,
                             salience_imatrix=tiny_imatrix, manifest=tiny_manifest)
    report = cv.convert(tiny_f32, tmp_path / "clip.gguf", opts)
    deq = synthetic.read_weights(report.output)["blk.0.ffn_down.weight"]
    sc = sidecar.read_sidecars(report.output)["blk.0.ffn_down"]
    assert abs(deq[5, 17]) < 1.0  # quantized from the block median, not from 4.0
    assert abs(deq[5, 17] + sc.dense_correction()[5, 17] - 4.0) < 4e-3
    plain = synthetic.read_weights(cv.convert(tiny_f32, tmp_path / "p.gguf", cv.ConvertOptions.from_flags()).output)
    # the outlier's neighbours (its sub-block of 16, the smallest k-quant scale group)
    # are quantized more finely once the outlier no longer sets their scale
    others = [c for c in range(16, 32) if c != 17]
    true_row = tiny_weights["blk.0.ffn_down.weight"][5]
    err_clip = np.abs(deq[5, others] - true_row[others]).mean()
    err_plain = np.abs(plain["blk.0.ffn_down.weight"][5, others] - true_row[others]).mean()
    assert err_clip < 0.5 * err_plain


# --- errors ------------------------------------------------------------------------


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli_main(["convert", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_cli_writes_and_reports(tmp_path, capsys, tiny_f32, tiny_imatrix, tiny_manifest):
    out = tmp_path / "cli.gguf"
    rc, err = _cli(capsys, tiny_f32, "--q4_k", "--protect-sw", "--salience-imatrix", tiny_imatrix,
                   "--manifest", tiny_manifest, "-o", out)
    assert rc == 0, err
    assert "Q4_K" in err and "sidecar:" in err and "bits per weight" in err and "blk.0.ffn_down[5, 17]" in err
    assert sidecar.read_sidecars(out) and out.stat().st_mode & 0o777 != 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cli.gguf"]  # no temporary left behind


ERROR_CASES = {
    "missing input": (["{tmp}/nope.gguf", "-o", "{tmp}/o.gguf"], "no such file"),
    "not a GGUF": (["{txt}", "-o", "{tmp}/o.gguf"], "not a GGUF file"),
    "unknown type": (["{f32}", "--type", "Q4_X", "-o", "{tmp}/o.gguf"], "unknown quantization type 'Q4_X'"),
    "unknown tensor type": (["{f32}", "--tensor-type", "attn_v=q9", "-o", "{tmp}/o.gguf"], "unknown tensor type 'q9'"),
    "missing manifest": (["{f32}", "--protect-sw", "--manifest", "{tmp}/m.json", "-o", "{tmp}/o.gguf"],
                         "no such manifest file"),
    "manifest without protect": (["{f32}", "--manifest", "{txt}", "-o", "{tmp}/o.gguf"], "need --protect-sw"),
    "overwrite input": (["{f32}", "-o", "{f32}"], "output would overwrite the input"),
    "missing output dir": (["{f32}", "-o", "{tmp}/no/such/dir/o.gguf"], "output directory does not exist"),
    "bad budget": (["{f32}", "--protect-sw", "--sidecar-budget", "lots", "-o", "{tmp}/o.gguf"],
                   "sidecar budget 'lots'"),
    "quantized input": (["{q}", "-o", "{tmp}/o.gguf"], "pass --allow-requantize"),
    "zero tensors": (["{f32}", "--protect-sw", "--max-tensors", "0", "-o", "{tmp}/o.gguf"],
                     "--max-tensors must be at least 1, got 0"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_cli_errors_are_one_line(tmp_path, capsys, tiny_f32, case):
    txt = tmp_path / "x.txt"
    txt.write_text("hello")
    q = tmp_path / "q.gguf"
    if case == "quantized input":
        cv.convert(tiny_f32, q, cv.ConvertOptions.from_flags(ftype="Q8_0"))
    argv, message = ERROR_CASES[case]
    argv = [a.format(tmp=tmp_path, txt=txt, f32=tiny_f32, q=q) for a in argv]
    before = tiny_f32.stat().st_mtime_ns
    rc, err = _cli(capsys, *argv)
    assert rc == 1 and message in err and "Traceback" not in err, err
    assert err.count("swgguf: error:") == 1
    assert tiny_f32.stat().st_mtime_ns == before
    assert not (tmp_path / "o.gguf").exists()


def test_manifest_for_another_model_is_refused(tmp_path, tiny_f32, tiny_imatrix):
    wrong = write_manifest(tmp_path / "wrong.json", tiny_f32, weights=((0, 5, 17, -3.0),))
    opts = cv.ConvertOptions.from_flags(protect_sw=True, manifest=wrong, salience_imatrix=tiny_imatrix)
    with pytest.raises(SwggufError, match=r"is -3 in the manifest but 4 in this model"):
        cv.convert(tiny_f32, tmp_path / "o.gguf", opts)
    assert not (tmp_path / "o.gguf").exists()


def test_requantize_dequantizes_first(tmp_path, tiny_f32):
    q8 = cv.convert(tiny_f32, tmp_path / "q8.gguf", cv.ConvertOptions.from_flags(ftype="Q8_0")).output
    report = cv.convert(q8, tmp_path / "q4.gguf", cv.ConvertOptions.from_flags(ftype="Q4_K_M", allow_requantize=True))
    assert any("reference is the dequantized model" in w for w in report.warnings)
    assert "Q4_K" in report.tensor_types


@pytest.mark.parametrize("protect_again", [False, True])
def test_convert_drops_the_sidecar_of_its_input(tmp_path, protected, tiny_imatrix, protect_again):
    """A protected file converted again: llama-quantize would copy the old sidecar (made for
    the input's bytes) into the output; convert drops its tensors and swgguf keys first,
    says so in one warning, and the output's sidecar, if any, fits the output's bytes."""
    src = protected[0].output
    opts = cv.ConvertOptions.from_flags(ftype="Q4_K_M", allow_requantize=True, protect_sw=protect_again,
                                        salience_imatrix=tiny_imatrix if protect_again else None)
    report = cv.convert(src, tmp_path / "again.gguf", opts)
    dropped = [w for w in report.warnings if "carries a swgguf sidecar" in w]
    assert len(dropped) == 1 and "\n" not in dropped[0]
    reader = gguf_io.open_gguf(report.output)
    keys = {k for k in reader.fields if k.startswith("swgguf.")}
    if protect_again:
        assert sidecar.read_sidecars(report.output)  # hashes checked against the new bytes
        assert keys >= {sidecar.KEY_VERSION, sidecar.KEY_WEIGHT_HASHES}
    else:
        assert not sidecar.sidecar_tensor_names(reader) and not keys


def test_write_failure_is_a_clear_error(tmp_path, tiny_f32):
    """A disk that fills up mid-write (simulated with RLIMIT_FSIZE, so writes fail
    with EFBIG) gives one line, exit 1, and no file left behind."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from swgguf.cli import main\n"
        f"sys.exit(main(['convert', '{tiny_f32}', '--q4_k', '-o', '{tmp_path}/o.gguf']))\n"
    )
    proc = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("swgguf: error:")]
    assert len(lines) == 1 and ("File too large" in lines[0] or "failed" in lines[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_refused_before_writing(tmp_path, tiny_f32):
    """An output directory without room for the result is refused up front."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.decode().strip()})")
    try:
        with pytest.raises(SwggufError, match="not enough free space"):
            cv.convert(tiny_f32, mnt / "o.gguf", cv.ConvertOptions.from_flags())
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
