"""The super-weight paper's experiments on a GGUF file (``swgguf ablate``): which
super weights (:mod:`.sites`), the experiments (:mod:`.experiments`), their
results (:mod:`.results`) and figure (:mod:`.plot`)."""

from .experiments import DEFAULT_CHUNKS, DEFAULT_SCALES, N_STOPWORDS, RestoreSA, ablate, scaled
from .plot import plot
from .results import Ablation, shown
from .sites import SuperWeightSite, carries_scalars, find_super_weights, with_scalars, write_scalar_copy

__all__ = [
    "DEFAULT_CHUNKS", "DEFAULT_SCALES", "N_STOPWORDS", "RestoreSA", "ablate", "scaled", "plot", "Ablation",
    "shown", "SuperWeightSite", "carries_scalars", "find_super_weights", "with_scalars", "write_scalar_copy",
]
