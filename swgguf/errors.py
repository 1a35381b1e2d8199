"""The one exception type the CLI turns into a one-line message."""

from __future__ import annotations

from pathlib import Path


class SwggufError(Exception):
    """A user-facing error: bad input, missing file, unusable runtime.

    The CLI prints ``swgguf: error: <path>: <message>`` and exits non-zero,
    with no traceback.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(message)

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.path}: {message}" if self.path else message
