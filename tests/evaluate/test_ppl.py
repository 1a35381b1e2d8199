"""`swgguf ppl`: statistics, windowing, the real llama.cpp on SmolLM2-135M, and
agreement with llama-perplexity."""

from __future__ import annotations

import json
import math
import re
import subprocess

import numpy as np
import pytest

from swgguf import cli
from swgguf.default_model import default_model_path
from swgguf.errors import SwggufError
from swgguf.evaluate import PplAccumulator, evaluate, kld_stats
from swgguf.evaluate.text import Window, compat_windows, embedded_corpus, load_text, windows
from swgguf.runtime.build import tools_dir

# --- pure statistics and windows (no model) --------------------------------------------


def test_kld_stats_matches_closed_form_and_streams():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 7)).astype(np.float32)
    cur = (ref + 0.3 * rng.standard_normal((50, 7))).astype(np.float32)
    targets = rng.integers(0, 7, 50)
    p = np.exp(ref.astype(np.float64)) / np.exp(ref.astype(np.float64)).sum(-1, keepdims=True)
    q = np.exp(cur.astype(np.float64)) / np.exp(cur.astype(np.float64)).sum(-1, keepdims=True)
    expected = (p * np.log(p / q)).sum(-1)
    # fed in uneven chunks: the statistics must not depend on the chunking
    cuts = [0, 3, 20, 50]
    chunks = lambda a: (a[i:j] for i, j in zip(cuts, cuts[1:]))  # noqa: E731
    s = kld_stats(chunks(ref), chunks(cur), chunks(targets))
    assert s.n_tokens == 50
    assert s.mean == pytest.approx(expected.mean(), rel=1e-9)
    assert s.stderr == pytest.approx(expected.std(ddof=1) / math.sqrt(50), rel=1e-9)
    assert s.median == pytest.approx(np.median(expected), rel=1e-9)
    assert s.max == pytest.approx(expected.max(), rel=1e-9)
    assert s.top1 == pytest.approx((p.argmax(-1) == q.argmax(-1)).mean())
    dp = q[np.arange(50), targets] - p[np.arange(50), targets]
    assert s.dp_rms == pytest.approx(np.sqrt((dp ** 2).mean()), rel=1e-9)
    same = kld_stats([ref], [ref.copy()])
    assert same.mean == 0.0 and same.max == 0.0 and same.top1 == 1.0 and same.dp_rms is None


def test_kld_stats_refuses_mismatched_shapes():
    with pytest.raises(SwggufError, match="shape"):
        kld_stats([np.zeros((4, 5), np.float32)], [np.zeros((4, 6), np.float32)])


def test_ppl_accumulator_is_exp_mean_nll():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], np.float32))
    acc = PplAccumulator()
    acc.add(logits, Window([0, 1, 2, 0]))  # predicts 1, 2, 0
    s = acc.stats()
    nll = -np.log([0.25, 0.1, 0.2])
    assert s.n_tokens == 3
    assert s.ppl == pytest.approx(math.exp(nll.mean()), rel=1e-6)
    assert s.stderr == pytest.approx(s.ppl * math.sqrt(((nll ** 2).mean() - nll.mean() ** 2) / 2), rel=1e-5)


def test_windows_conventions():
    toks = list(range(100, 120))  # 20 text tokens
    w = windows(toks, ctx=5, bos=1)
    assert [x.tokens for x in w] == [[1, 100, 101, 102, 103], [1, 104, 105, 106, 107], [1, 108, 109, 110, 111],
                                     [1, 112, 113, 114, 115], [1, 116, 117, 118, 119]]
    assert w[0].targets == [100, 101, 102, 103]  # every text token scored once
    w = windows(toks, ctx=5, bos=None, chunks=2)
    assert [x.tokens for x in w] == [toks[:5], toks[5:10]] and w[1].targets == toks[6:10]
    c = compat_windows([1] + toks, ctx=8, bos=1)  # llama-perplexity: 21 // 8 = 2 chunks
    assert len(c) == 2 and c[1].tokens[0] == 1 and c[1].tokens[1:] == toks[8:15]
    assert c[0].score_from == 4 and c[0].n_scored == 3 and c[0].targets == toks[4:7]
    with pytest.raises(SwggufError, match="shorter than one window"):
        windows(toks, ctx=64, bos=None)
    with pytest.raises(SwggufError, match="at least 16"):
        compat_windows([1] + toks[:10], ctx=8, bos=1)


def test_embedded_corpus_has_no_header_and_is_english():
    text = embedded_corpus()
    assert not text.content.startswith("#")
    assert text.content.startswith("ALICE'S ADVENTURES IN WONDERLAND")
    assert 100_000 < len(text.content) < 160_000
    assert text.content.count(" the ") > 1000


