"""Writing a file so that it is either complete or absent, and hashing one.

Every file swgguf writes (GGUF, JSON, PNG, Markdown) goes through
:func:`atomic_output`: it is written under a temporary name in the destination
folder and renamed onto the destination when complete. A failure (a full disk,
an interrupt) never leaves half a file, and the result has the permissions a
plain ``open()`` would have given it, not mkstemp's 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import SwggufError

HASH_CHUNK = 1 << 22  # bytes read at a time when hashing


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (model files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_output_dir(path: str | Path) -> None:
    """Refuse, before any work, an output whose folder does not exist."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise SwggufError("the output directory does not exist", parent)


def publish(tmp: str | Path, dst: str | Path) -> None:
    """Rename a finished temporary file onto ``dst`` with the permissions a plain
    ``open()`` would have given it (mkstemp makes files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)


@contextmanager
def atomic_output(dst: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``dst`` to write to; on leaving the block without an
    error it becomes ``dst``. ``suffix`` matters to writers that pick the format from
    the name (matplotlib). An OSError becomes a one-line SwggufError naming ``dst``."""
    dst = Path(dst)
    check_output_dir(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, dst)
    except OSError as err:
        raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(data: Any, path: str | Path) -> Path:
    """``data`` as indented JSON (no NaN: not JSON), written atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return write_text(text, path)


def write_text(text: str, path: str | Path) -> Path:
    """UTF-8 ``text`` written atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
