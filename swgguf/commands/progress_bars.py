"""Rendering :class:`swgguf.progress.Progress` reports on the terminal with rich."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

ITEM_WIDTH = 40  # characters of the item (a tensor name) shown


class StageBars:
    """One bar per stage, kept on screen (``convert``: preparing, quantizing, scoring...)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("[dim]{task.fields[item]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "StageBars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, item: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, item="")
        self.progress.update(self.tasks[stage], completed=done, total=total, item=item[-ITEM_WIDTH:])


class TaskBar:
    """One transient bar whose label is the latest ``stage item`` (``ppl``, ``ablate``)."""

    def __init__(self, console: Console, label: str) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.label = label

    def __enter__(self) -> "TaskBar":
        self.progress.__enter__()
        self.task = self.progress.add_task(self.label, total=None)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, item: str) -> None:
        self.progress.update(self.task, completed=done, total=total, description=f"{stage} {item}")


def describe(stage: str, done: int, total: int, item: str) -> str:
    """One report as one line: ``stage item done/total`` (what is known of it)."""
    text = stage + (f" {item}" if item else "")
    return f"{text} {done}/{total}" if total else text


class Spinner:
    """A status line showing the latest report (``detect``, ``demo``); ``prefix`` is rich
    markup put before it, ``clock`` adds the seconds since the start."""

    def __init__(self, console: Console, label: str, prefix: str = "", clock: bool = False) -> None:
        self.console, self.label, self.prefix, self.clock = console, label, prefix, clock

    def __enter__(self) -> "Spinner":
        self.started = time.perf_counter()
        self.status = self.console.status(self.label)
        self.status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.status.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, item: str) -> None:
        seconds = f"  ({time.perf_counter() - self.started:.0f} s)" if self.clock else ""
        self.status.update(f"{self.prefix}{describe(stage, done, total, item)}{seconds}")
