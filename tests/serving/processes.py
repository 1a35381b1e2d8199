"""Test support: llama.cpp's tools as child processes on 127.0.0.1, always stopped.

:func:`running` starts a command with its output in a log file, waits (bounded) until
a readiness check passes, and stops the process when the block ends, however it ends:
SIGTERM, then SIGKILL if it does not exit within a few seconds.
"""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from swgguf.runtime.build import tools_dir

HOST = "127.0.0.1"
STOP_GRACE_S = 10  # after SIGTERM, before SIGKILL
POLL_S = 0.2


def tool(name: str) -> Path:
    """The patched build's ``name`` (``swgguf runtime build --tools``), or a failed test."""
    exe = tools_dir() / name
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run `swgguf runtime build --tools` (make test does)")
    return exe


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((HOST, port)) == 0


def log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


@contextmanager
def running(cmd: Sequence[str | Path], log: Path, ready: Callable[[], bool], wait_s: float = 300,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``cmd`` running, stdout and stderr in ``log``, once ``ready()`` is true; the test
    fails (with the log's tail) if the process exits first or ``wait_s`` passes."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + wait_s
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{Path(str(cmd[0])).name} exited with {proc.returncode}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{Path(str(cmd[0])).name} not ready after {wait_s:.0f} s:\n{log_tail(log)}")
            time.sleep(POLL_S)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
