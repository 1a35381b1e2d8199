"""Interrupting `swgguf convert` while llama.cpp quantizes SmolLM2, for real: Ctrl-C
(SIGINT) and SIGTERM stop the quantization and leave nothing behind; a SIGKILLed
run's temporary folder is removed by the next run; outputs follow the umask."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_support import swgguf

WAIT_S = 600  # hang guards, not speed targets


def _sigint_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child: a shell starts background jobs with it
    ignored, Python then keeps it ignored, and the run would not see our Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_convert(model: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen([sys.executable, "-m", "swgguf", "convert", str(model), "--q4_k",
                                 "--allow-requantize", "--threads", "1", "-o", str(out)],
                                stdout=f, stderr=subprocess.STDOUT, preexec_fn=_sigint_as_in_a_terminal)


def _wait_for_quantization(folder: Path, proc: subprocess.Popen) -> None:
    """Until llama_model_quantize is writing the plain quantization in the work folder
    (the input was dequantized to F16 before: also llama_model_quantize)."""
    deadline = time.monotonic() + WAIT_S
    while not list(folder.glob(".swgguf-convert-*/.plain.gguf.*")):
        if proc.poll() is not None:
            pytest.fail(f"convert ended (exit {proc.returncode}) before the quantization was seen")
        if time.monotonic() > deadline:
            pytest.fail("the quantization did not start")
        time.sleep(0.05)


def _processes_writing(out: Path) -> list[int]:
    """Processes whose command line names ``out`` (the run and its quantizer child)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(out).encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_quantization_stops_and_cleans_up(smollm2, tmp_path, sig, code, word):
    folder, log = tmp_path / "out", tmp_path / "log.txt"
    folder.mkdir()
    out = folder / "x.gguf"
    proc = _start_convert(smollm2, out, log)
    _wait_for_quantization(folder, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=WAIT_S) == code, log.read_text()[-2000:]
    text = log.read_text()
    assert text.rstrip().endswith(f"swgguf: {word}"), text[-2000:]
    assert "Traceback" not in text and "Exception ignored" not in text
    assert list(folder.iterdir()) == []  # no output, no temporary folder
    assert _processes_writing(out) == []  # the quantizer stopped too


@pytest.mark.slow
def test_a_killed_runs_folder_is_removed_by_the_next_run(smollm2, tiny_f32, tmp_path):
    folder, log = tmp_path / "out", tmp_path / "log.txt"
    folder.mkdir()
    out = folder / "x.gguf"
    proc = _start_convert(smollm2, out, log)
    _wait_for_quantization(folder, proc)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.wait(timeout=WAIT_S)
    deadline = time.monotonic() + 60
    while _processes_writing(out):  # the quantizer child dies with its parent (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, "the quantizer outlived the killed run"
        time.sleep(0.05)
    [stale] = folder.glob(".swgguf-convert-*")
    prefix, pid, suffix = stale.name.rsplit("-", 2)
    assert pid == str(proc.pid)
    live = folder / f"{prefix}-{os.getpid()}-{suffix}"  # the same, of a process that runs
    live.mkdir()

    run = swgguf("convert", tiny_f32, "--q8_0", "-o", folder / "t.gguf")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"removed {stale}, left by process {pid}, which no longer runs" in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([live.name, "t.gguf"])


@pytest.mark.slow
def test_outputs_follow_the_umask(smollm2, tiny_f32, tmp_path):
    def umask_027() -> None:
        os.umask(0o027)

    runs = [("convert", tiny_f32, "--q8_0", "-o", tmp_path / "t.gguf"),
            ("ppl", smollm2, "--ctx", "64", "--chunks", "1", "--json", tmp_path / "r.json")]
    for args in runs:
        proc = subprocess.run([sys.executable, "-m", "swgguf", *map(str, args)], capture_output=True, text=True,
                              timeout=WAIT_S, preexec_fn=umask_027)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("t.gguf", "r.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