# --- SmolLM2-135M through the patched llama.cpp -------------------------------------------

CTX = 128


@pytest.fixture(scope="module")
def model():
    return default_model_path()


@pytest.mark.slow
def test_kld_of_a_file_against_itself_is_zero(model):
    ref, res = evaluate([model], ref=model, ctx=CTX, chunks=2)
    assert ref.is_ref and not res.is_ref
    assert res.ppl.n_tokens == ref.ppl.n_tokens == 2 * (CTX - 1)
    assert 5 < res.ppl.ppl < 100  # SmolLM2-135M on English prose
    assert res.ppl.ppl == ref.ppl.ppl and res.delta_ppl == 0.0
    k = res.kld
    assert (k.mean, k.max, k.p99, k.top1, k.dp_rms) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert res.info.type == "Q4_1" and res.info.sidecar_bytes == 0
    assert 4.5 < res.info.bpw < 6.5 and res.tokens_per_s > 0


def _llama_perplexity(model, text_file, ctx, chunks) -> tuple[float, float]:
    exe = tools_dir() / "llama-perplexity"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run `swgguf runtime build --tools` (make test does)")
    proc = subprocess.run([str(exe), "-m", str(model), "-f", str(text_file), "-c", str(ctx),
                           "--chunks", str(chunks), "-t", "2"], capture_output=True, text=True, timeout=600)
    m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", proc.stdout + proc.stderr)
    assert m, (proc.stdout + proc.stderr)[-2000:]
    return float(m.group(1)), float(m.group(2))


@pytest.mark.slow
def test_llama_compat_agrees_with_llama_perplexity(model, tmp_path):
    ctx, chunks = 256, 3
    text_file = tmp_path / "corpus.txt"
    text_file.write_text(embedded_corpus().content, encoding="utf-8")
    theirs, theirs_err = _llama_perplexity(model, text_file, ctx, chunks)
    (ours,) = evaluate([model], text=load_text(text_file), ctx=ctx, chunks=chunks, llama_compat=True)
    assert ours.ppl.n_tokens == chunks * (ctx - 1 - ctx // 2)
    assert abs(ours.ppl.ppl / theirs - 1) < 0.005, (ours.ppl.ppl, theirs)
    assert abs(ours.ppl.stderr / theirs_err - 1) < 0.05
    # and the convention matters: the default scoring sees the whole window
    (native,) = evaluate([model], text=load_text(text_file), ctx=ctx, chunks=chunks)
    assert native.ppl.n_tokens == chunks * (ctx - 1) and native.ppl.ppl != ours.ppl.ppl


@pytest.mark.slow
def test_cli_table_and_json(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the table to the terminal's width
    out = tmp_path / "ppl.json"
    assert cli.main(["ppl", str(model), "--ref", str(model), "--ctx", "64", "--chunks", "1",
                     "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (ref)" in shown and "Q4_1" in shown and "100.00%" in shown
    assert "KL(ref || file)" in shown and "Δp RMS" in shown
    doc = json.loads(out.read_text())
    assert doc["ctx"] == 64 and doc["reference"] == str(model) and len(doc["results"]) == 2
    row = doc["results"][1]
    for key in ("file", "size_bytes", "bpw", "ppl", "ppl_stderr", "kld_mean", "kld_p99", "top1", "tokens_per_s"):
        assert row[key] is not None, key
    assert row["kld_mean"] == 0.0 and row["top1"] == 1.0 and row["size_bytes"] == model.stat().st_size
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


# --- bad inputs: one line, exit 1 ---------------------------------------------------------


def _error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("swgguf: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_file(capsys, tmp_path):
    assert "no such file" in _error(capsys, ["ppl", str(tmp_path / "nope.gguf")])


def test_missing_text_file(capsys, tmp_path):
    err = _error(capsys, ["ppl", str(default_model_path()), "--text", str(tmp_path / "nope.txt")])
    assert "no such text file" in err


@pytest.mark.slow
def test_text_shorter_than_one_window(capsys, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Alice was beginning to get very tired of sitting by her sister on the bank.\n")
    err = _error(capsys, ["ppl", str(default_model_path()), "--text", str(short), "--ctx", "512"])
    assert "shorter than one window of 512" in err
    err = _error(capsys, ["ppl", str(default_model_path()), "--text", str(short), "--ctx", "16", "--llama-compat"])
    assert "needs at least 32" in err


@pytest.mark.slow
def test_reference_with_another_vocabulary(capsys, tiny_f32):
    err = _error(capsys, ["ppl", str(default_model_path()), "--ref", str(tiny_f32), "--ctx", "64"])
    assert "49152 tokens" in err and "512" in err and "same vocabulary" in err
