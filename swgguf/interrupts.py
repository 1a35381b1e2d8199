"""SIGTERM as an exception, so that a terminated run cleans up as an interrupted one.

Python turns SIGINT (Ctrl-C) into KeyboardInterrupt, so ``finally`` blocks
remove temporary files and folders; SIGTERM's default action kills the process
on the spot and leaves them. Inside :func:`sigterm_raises`, SIGTERM raises
:class:`Terminated`, a KeyboardInterrupt, which every cleanup already handles.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only: Python
    runs signal handlers there), the previous handler is restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
