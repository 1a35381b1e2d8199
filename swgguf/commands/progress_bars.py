"""Rendering :class:`swgguf.progress.Progress` reports: rich bars on a terminal, plain lines elsewhere.

Every display (:class:`StageBars`, :class:`TaskBar`, :class:`Spinner`) looks at the
stream it writes to: a terminal gets rich's live bars or status line; anything
else (a pipe, a file, CI, ``nohup``) gets :class:`PlainLines`, lines without ANSI
escapes that a log keeps: a stage's end, and while it runs at most one line
every :data:`LINE_INTERVAL_S` seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

ITEM_WIDTH = 40  # characters of the item (a tensor name) shown
# Plain lines: a running stage shows its latest report at most this often. Often enough to
# follow a run in a log, rare enough that a 20-minute build writes ~120 lines.
LINE_INTERVAL_S = 10.0
BEAT_S = 0.5  # how often the plain-line clock looks (a stage's single report can take minutes)


def describe(stage: str, done: int, total: int, item: str) -> str:
    """One report as one line: ``stage item done/total`` (what is known of it)."""
    text = stage + (f" {item}" if item else "")
    return f"{text} {done}/{total}" if total else text


@dataclass
class _Stage:
    name: str
    started: float
    last_line: float
    done: int = 0
    total: int = 0
    item: str = ""
    ended: bool = False


class PlainLines:
    """Reports as plain lines through ``write`` (one line per call, no newline, no markup):

    * ``NAME: STAGE [DONE/TOTAL]: done in S s`` when a stage ends: its count is complete,
      or another stage begins, or the display closes without an error;
    * ``NAME: STAGE ITEM DONE/TOTAL (S s)``, the latest report, when a stage has run for
      ``interval`` seconds since its start or its last line, whether or not reports come.

    A stage named ``A: B`` is a step of stage ``A`` (the demo's ``convert Q4_K_M: quantizing``):
    it does not end ``A``. A stage that fails within ``interval`` seconds writes nothing,
    so a bad input's error stays the only line.
    """

    def __init__(self, write: Callable[[str], None], name: str, interval: float = LINE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.name, self.interval, self.clock = write, name, interval, clock
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.open: list[_Stage] = []  # the running stage last, the stages it is a step of before it
        self.thread = threading.Thread(target=self._beat, name="swgguf-progress", daemon=True)

    def __enter__(self) -> "PlainLines":
        self.thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stopped.set()
        if self.thread.ident is not None:  # started (tests drive tick() without the thread)
            self.thread.join()
        if exc_type is None:
            with self.lock:
                self._close_until("")

    def __call__(self, stage: str, done: int, total: int, item: str) -> None:
        with self.lock:
            s = self.open[-1] if self.open else None
            if s is None or s.name != stage or (s.ended and done < s.done):  # a new stage, or this one again
                self._close_until(stage)
                now = self.clock()
                s = _Stage(stage, now, now)
                self.open.append(s)
            elif s.ended:
                return
            s.done, s.total, s.item = done, total, item
            if total and done >= total:
                self._end(s)

    def _close_until(self, stage: str) -> None:
        """End the open stages that ``stage`` is not a step of."""
        while self.open and not stage.startswith(self.open[-1].name + ": "):
            self._end(self.open.pop())

    def _end(self, s: _Stage) -> None:
        if not s.ended:
            s.ended = True
            counts = f" {s.done}/{s.total}" if s.total else ""
            self.write(f"{self.name}: {s.name}{counts}: done in {self.clock() - s.started:.1f} s")

    def tick(self) -> None:
        """The running stage's latest report, if it has had no line for ``interval`` seconds
        (called every :data:`BEAT_S` seconds while the display is open)."""
        with self.lock:
            now = self.clock()
            s = next((s for s in reversed(self.open) if not s.ended), None)
            if s is not None and now - s.last_line >= self.interval:
                s.last_line = now
                self.write(f"{self.name}: {describe(s.name, s.done, s.total, s.item)} ({now - s.started:.0f} s)")

    def _beat(self) -> None:
        while not self.stopped.wait(BEAT_S):
            self.tick()


class Display:
    """Rich on a terminal, :class:`PlainLines` on the console's stream otherwise; subclasses
    implement the rich side (``start``, ``stop``, ``show``). ``name`` begins each plain line."""

    def __init__(self, console: Console, name: str) -> None:
        self.console = console
        self.name = name if name.startswith("swgguf") else f"swgguf {name}"
        self.plain: PlainLines | None = None

    def __enter__(self):
        if self.console.is_terminal:
            self.start()
        else:
            self.plain = PlainLines(self.write_line, self.name).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.plain is not None:
            self.plain.__exit__(*exc)
        else:
            self.stop(*exc)

    def __call__(self, stage: str, done: int, total: int, item: str) -> None:
        if self.plain is not None:
            self.plain(stage, done, total, item)
        else:
            self.show(stage, done, total, item)

    def write_line(self, line: str) -> None:
        stream = self.console.file  # sys.stderr or sys.stdout as they are now
        stream.write(line + "\n")
        stream.flush()

    def start(self) -> None: ...

    def stop(self, *exc) -> None: ...

    def show(self, stage: str, done: int, total: int, item: str) -> None: ...


class StageBars(Display):
    """One bar per stage, kept on screen (``convert``: preparing, quantizing, scoring...)."""

    def start(self) -> None:
        self.progress = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[dim]{task.fields[item]}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self.tasks: dict[str, int] = {}
        self.progress.__enter__()

    def stop(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show(self, stage: str, done: int, total: int, item: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, item="")
        self.progress.update(self.tasks[stage], completed=done, total=total, item=item[-ITEM_WIDTH:])


class TaskBar(Display):
    """One transient bar whose label is the latest ``stage item`` (``ppl``, ``ablate``)."""

    def start(self) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.__enter__()
        self.task = self.progress.add_task(self.name.removeprefix("swgguf "), total=None)

    def stop(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show(self, stage: str, done: int, total: int, item: str) -> None:
        self.progress.update(self.task, completed=done, total=total, description=f"{stage} {item}")


class Spinner(Display):
    """A status line showing the latest report (``detect``, ``demo``, ``runtime build``);
    ``prefix`` is rich markup put before it, ``clock`` adds the seconds since the start."""

    def __init__(self, console: Console, label: str, prefix: str = "", clock: bool = False) -> None:
        super().__init__(console, label)
        self.label, self.prefix, self.clock = label, prefix, clock

    def start(self) -> None:
        self.started = time.perf_counter()
        self.status = self.console.status(self.label)
        self.status.__enter__()

    def stop(self, *exc) -> None:
        self.status.__exit__(*exc)

    def show(self, stage: str, done: int, total: int, item: str) -> None:
        seconds = f"  ({time.perf_counter() - self.started:.0f} s)" if self.clock else ""
        self.status.update(f"{self.prefix}{describe(stage, done, total, item)}{seconds}")
