"""The output rule (formats/files.py, docs/convert.md "Outputs"), command by
command: an output that is an input (by name, hard link or symlink) or another
output, a directory, or in a folder that cannot be written is refused with one
line, before any work, and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swgguf import cli
from swgguf.formats.files import sha256_file

from cli_support import assert_one_line_error, swgguf

FAST_PPL = ["--ctx", "64", "--chunks", "1"]  # what the run would cost if it were not refused
FAST_ABLATE = ["--ctx", "64", "--chunks", "1", "--scale", "1"]


def _model(smollm2: Path, tmp_path: Path) -> Path:
    """The model under a name of this test's own (a hard link of the session copy)."""
    m = tmp_path / "m.gguf"
    os.link(smollm2, m)
    return m


def _alias(model: Path, how: str) -> Path:
    """A name for ``model``: itself, a hard link or a symlink."""
    if how == "itself":
        return model
    alias = model.with_name(f"{how}.gguf")
    os.link(model, alias) if how == "hardlink" else alias.symlink_to(model.name)
    return alias


@pytest.mark.slow
@pytest.mark.parametrize("how", ["itself", "hardlink", "symlink"])
def test_ppl_json_onto_the_model_is_refused(smollm2, tmp_path, capsys, how):
    model = _model(smollm2, tmp_path)
    target = _alias(model, how)
    digest = sha256_file(model)
    assert cli.main(["ppl", str(model), *FAST_PPL, "--json", str(target)]) == 1
    out, err = capsys.readouterr()
    assert_one_line_error(err, str(target), "--json would overwrite the input")
    assert out == ""  # refused before the evaluation
    assert sha256_file(target) == digest and sha256_file(model) == digest
    assert target.is_symlink() == (how == "symlink")


@pytest.mark.slow
@pytest.mark.parametrize("flag,onto", [("--json", "model"), ("--plot", "model"), ("--json", "manifest")])
def test_ablate_output_onto_an_input_is_refused(smollm2, smollm2_manifest, tmp_path, capsys, flag, onto):
    model = _model(smollm2, tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(smollm2_manifest.read_bytes())
    target = model if onto == "model" else manifest
    digest = sha256_file(target)
    assert cli.main(["ablate", str(model), "--manifest", str(manifest), *FAST_ABLATE, flag, str(target)]) == 1
    out, err = capsys.readouterr()
    assert_one_line_error(err, str(target), f"{flag} would overwrite the input")
    assert out == "" and sha256_file(target) == digest


@pytest.mark.slow
def test_lora_adapter_onto_the_input_is_refused(smollm2, tmp_path, capsys):
    """The issue's case: the adapter of -o x.gguf is x.lora.gguf, the input."""
    src = tmp_path / "x.lora.gguf"
    os.link(smollm2, src)
    digest = sha256_file(src)
    rc = cli.main(["convert", str(src), "--q4_k", "--allow-requantize", "--protect-sw", "--lora-compat",
                   "--threads", "1", "-o", str(tmp_path / "x.gguf")])
    assert rc == 1
    assert_one_line_error(capsys.readouterr().err, str(src), "the LoRA adapter would overwrite the input")
    assert sha256_file(src) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lora.gguf"]


@pytest.mark.slow
def test_lora_adapter_onto_the_output_is_refused(smollm2, tmp_path, capsys):
    """out.lora.gguf, the adapter's name, is a symlink to out.gguf: both outputs are one file."""
    out = tmp_path / "out.gguf"
    adapter = tmp_path / "out.lora.gguf"
    adapter.symlink_to(out.name)
    rc = cli.main(["convert", str(smollm2), "--q4_k", "--allow-requantize", "--protect-sw", "--lora-compat",
                   "--threads", "1", "-o", str(out)])
    assert rc == 1
    assert_one_line_error(capsys.readouterr().err, str(adapter), "the LoRA adapter would overwrite the output")
    assert adapter.is_symlink() and not out.exists()


def test_convert_into_an_unwritable_folder_is_one_line(tiny_f32, unwritable_dir, capsys):
    out = unwritable_dir / "t.gguf"
    assert cli.main(["convert", str(tiny_f32), "--q8_0", "-o", str(out)]) == 1
    assert_one_line_error(capsys.readouterr().err, str(unwritable_dir), "cannot write in the output directory")
    assert not out.exists()


@pytest.mark.slow
def test_ppl_json_into_an_unwritable_folder_is_refused_first(smollm2, tmp_path, unwritable_dir, capsys):
    model = _model(smollm2, tmp_path)
    assert cli.main(["ppl", str(model), *FAST_PPL, "--json", str(unwritable_dir / "r.json")]) == 1
    out, err = capsys.readouterr()
    assert_one_line_error(err, str(unwritable_dir), "cannot write in the output directory")
    assert out == ""  # before the evaluation, not after it


@pytest.mark.slow
def test_ppl_json_onto_a_directory_is_refused_first(smollm2, tmp_path, capsys):
    model = _model(smollm2, tmp_path)
    folder = tmp_path / "results"
    folder.mkdir()
    assert cli.main(["ppl", str(model), *FAST_PPL, "--json", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert_one_line_error(err, str(folder), "--json is a directory")
    assert out == "" and list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["ppl", "ablate"])
def test_a_model_without_tokenizer_is_one_line(tiny_f32, tiny_manifest, command):
    """swgguf.synthetic's models have none (tokenizer.ggml.model = no_vocab): llama.cpp
    aborts on them (SIGABRT in llama-vocab.cpp) unless they are refused first."""
    args = [tiny_f32, "--ctx", "64"] + (["--manifest", tiny_manifest] if command == "ablate" else [])
    proc = swgguf(command, *args)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert_one_line_error(proc.stderr, str(tiny_f32), "no tokenizer")
