"""How long calls say how far they are: one callback shape for every engine.

``progress(stage, done, total, item)``: ``stage`` names the step ("quantizing",
"scoring columns", "ppl"), ``done`` of ``total`` units are finished (``total``
0: a step without a count, e.g. "loading the model"), ``item`` is what is being
worked on (a tensor, a model; may be ""). Engines take ``progress`` as an
argument defaulting to :func:`no_progress`; commands render it (rich bars,
a spinner) and engines never print.

The runtime build (:mod:`swgguf.runtime.build`) still reports plain messages
(``progress(msg)``); its command adapts a :class:`Progress` with
:func:`message_reporter`.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

# a build tool's step counter: CMake's Makefiles "[ 45%] Building ...", ninja's "[12/200] Building ..."
_STEP = re.compile(r"\[\s*(\d+)%\]\s*(.*)|\[(\d+)/(\d+)\]\s*(.*)")


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, item: str) -> None: ...


def no_progress(stage: str, done: int, total: int, item: str) -> None:
    """The default: report nothing."""


def renamed(progress: Progress, stage: str) -> Progress:
    """``progress`` with every report's stage replaced by ``stage`` (e.g. the second
    quantization of --clip shows as its own bar)."""
    def report(_stage: str, done: int, total: int, item: str) -> None:
        progress(stage, done, total, item)
    return report


def message_reporter(progress: Progress) -> Callable[[str], None]:
    """A ``report(message)`` callback (the runtime build's shape) feeding ``progress``:
    a message is a stage without a count, except a compiler line with a step counter
    (``[ 45%] Building ...``, ``[12/200] Building ...``), which counts the latest stage
    (45/100, 12/200) with the rest of the line as the item."""
    stage = "building"

    def report(message: str) -> None:
        nonlocal stage
        step = _STEP.search(message)
        if step is None:
            stage = message
            progress(message, 0, 0, "")
        elif step.group(1) is not None:
            progress(stage, int(step.group(1)), 100, step.group(2))
        else:
            progress(stage, int(step.group(3)), int(step.group(4)), step.group(5))
    return report
