"""A long native call in a forked child process, so that an interrupt stops it.

``llama_model_quantize`` takes no cancel callback and runs for minutes with the
GIL released. A Ctrl-C meanwhile reaches Python only inside llama.cpp's log
callback, where ctypes prints "Exception ignored on calling ctypes callback
function" and drops it: the run would go on to the end and exit 0. Run in a
child, the call can be stopped: this process keeps Python's signal handling
and kills the child on KeyboardInterrupt (the CLI raises one for SIGTERM too).
The child ignores SIGINT (a terminal sends Ctrl-C to the whole process group;
the parent decides) and is killed by the kernel when the parent dies
(PR_SET_PDEATHSIG), so a SIGKILLed run leaves no orphan writing on.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

Send = Callable[[object], None]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def run_forked(target: Callable[[Send], int], on_message: Callable[[object], None]) -> int | None:
    """``target(send)`` in a forked child; what it sends reaches ``on_message`` here,
    as it is sent. Returns ``target``'s value, or None when the child died without
    returning (a native abort). On an exception here (KeyboardInterrupt) the child
    is killed and reaped before it propagates."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, send, os.getpid()), daemon=True)
    result = None
    try:
        with _interrupts_held():
            proc.start()
        send.close()  # ours: EOF on recv once the child's end closes
        while True:
            try:
                kind, value = recv.recv()
            except EOFError:
                break
            if kind == "result":
                result = value
            else:
                on_message(value)
    finally:
        send.close()
        if proc.pid is not None:  # started
            if proc.is_alive():
                proc.kill()
            proc.join()
        recv.close()
    return result


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM recorded during the fork and delivered after it. One that
    arrives while os.fork runs its at-fork hooks (logging's, in the parent) would
    raise there, and CPython drops exceptions of those hooks ("Exception ignored in
    _releaseLock"): the interrupt would be lost. (Blocking them with a signal mask
    would not do: it is per thread, and rich's refresh thread could take the signal.)"""
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in INTERRUPTS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)  # now to the real handler: KeyboardInterrupt, Terminated


def _child(target: Callable[[Send], int], send, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with(parent)
    result = target(lambda message: send.send(("message", message)))
    send.send(("result", int(result)))
    send.close()


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
