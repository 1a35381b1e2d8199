"""Importance matrices: the one llama.cpp's quantizer weighs its rounding with
(``--imatrix`` / ``--calib``), and the activation statistics salience needs.

Salience uses, in this order: ``--salience-imatrix``; ``--salience-text``
(computed); the quantizer's imatrix; else statistics computed from swgguf's
built-in calibration text.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..formats.files import sha256_file
from ..formats.imatrix import Imatrix, load_imatrix
from ..progress import Progress, no_progress
from ..protect import ProtectOptions, Statistics
from ..runtime import compute_imatrix
from .options import QuantOptions

CALIB_CTX = 512  # llama-imatrix context for --calib and --salience-text
BUILTIN_CALIB_CTX = 128  # the built-in text is short; llama-imatrix needs 2 x ctx tokens
BUILTIN_CALIBRATION = "calibration.txt"


@dataclass(frozen=True)
class QuantImatrix:
    """The imatrix given to the quantizer, the name it records, and its provenance."""

    imatrix: Imatrix
    recorded_as: str  # quantize.imatrix.file
    stats: Statistics


def builtin_calibration() -> Path:
    """swgguf's built-in calibration text (swgguf/data/calibration.txt)."""
    return Path(str(resources.files("swgguf") / "data" / BUILTIN_CALIBRATION))


def quantization_imatrix(float_path: Path, opts: QuantOptions, work: Path,
                         progress: Progress = no_progress) -> QuantImatrix | None:
    """The imatrix of ``--imatrix`` (read) or ``--calib`` (computed); None without either."""
    if opts.imatrix is not None:
        path = Path(opts.imatrix)
        imatrix = load_imatrix(path)
        return QuantImatrix(imatrix, str(opts.imatrix), _stats(imatrix, "imatrix", path))
    if opts.calib is None:
        return None
    text = Path(opts.calib)
    progress("computing imatrix", 0, 1, text.name)
    imatrix = compute_imatrix(float_path, text, work / "imatrix.gguf", n_ctx=CALIB_CTX,
                              chunks=opts.calib_chunks, threads=opts.nthread or None)
    progress("computing imatrix", 1, 1, text.name)
    return QuantImatrix(imatrix, str(opts.calib), _stats(imatrix, "text", text))


def salience_statistics(float_path: Path, quant: QuantImatrix | None, protect: ProtectOptions, opts: QuantOptions,
                        work: Path, progress: Progress = no_progress) -> Statistics:
    """The activation statistics salience is computed with (module docstring's order)."""
    if protect.salience_imatrix is not None:
        path = Path(protect.salience_imatrix)
        return _stats(load_imatrix(path), "imatrix", path)
    if quant is not None and protect.salience_text is None:
        return quant.stats
    text = Path(protect.salience_text or builtin_calibration())
    progress("computing activation statistics", 0, 1, text.name)
    ctx = BUILTIN_CALIB_CTX if protect.salience_text is None else CALIB_CTX
    imatrix = compute_imatrix(float_path, text, work / "salience-imatrix.gguf", n_ctx=ctx,
                              chunks=opts.calib_chunks, threads=opts.nthread or None)
    progress("computing activation statistics", 1, 1, text.name)
    return _stats(imatrix, "text", text)


def _stats(imatrix: Imatrix, kind: str, path: Path) -> Statistics:
    """Statistics recorded as ``<kind>:<file name>`` with the file's hash."""
    return Statistics(imatrix, f"{kind}:{path.name}", sha256_file(path))
