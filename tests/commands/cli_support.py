"""Helpers of the command tests (imported by name: tests/ is no package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def assert_one_line_error(err: str, *needles: str) -> None:
    err = err.strip()
    assert err.startswith("swgguf: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def swgguf(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in its own process (llama.cpp aborting must not take pytest down)."""
    return subprocess.run([sys.executable, "-m", "swgguf", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
