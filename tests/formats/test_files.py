"""formats/files.py, the output rule as a library, and runtime/forked.py: cheap
cases on plain files (the commands' cases are in tests/commands/test_outputs.py)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from swgguf.errors import SwggufError
from swgguf.formats.files import check_outputs, remove_stale_work_dirs, work_dir
from swgguf.runtime.forked import run_forked


@pytest.fixture
def model(tmp_path):
    m = tmp_path / "m.gguf"
    m.write_bytes(b"GGUF")
    return m


def test_an_output_may_not_be_an_input_by_any_name(tmp_path, model):
    hard, soft = tmp_path / "hard", tmp_path / "soft"
    os.link(model, hard)
    soft.symlink_to(model)
    for target in (model, hard, soft, tmp_path / "." / "m.gguf"):
        with pytest.raises(SwggufError, match="--json would overwrite the input"):
            check_outputs([("--json", target)], [model])
    check_outputs([("--json", tmp_path / "r.json")], [model])


def test_files_of_an_input_directory_are_inputs(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(SwggufError, match="overwrite the input"):
        check_outputs([("--out", hf / "config.json")], [hf])


def test_two_outputs_may_not_be_one_file(tmp_path):
    a = tmp_path / "a.json"
    (tmp_path / "b.png").symlink_to(a.name)  # dangling: b.png is a name for a.json
    with pytest.raises(SwggufError, match=r"--plot would overwrite --json"):
        check_outputs([("--json", a), ("--plot", tmp_path / "b.png")])


def test_directories_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(SwggufError, match="--json is a directory"):
        check_outputs([("--json", tmp_path)])
    with pytest.raises(SwggufError, match="output directory does not exist"):
        check_outputs([("--json", tmp_path / "no" / "r.json")])
    (tmp_path / "file").write_text("")
    with pytest.raises(SwggufError, match="is not a directory"):
        check_outputs([("--json", tmp_path / "file" / "r.json")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe left nothing


def test_work_dir_is_removed_however_the_block_ends(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with work_dir(tmp_path, "job") as d:
            (d / "half.gguf").write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_stale_work_dirs_of_dead_processes_only_are_removed(tmp_path):
    with work_dir(tmp_path, "job") as mine:
        prefix, _, suffix = mine.name.rsplit("-", 2)
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = tmp_path / f"{prefix}-{dead.pid}-{suffix}"
        other_job = tmp_path / stale.name.replace("-job-", "-other-")
        stale.mkdir()
        other_job.mkdir()
        assert remove_stale_work_dirs(tmp_path, "job") == [stale]
        assert mine.is_dir() and other_job.is_dir() and not stale.exists()


def test_a_child_that_dies_returns_none():
    def crash(send) -> int:
        send("before")
        os.kill(os.getpid(), signal.SIGKILL)  # as a native abort would end it

    seen = []
    assert run_forked(crash, seen.append) is None
    assert seen == ["before"]
    assert run_forked(lambda send: 7, seen.append) == 7
