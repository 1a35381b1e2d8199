"""Models evaluated window by window: the loop ``ppl``, ``ablate``, ``demo`` and
the benchmarks share.

Every model is loaded once and evaluated on every window in turn, so only one
window of logits per model is ever held (ctx x vocab float32 each); with a
reference, it runs once per window and each model is compared with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import runtime
from ..errors import SwggufError
from ..progress import Progress, no_progress
from ..runtime import vocab
from .stats import KldAccumulator, KldStats, PplAccumulator, PplStats
from .text import Window


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF and how the runtime applies its sidecars (e.g. super-weight scalars x 0)."""

    path: Path
    label: str | None = None
    settings: runtime.ContextSettings = field(default_factory=runtime.ContextSettings)

    @property
    def name(self) -> str:
        return self.label or self.path.name


def as_spec(p: str | Path | ModelSpec) -> ModelSpec:
    return p if isinstance(p, ModelSpec) else ModelSpec(Path(p))


class Evaluator:
    """Float32 logits of a window from one llama.cpp context, timed."""

    def __init__(self, spec: ModelSpec, options: runtime.LoadOptions) -> None:
        self.spec = spec
        self.llama = runtime.load(spec.path, options, spec.settings)
        self.seconds = 0.0
        self.tokens = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.compute_logits(tokens)
        self.seconds += time.perf_counter() - t0
        self.tokens += len(tokens)
        return out

    def compute_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """The logits themselves (subclasses change how they are computed)."""
        return runtime.logits(self.llama, tokens)

    def branches(self, n_keep: int, continuations: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Logits of each continuation after the first ``n_keep`` positions of the sequence
        evaluated last, which are kept and computed once (HellaSwag's endings; in one
        decode where the context was made with a sequence per continuation)."""
        t0 = time.perf_counter()
        out = runtime.branch_logits(self.llama, n_keep, continuations)
        self.seconds += time.perf_counter() - t0
        self.tokens += sum(len(c) for c in continuations)
        return out

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def close(self) -> None:
        self.llama.close()


def run_windows(models: Sequence[Evaluator], wins: Sequence[Window], ref: Evaluator | None = None,
                progress: Progress = no_progress, stage: str = "ppl",
                ) -> tuple[list[PplStats], list[KldStats | None], PplStats | None]:
    """Evaluate every model on every window; with ``ref``, the reference runs once per
    window and each model is compared with it. Returns (ppl per model, kld per model,
    the reference's ppl). Progress: ``stage``, model by model, window by window."""
    ppl = [PplAccumulator() for _ in models]
    kld = [KldAccumulator() for _ in models] if ref is not None else None
    ref_ppl = PplAccumulator() if ref is not None else None
    total = len(wins) * (len(models) + (ref is not None))
    done = 0
    for w in wins:
        scored = slice(w.score_from, len(w.tokens) - 1)
        ref_rows = None
        if ref is not None:
            ref_logits = ref.logits(w.tokens)
            ref_ppl.add(ref_logits, w)
            ref_rows = ref_logits[scored]
            done += 1
            progress(stage, done, total, ref.name)
        for i, m in enumerate(models):
            logits = m.logits(w.tokens)
            ppl[i].add(logits, w)
            if kld is not None:
                kld[i].add(ref_rows, logits[scored], w.targets)
            done += 1
            progress(stage, done, total, m.name)
    return ([a.stats() for a in ppl], [a.stats() for a in kld] if kld else [None] * len(models),
            ref_ppl.stats() if ref_ppl else None)


def check_inputs(specs: Sequence[ModelSpec]) -> None:
    for s in specs:
        if not s.path.exists():
            raise SwggufError("no such file", s.path)
        if not s.path.is_file():
            raise SwggufError("not a file", s.path)


def check_same_vocab(ref: Path, others: Sequence[Path]) -> None:
    n_ref = vocab.n_vocab(ref)
    for p in others:
        n = vocab.n_vocab(p)
        if n != n_ref:
            raise SwggufError(f"its vocabulary has {n} tokens but the reference's has {n_ref}: "
                              "KL divergence needs the same vocabulary", p)
