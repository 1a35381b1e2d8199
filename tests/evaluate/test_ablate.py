"""`swgguf ablate` on SmolLM2-135M through the patched llama.cpp: the paper's
experiments (prune, scale, restore the super activation, stop words)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from swgguf import ablation as ablate
from swgguf import cli, runtime
from swgguf.default_model import default_model_path
from swgguf.evaluate import Evaluator, ModelSpec
from swgguf.evaluate.text import embedded_corpus, load_text, windows
from swgguf.formats.manifest import DetectionInfo, Manifest, ModelInfo, SuperWeight
from swgguf.formats.sidecar import Sidecar, read_sidecars

# SmolLM2-135M's super weights (HF coordinates of model.layers.N.mlp.down_proj)
SUPER_WEIGHTS = [(2, 507, 90, 5.09), (11, 507, 1229, 5.88)]


def smollm2_manifest(path) -> Manifest:
    return Manifest(
        model=ModelInfo(path=str(path), format="gguf", architecture="llama", sha256="0" * 64, n_layers=30),
        detection=DetectionInfo(prompt="test", threshold=1.0, threshold_rule="known"),
        super_weights=[SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
                       for l, r, c, v in SUPER_WEIGHTS])


@pytest.fixture(scope="module")
def model():
    return default_model_path()


@pytest.fixture(scope="module")
def run(model, wikitext):
    """One ablation shared by the tests: 2 windows of 256 WikiText-2 tokens."""
    return ablate.ablate(model, smollm2_manifest(model), text=load_text(wikitext), ctx=256, chunks=2,
                         scales=[1.0], restore_sa=True, stopwords=40)


@pytest.mark.slow
def test_pruning_super_weights_raises_perplexity_4x(run):
    assert [p.scale for p in run.scale] == [0.0, 1.0]  # alpha = 0 is always run
    assert run.driver == "temporary copy"  # the Q4_1 file has no sidecar
    assert [(s.tensor, s.row, s.col) for s in run.sites] == [
        ("blk.2.ffn_down.weight", 507, 90), ("blk.11.ffn_down.weight", 507, 1229)]
    assert run.sites[1].value == pytest.approx(5.88, abs=0.05)
    assert run.leftover < 1e-3  # |w| left after zeroing: the float16 rounding of the stored value
    assert run.prune_ratio >= 4.0, run.prune_ratio
    assert run.point(0.0).kld.mean > 0.5


@pytest.mark.slow
def test_scale_one_reproduces_the_original_exactly(run):
    one = run.point(1.0)
    assert one.ppl.ppl == run.original.ppl
    assert one.kld.max == 0.0 and one.kld.top1 == 1.0


@pytest.mark.slow
def test_restoring_the_super_activation_recovers_most_of_the_loss(run):
    r = run.restore_sa
    assert r is not None and r.positions == 1
    assert run.original.ppl < r.ppl.ppl < run.point(0.0).ppl.ppl
    assert r.recovered > 0.5, r.recovered  # measured 0.95 on these windows


@pytest.mark.slow
def test_stopwords_and_outputs(run, tmp_path):
    assert run.n_prompts == 40 and len(run.stopwords) == ablate.N_STOPWORDS
    for row in run.stopwords:
        assert 0 < row.p_original < 1 and 0 < row.p_pruned < 1 and np.isfinite(row.factor)
    counts = [row.count for row in run.stopwords]
    assert counts == sorted(counts, reverse=True)
    doc = run.as_dict()
    json.dumps(doc, allow_nan=False)
    assert {"scale", "ppl", "ppl_stderr", "kld"} <= set(doc["scale"][0])
    assert doc["restore_sa"]["recovered"] == run.restore_sa.recovered
    assert len(doc["stopwords"]["tokens"]) == ablate.N_STOPWORDS
    png = ablate.plot(run, tmp_path / "ablate.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_kv_transfer_is_exact(model, tmp_path):
    """RestoreSA's mechanism: the first position from one context, the rest in another.
    With the super weights at alpha = 1 in both, the logits must be the original's."""
    sites = ablate.find_super_weights(model, smollm2_manifest(model))
    driver = ablate.write_scalar_copy(model, tmp_path / "driver.gguf", sites)
    options = runtime.LoadOptions(n_ctx=64, n_batch=64)
    tokens = windows(runtime.vocab.tokenize(model, embedded_corpus().content), 64, None, 1)[0].tokens
    original = Evaluator(ModelSpec(model), options)
    restorer = ablate.RestoreSA(ablate.scaled(driver, 1.0, options, len(sites)), Evaluator(ModelSpec(model), options))
    try:
        expected = original.logits(tokens)
        got = restorer.logits(tokens)
    finally:
        original.close()
        restorer.close()
    np.testing.assert_array_equal(got, expected)


