"""The manifest schema: round trip, validation errors that quote the bad value, atomic writes."""

from __future__ import annotations

import json

import pytest

from swgguf.errors import SwggufError
from swgguf.formats.manifest import (SCHEMA, DetectionInfo, Manifest, ModelInfo, SuperActivation, SuperWeight,
                             VerificationInfo, load_manifest, save_manifest)


def sample() -> Manifest:
    return Manifest(
        model=ModelInfo(path="m.gguf", format="gguf", architecture="llama", sha256="ab" * 32, n_layers=30),
        detection=DetectionInfo(prompt="Apple Inc. is a worldwide tech company.", threshold=355.7,
                                threshold_rule="10 x median", typical_scale=35.6, low_mem=True),
        verification=VerificationInfo(text="builtin:default_text.txt", n_tokens=621, factor=1.25,
                                      baseline_ppl=21.2, baseline_ppl_se=2.4),
        super_weights=[SuperWeight(layer=11, row=507, col=1229, value=5.875, tensor="blk.11.ffn_down.weight",
                                   input_activation=2186.3, output_activation=17950.1, token=0, ppl=90.1,
                                   ppl_se=14.2, ppl_ratio=4.25, ppl_ratio_se=0.38)],
        candidates=[SuperWeight(layer=28, row=507, col=678, value=-5.78, tensor="blk.28.ffn_down.weight")],
        super_activations=[SuperActivation(channel=507, layers=[1, 2, 3], magnitude=24058.2, token=0,
                                           layer_of_max=2)],
    )


def test_round_trip(tmp_path):
    path = save_manifest(sample(), tmp_path / "m.json")
    loaded = load_manifest(path)
    assert loaded == sample()
    assert json.loads(path.read_text())["schema"] == SCHEMA == "swgguf.manifest/1"
    assert loaded.super_weights[0].coordinate == (11, 507, 1229)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_unverified_manifest_round_trips(tmp_path):
    m = sample()
    m.verification = None
    m.super_weights = []
    assert load_manifest(save_manifest(m, tmp_path / "m.json")) == m


def _write(tmp_path, data) -> str:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    return str(p)


@pytest.mark.parametrize("mutate, quoted", [
    (lambda d: d.update(schema="swgguf.manifest/9"), '"swgguf.manifest/9"'),
    (lambda d: d["super_weights"][0].update(row=-1), "-1"),
    (lambda d: d["super_weights"][0].update(col="1229"), '"1229"'),
    (lambda d: d["super_weights"][0].update(layer=30), "30"),
    (lambda d: d["super_weights"][0].update(value=None), "null"),
    (lambda d: d["super_weights"][0].pop("tensor"), "missing field 'tensor'"),
    (lambda d: d["model"].update(sha256="xyz"), '"xyz"'),
    (lambda d: d["model"].update(format="safetensors"), '"safetensors"'),
    (lambda d: d["detection"].update(threshold=0), "0"),
    (lambda d: d["super_activations"][0].update(layers=[1, 99]), "[1, 99]"),
    (lambda d: d.update(super_weights={}), "{}"),
])
def test_validation_quotes_the_bad_value(tmp_path, mutate, quoted):
    data = sample().to_dict()
    mutate(data)
    with pytest.raises(SwggufError) as err:
        load_manifest(_write(tmp_path, data))
    message = str(err.value)
    assert quoted in message
    assert "bad.json" in message and "\n" not in message


def test_not_json_and_missing(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(SwggufError, match="not a JSON manifest"):
        load_manifest(bad)
    with pytest.raises(SwggufError, match="no such manifest"):
        load_manifest(tmp_path / "absent.json")


def test_save_refuses_an_invalid_manifest_and_keeps_the_old_file(tmp_path):
    path = save_manifest(sample(), tmp_path / "m.json")
    before = path.read_text()
    broken = sample()
    broken.super_weights[0].value = float("nan")
    with pytest.raises(SwggufError, match="value"):
        save_manifest(broken, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
