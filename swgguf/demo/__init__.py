"""The whole pipeline on the embedded default model (``swgguf demo``): F16
reference -> detect -> convert plain and protected -> ppl + KLD -> report."""

from .report import kld_change
from .run import DEFAULT_CHUNKS, DEFAULT_OUT, DEFAULT_TYPES, DemoResult, run_demo

__all__ = ["kld_change", "DEFAULT_CHUNKS", "DEFAULT_OUT", "DEFAULT_TYPES", "DemoResult", "run_demo"]
