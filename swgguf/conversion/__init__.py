"""``swgguf convert`` as a library: a float (or HF, or requantized) model quantized
by llama.cpp (:mod:`.inputs`, :mod:`.calibration`), protected by
:mod:`swgguf.protect` with ``--protect-sw``, and written (:mod:`.pipeline`)."""

from ..protect import DEFAULT_BUDGET, ProtectOptions
from .calibration import builtin_calibration
from .inputs import make_f16_reference
from .options import ConvertOptions, QuantOptions
from .pipeline import convert
from .report import ConvertReport, summarize

__all__ = ["DEFAULT_BUDGET", "ProtectOptions", "builtin_calibration", "make_f16_reference", "ConvertOptions",
           "QuantOptions", "convert", "ConvertReport", "summarize"]
