"""`swgguf demo` end to end on the embedded SmolLM2-135M (fewer windows and one
type, to keep CI short; `swgguf demo` itself runs Q3_K_M and Q4_K_M on 24)."""

from __future__ import annotations

import json

from swgguf import cli

# SmolLM2-135M's super weights (docs/detect.md); the demo must find them itself
EXPECTED = {("blk.2.ffn_down.weight", 507, 90), ("blk.11.ffn_down.weight", 507, 1229)}


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--types", "Q4_K_M", "--chunks", "4"]) == 0
    printed = capsys.readouterr().out

    manifest = json.loads((out / "manifest.json").read_text())
    found = {(w["tensor"], w["row"], w["col"]) for w in manifest["super_weights"]}
    assert EXPECTED <= found
    for tensor, row, col in EXPECTED:
        assert f"{tensor} [{row}, {col}]" in printed

    assert (out / "detect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["results"]}
    assert set(rows) == {"smollm2-f16.gguf", "smollm2-q4_k_m.gguf", "smollm2-q4_k_m-sw.gguf"}
    plain, protected = rows["smollm2-q4_k_m.gguf"], rows["smollm2-q4_k_m-sw.gguf"]
    assert plain["sidecar_bytes"] == 0 < protected["sidecar_bytes"]
    # the product's claim, on the demo's own text: the sidecar lowers KLD to F16
    assert 0 < protected["kld_mean"] < plain["kld_mean"]
    report = (out / "report.md").read_text()
    assert "smollm2-q4_k_m-sw.gguf" in report and "detect.png" in report
    assert "smollm2-q4_k_m-sw.gguf" in printed


def test_demo_refuses_a_file_as_output_folder(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert cli.main(["demo", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(target) in err and "folder" in err
    assert target.read_text() == "not a folder"


def test_demo_refuses_an_unknown_type(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--types", "Q9_Z"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Q9_Z" in err
