"""Compatibility name: the sidecar format lives in :mod:`swgguf.formats.sidecar`.

Kept for patches/, tests/test_runtime_*.py and bench/runtime_overhead.py, which
import ``swgguf.sidecar``; new code imports ``swgguf.formats.sidecar``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .formats import gguf_io
from .formats.sidecar import *  # noqa: F401,F403


def copy_gguf(src, dst: str | Path, extra_tensors: Iterable[tuple[str, np.ndarray]] = (),
              extra_kv: Mapping[str, object] | None = None) -> Path:
    """Copy a GGUF with extra tensors and keys, unvalidated (:func:`swgguf.formats.gguf_io.copy_gguf`)."""
    return gguf_io.copy_gguf(src, dst, add=extra_tensors, kv=extra_kv)
