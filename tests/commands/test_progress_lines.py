"""Progress off a terminal (swgguf/commands/progress_bars.py): plain lines, rate-limited, a
stage's end; rich's bars on a terminal; the runtime build's compiler lines as counts."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from swgguf.commands.progress_bars import LINE_INTERVAL_S, PlainLines, Spinner, StageBars, TaskBar
from swgguf.progress import message_reporter

from cli_support import swgguf


class Clock:
    """Seconds that pass when the test says so (the display's clock, not the wall's)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def plain() -> tuple[PlainLines, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return PlainLines(lines.append, "swgguf test", clock=clock), lines, clock


def test_a_running_stage_writes_at_most_one_line_per_interval(plain):
    display, lines, clock = plain
    for second in range(0, 35):  # a report every second, and the clock ticking in between
        clock.now = float(second)
        display("verifying", second + 1, 40, f"window {second}")
        display.tick()
    assert lines == ["swgguf test: verifying window 10 11/40 (10 s)", "swgguf test: verifying window 20 21/40 (20 s)",
                     "swgguf test: verifying window 30 31/40 (30 s)"]


def test_a_stage_without_reports_still_shows_it_runs(plain):
    display, lines, clock = plain
    display("loading the model", 0, 0, "")
    clock.now = LINE_INTERVAL_S - 0.1
    display.tick()
    assert lines == []
    clock.now = LINE_INTERVAL_S
    display.tick()
    assert lines == [f"swgguf test: loading the model ({LINE_INTERVAL_S:.0f} s)"]


def test_stages_end_with_one_line_each(plain):
    display, lines, clock = plain
    display("loading the model", 0, 0, "")
    clock.now = 2.0
    display("quantizing", 1, 3, "a")
    display("quantizing", 3, 3, "c")  # complete: its end now
    display("quantizing", 3, 3, "c")  # said again: nothing new
    clock.now = 2.5
    display("writing", 0, 1, "out.gguf")
    display.__exit__(None, None, None)  # closed without an error: the running stage ends
    assert lines == ["swgguf test: loading the model: done in 2.0 s", "swgguf test: quantizing 3/3: done in 0.0 s",
                     "swgguf test: writing 0/1: done in 0.0 s"]


def test_a_failing_stage_says_nothing(plain):
    """A bad input's error is the only line: the stage it broke is not 'done'."""
    display, lines, clock = plain
    display("loading the model", 0, 0, "")
    clock.now = 1.0
    display.__exit__(ValueError, ValueError("bad"), None)
    assert lines == []


def test_steps_of_a_stage_do_not_end_it(plain):
    """The demo's ``convert Q4_K_M: quantizing`` is a step of ``convert Q4_K_M``."""
    display, lines, clock = plain
    display("convert Q4_K_M", 0, 0, "")
    display("convert Q4_K_M: quantizing", 2, 2, "")
    clock.now = 4.0
    display("convert Q4_K_M: writing", 1, 1, "")
    clock.now = 5.0
    display("ppl + KLD", 0, 0, "")
    assert lines == ["swgguf test: convert Q4_K_M: quantizing 2/2: done in 0.0 s",
                     "swgguf test: convert Q4_K_M: writing 1/1: done in 0.0 s",
                     "swgguf test: convert Q4_K_M: done in 5.0 s"]


def test_the_build_log_counts_compiler_steps(plain):
    """swgguf runtime build reports messages; CMake's and ninja's step counters become counts."""
    display, lines, clock = plain
    report = message_reporter(display)
    report("building the llama-cpp-python wheel (minutes)")
    report("[ 12%] Building C object vendor/llama.cpp/ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o")
    clock.now = 10.0
    display.tick()
    report("[100%] Built target llama")
    report("configuring llama-cli")
    report("[3/7] Linking CXX executable bin/llama-cli")
    report("[7/7] Linking CXX executable bin/llama-bench")
    assert lines == [
        "swgguf test: building the llama-cpp-python wheel (minutes) Building C object "
        "vendor/llama.cpp/ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o 12/100 (10 s)",
        "swgguf test: building the llama-cpp-python wheel (minutes) 100/100: done in 10.0 s",
        "swgguf test: configuring llama-cli 7/7: done in 0.0 s"]


@pytest.mark.parametrize("display", [lambda c: StageBars(c, "convert"), lambda c: TaskBar(c, "ppl"),
                                     lambda c: Spinner(c, "detect")])
def test_a_terminal_gets_rich_and_a_file_plain_lines(display):
    tty, log = io.StringIO(), io.StringIO()
    for file, terminal in ((tty, True), (log, False)):
        with display(Console(file=file, force_terminal=terminal, width=100)) as shown:
            shown("quantizing", 1, 2, "blk.0.ffn_down.weight")
            shown("quantizing", 2, 2, "blk.1.ffn_down.weight")
    assert "\x1b[" in tty.getvalue() and "done in" not in tty.getvalue()  # rich's live display
    line, = log.getvalue().splitlines()
    assert line.endswith(": quantizing 2/2: done in 0.0 s") and "\x1b" not in log.getvalue()


def test_convert_writes_plain_progress_to_a_pipe(tiny_f32, tmp_path):
    proc = swgguf("convert", tiny_f32, "--q8_0", "-o", tmp_path / "t.gguf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\x1b" not in proc.stdout + proc.stderr
    ended = [line.split(": done in ")[0] for line in proc.stderr.splitlines() if ": done in " in line]
    assert ended[0] == "swgguf convert: preparing input 1/1", proc.stderr
    assert any(e.startswith("swgguf convert: quantizing ") for e in ended), proc.stderr
    assert ended[-1] == "swgguf convert: writing 1/1" or ended[-1].startswith("swgguf convert: quantizing"), ended
