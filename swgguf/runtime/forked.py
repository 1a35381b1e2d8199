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
from typing import Callable

Send = Callable[[object], None]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def run_forked(target: Callable[[Send], int], on_message: Callable[[object], None]) -> int | None:
    """``target(send)`` in a forked child; what it sends reaches ``on_message`` here,
    as it is sent. Returns ``target``'s value, or None when the child died without
    returning (a native abort). On an exception here (KeyboardInterrupt) the child
    is killed and reaped before it propagates."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, send, os.getpid()), daemon=True)
    proc.start()
    send.close()  # ours: EOF on recv once the child's end closes
    result = None
    try:
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
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    return result


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