def test_scalar_copy_round_trip(model, tmp_path):
    """A copy made for a manifest carries the scalars in its sidecar, so it can be
    ablated without a manifest, and the values are what the file applies."""
    sites = ablate.find_super_weights(model, smollm2_manifest(model))
    copy = ablate.write_scalar_copy(model, tmp_path / "copy.gguf", sites)
    assert not ablate.carries_scalars(model, sites) and ablate.carries_scalars(copy, sites)
    again = ablate.find_super_weights(copy)
    assert {(s.tensor, s.row, s.col) for s in again} == {(s.tensor, s.row, s.col) for s in sites}
    by_pos = {(s.tensor, s.row, s.col): s.value for s in sites}
    for s in again:
        assert s.source == "sidecar"
        assert s.value == by_pos[(s.tensor, s.row, s.col)]  # zero residual: the same weight
    sc = read_sidecars(copy)["blk.11.ffn_down"]
    assert sc.cols.tolist() == [1229] and not np.any(sc.resid)
    assert float(sc.sw_val[0]) == pytest.approx(by_pos[("blk.11.ffn_down.weight", 507, 1229)], abs=2e-3)


def test_file_without_super_weights_asks_for_detect(model, capsys):
    assert cli.main(["ablate", str(model)]) == 1
    err = capsys.readouterr().err
    assert "no super weights known" in err and "swgguf detect" in err and "Traceback" not in err


def test_manifest_of_another_model(model, tmp_path, capsys):
    m = smollm2_manifest(model)
    m.super_weights[0].row = 100_000
    with pytest.raises(Exception, match="outside 'blk.2.ffn_down.weight'"):
        ablate.find_super_weights(model, m)
    m = smollm2_manifest(model)
    m.super_weights[0].tensor = "blk.99.ffn_down.weight"
    with pytest.raises(Exception, match="another model"):
        ablate.find_super_weights(model, m)


def test_bad_scale_argument(model, capsys):
    with pytest.raises(SystemExit):
        cli.main(["ablate", str(model), "--scale", "0,x"])
    assert "expected numbers separated by commas" in capsys.readouterr().err


def test_with_scalars_keeps_an_existing_sidecar():
    """Merging super-weight scalars into a sidecar that already protects columns: the
    residuals are kept where they were, new columns get zero, old scalars elsewhere go."""
    resid = np.array([[0.5, -0.25], [0.125, 1.0], [0.0, 2.0]], np.float16)
    old = Sidecar("blk.0.ffn_down", (3, 8), np.array([2, 6], np.int32), resid,
                  np.array([[0, 2]], np.int32), np.array([1.5], np.float16))
    sites = [ablate.SuperWeightSite("blk.0.ffn_down.weight", 1, 6, 3.0), ablate.SuperWeightSite(
        "blk.0.ffn_down.weight", 2, 4, -2.0)]
    new = ablate.with_scalars(old, (3, 8), sites)
    new.validate()
    assert new.cols.tolist() == [2, 4, 6]
    np.testing.assert_array_equal(new.resid[:, [0, 2]], resid)
    assert not np.any(new.resid[:, 1])
    assert new.sw_pos.tolist() == [[1, 6], [2, 4]] and new.sw_val.tolist() == [3.0, -2.0]


def test_applied_scalar_count_is_what_the_runtime_applies(model, tmp_path):
    """The runtime's own account, per context: the scalar copy's two scalars; none with its
    sidecars switched off; none in a file without sidecars."""
    sites = ablate.find_super_weights(model, smollm2_manifest(model))
    copy = ablate.write_scalar_copy(model, tmp_path / "copy.gguf", sites)
    options = runtime.LoadOptions(n_ctx=32, n_batch=32)
    cases = [(copy, runtime.ContextSettings(), 2), (copy, runtime.ContextSettings(sidecars=False), 0),
             (model, runtime.ContextSettings(), 0), (copy, runtime.ContextSettings(sw_scale=0.0), 2)]
    for path, settings, expected in cases:
        llama = runtime.load(path, options, settings)
        try:
            assert runtime.applied_scalar_count(llama) == expected, (path.name, settings)
        finally:
            llama.close()
