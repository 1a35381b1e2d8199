"""Perplexity and KL-divergence statistics, accumulated a window of logits at a time.

Perplexity is exp(mean NLL) over the scored tokens, with the standard error
ppl * std(NLL) / sqrt(n) (tokens taken as independent, as llama-perplexity and
mlx-lm do: a lower bound, neighbouring tokens are correlated). KL(ref || model)
is computed per token from float32 logits in float64. Only one window of
logits is ever held; the accumulators keep one float per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import SwggufError
from .text import Window

ROW_BLOCK = 64  # rows of logits turned into float64 at a time: bounds memory for large vocabularies


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of float32 logits rows."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def probabilities(logits: np.ndarray, rows: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """p(token | position) (len(rows), len(tokens)) from float32 logits, float64 softmax."""
    return np.exp(log_softmax(logits[list(rows)])[:, list(tokens)])


@dataclass(frozen=True)
class PplStats:
    ppl: float
    stderr: float
    nll: float  # mean negative log-likelihood, nats
    n_tokens: int


class PplAccumulator:
    """Negative log-likelihoods of scored tokens, window by window."""

    def __init__(self) -> None:
        self._nll: list[np.ndarray] = []

    def add(self, logits: np.ndarray, window: Window) -> np.ndarray:
        """Score ``window``'s targets with its ``logits`` (len(tokens), vocab); returns the NLLs."""
        rows = logits[window.score_from: len(window.tokens) - 1]
        targets = np.asarray(window.targets)
        nll = np.empty(len(targets))
        for a in range(0, len(targets), ROW_BLOCK):
            lp = log_softmax(rows[a: a + ROW_BLOCK])
            nll[a: a + ROW_BLOCK] = -lp[np.arange(lp.shape[0]), targets[a: a + ROW_BLOCK]]
        self._nll.append(nll)
        return nll

    def stats(self) -> PplStats:
        nll = np.concatenate(self._nll) if self._nll else np.zeros(0)
        if nll.size < 2:
            raise SwggufError(f"{nll.size} scored tokens: too few for a perplexity")
        mean = float(nll.mean())
        ppl = math.exp(mean)
        # llama-perplexity's formula: sqrt((E[x^2] - E[x]^2) / (n - 1))
        err = math.sqrt(max(float((nll ** 2).mean()) - mean ** 2, 0.0) / (nll.size - 1))
        return PplStats(ppl=ppl, stderr=ppl * err, nll=mean, n_tokens=int(nll.size))


@dataclass(frozen=True)
class KldStats:
    """KL(ref || model) per token, nats; top1: share of equal argmaxes; dp_rms: RMS of
    p_model(correct) - p_ref(correct)."""

    mean: float
    stderr: float
    median: float
    p90: float
    p99: float
    max: float
    top1: float
    dp_rms: float | None
    n_tokens: int


class KldAccumulator:
    """KL divergence of one model against a reference, fed a window of logits at a time."""

    def __init__(self) -> None:
        self._kld: list[np.ndarray] = []
        self._same: list[np.ndarray] = []
        self._dp: list[np.ndarray] = []

    def add(self, ref_logits: np.ndarray, logits: np.ndarray, targets: Sequence[int] | None = None) -> None:
        """Rows of float32 logits (n, vocab) from the reference and the model, same positions;
        ``targets`` (n,) are the correct next tokens, for the Δp statistic."""
        if ref_logits.shape != logits.shape:
            raise SwggufError(f"logits of shape {logits.shape} against a reference of shape {ref_logits.shape}")
        n = ref_logits.shape[0]
        kld, same, dp = np.empty(n), np.empty(n, bool), np.empty(n)
        for a in range(0, n, ROW_BLOCK):
            b = min(a + ROW_BLOCK, n)
            lp_ref, lp = log_softmax(ref_logits[a:b]), log_softmax(logits[a:b])
            p_ref = np.exp(lp_ref)
            # clip: -1e-16 from rounding is still 0
            kld[a:b] = np.maximum((p_ref * (lp_ref - lp)).sum(axis=-1), 0.0)
            same[a:b] = ref_logits[a:b].argmax(axis=-1) == logits[a:b].argmax(axis=-1)
            if targets is not None:
                t = np.asarray(targets[a:b])
                idx = np.arange(b - a)
                dp[a:b] = np.exp(lp[idx, t]) - p_ref[idx, t]
        self._kld.append(kld)
        self._same.append(same)
        if targets is not None:
            self._dp.append(dp)

    def values(self) -> np.ndarray:
        """KL divergence of every token added so far, in order (for paired comparisons of
        files scored on the same tokens)."""
        return np.concatenate(self._kld) if self._kld else np.zeros(0)

    def stats(self) -> KldStats:
        k = self.values()
        if k.size == 0:
            raise SwggufError("no tokens compared")
        dp = np.concatenate(self._dp) if self._dp else None
        q = np.quantile(k, [0.5, 0.9, 0.99])
        return KldStats(
            mean=float(k.mean()),
            stderr=float(k.std(ddof=1) / math.sqrt(k.size)) if k.size > 1 else 0.0,
            median=float(q[0]), p90=float(q[1]), p99=float(q[2]), max=float(k.max()),
            top1=float(np.concatenate(self._same).mean()),
            dp_rms=None if dp is None or dp.size != k.size else float(np.sqrt((dp ** 2).mean())),
            n_tokens=int(k.size),
        )


def kld_stats(ref_logits_chunks: Iterable[np.ndarray], logits_chunks: Iterable[np.ndarray],
              targets_chunks: Iterable[Sequence[int]] | None = None) -> KldStats:
    """KL(ref || model) statistics over matching chunks of float32 logits rows (n, vocab).

    Chunks are consumed one pair at a time (generators welcome), so memory stays
    at one chunk of each; ``targets_chunks`` (the correct next tokens) adds Δp.
    """
    acc = KldAccumulator()
    targets_iter = iter(targets_chunks) if targets_chunks is not None else None
    for ref, cur in zip(ref_logits_chunks, logits_chunks, strict=True):
        acc.add(ref, cur, None if targets_iter is None else next(targets_iter))
    return acc.stats()
