"""The evaluation engine: text windows (:mod:`.text`), per-token statistics
(:mod:`.stats`), models evaluated window by window (:mod:`.evaluator`) and the
perplexity/KLD comparison of files (:mod:`.perplexity`), shared by ``ppl``,
``ablate``, ``demo`` and the benchmarks; HellaSwag accuracy (:mod:`.hellaswag`)."""

from . import hellaswag
from .evaluator import Evaluator, ModelSpec, run_windows
from .perplexity import FileInfo, Result, evaluate, file_info, report
from .stats import KldAccumulator, KldStats, PplAccumulator, PplStats, kld_stats
from .text import Text, Window, embedded_corpus, load_text, text_from, text_windows

__all__ = [
    "hellaswag", "Evaluator", "ModelSpec", "run_windows", "FileInfo", "Result", "evaluate", "file_info", "report",
    "KldAccumulator", "KldStats", "PplAccumulator", "PplStats", "kld_stats", "Text", "Window",
    "embedded_corpus", "load_text", "text_from", "text_windows",
]
