"""Verification: perplexity with each candidate zeroed alone, against the unmodified model.

Perplexity is exp(mean token NLL) over non-overlapping windows of ``n_ctx``
tokens (each window predicts its tokens 2..n from the preceding ones), with the
standard error from the spread of the per-token NLL: se(ppl) = ppl x sd(nll)/sqrt(N).
The ratio to the unmodified model is exp(mean of the paired per-token NLL
differences), and its standard error comes from those paired differences, which
is much tighter than comparing two independent perplexities. Every pass reads
the same first ``chunks`` windows of the text (``--chunks``, default
:data:`DEFAULT_CHUNKS`), so a long ``--text`` costs no more than a short one.

A candidate is a *super weight* when its removal alone raises perplexity by at
least ``factor`` (default 1.25: on SmolLM2-135M the two super weights give 5.7x
and 1.4x on WikiText-2, the next candidates stay within a few percent).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Sequence

import torch
from torch import nn

from ..evaluate.text import cap_windows
from ..progress import Progress, no_progress
from .core import Candidate, Coordinate, zeroed

DEFAULT_VERIFY_FACTOR = 1.25
DEFAULT_N_CTX = 512
# --chunks: windows of the text verified (each pass, i.e. the unmodified model and each
# candidate zeroed). 8 x 512 = 4096 tokens puts the paired standard error of a ratio near 0.01,
# far below the 1.25 threshold, while bounding a pass to 8 forward passes of --ctx tokens
# whatever the length of --text (all of WikiText-2's test split is ~610 windows of SmolLM2's tokens).
DEFAULT_CHUNKS = 8
STAGE = "verifying"
# leading_tokens' first guess at the characters that hold n tokens: generous for prose and
# code (~4 characters a token); the prefix doubles until it holds enough, plus a margin of
# tokens that a cut inside a word (a text without line breaks) may change
CHARS_PER_TOKEN = 8
CUT_MARGIN = 64
DEFAULT_TEXT_NAME = "default_text.txt"


def default_text() -> str:
    """The embedded verification text (swgguf/data/default_text.txt, written for swgguf)."""
    return resources.files("swgguf").joinpath("data", DEFAULT_TEXT_NAME).read_text(encoding="utf-8")


@dataclass
class Perplexity:
    ppl: float
    se: float
    nll: torch.Tensor = field(repr=False)  # per-token negative log-likelihood, in text order

    @property
    def n_tokens(self) -> int:
        return int(self.nll.numel())


@dataclass
class Verification:
    candidate: Candidate
    perplexity: Perplexity
    ratio: float
    ratio_se: float
    is_super_weight: bool


@dataclass
class VerificationResult:
    baseline: Perplexity
    factor: float
    n_ctx: int
    results: list[Verification]
    seconds: float
    n_windows: int = 0  # windows of the text each pass evaluated
    chunks: int | None = None  # the cap on them (--chunks; None: every window of the text)

    @property
    def super_weights(self) -> list[Verification]:
        return [v for v in self.results if v.is_super_weight]


def leading_tokens(tokenizer, text: str, n_tokens: int | None) -> list[int]:
    """The first ``n_tokens`` tokens of ``text`` (all of them: None), tokenizing only a prefix
    that ends at a line break: the verification of 8 windows reads a few KB of a 100 MB text.
    Tokenizers split at white space before merging (byte-level BPE's pre-tokenizer,
    SentencePiece's split_by_whitespace), so a prefix ending at a line break has the
    tokens the whole text starts with."""
    if n_tokens is None:
        return list(tokenizer(text).input_ids)
    size = n_tokens * CHARS_PER_TOKEN
    while True:
        cut = len(text) if size >= len(text) else (text.rfind("\n", 0, size) + 1 or size)
        ids = tokenizer(text[:cut]).input_ids
        if len(ids) >= n_tokens + CUT_MARGIN or cut >= len(text):
            return list(ids[:n_tokens])
        size *= 2


def windows(token_ids: Sequence[int], n_ctx: int) -> list[torch.Tensor]:
    """Non-overlapping windows of at most ``n_ctx`` tokens; a last window of one token is dropped."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    return [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx) if len(ids[i:i + n_ctx]) >= 2]


@torch.no_grad()
def window_nll(model: nn.Module, wins: Sequence[torch.Tensor], zero: Sequence[Coordinate] = (),
               each: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Per-token NLL over ``wins`` with the ``zero`` weights set to 0; ``each()`` after every window."""
    parts = []
    with zeroed(model, zero):
        for w in wins:
            logits = model(input_ids=w[None], use_cache=False).logits[0, :-1].float()
            parts.append(torch.nn.functional.cross_entropy(logits, w[1:], reduction="none"))
            each()
    if not parts:
        raise ValueError("the verification text has fewer than 2 tokens")
    return torch.cat(parts)


def token_nll(model: nn.Module, token_ids: Sequence[int], n_ctx: int = DEFAULT_N_CTX,
              zero: Sequence[Coordinate] = ()) -> torch.Tensor:
    """Per-token NLL of ``token_ids`` under ``model`` with the ``zero`` weights set to 0."""
    return window_nll(model, windows(token_ids, n_ctx), zero)


def perplexity_from_nll(nll: torch.Tensor) -> Perplexity:
    mean = float(nll.mean())
    sd = float(nll.std()) if nll.numel() > 1 else 0.0
    ppl = math.exp(mean)
    return Perplexity(ppl=ppl, se=ppl * sd / math.sqrt(nll.numel()), nll=nll)


def perplexity(model: nn.Module, token_ids: Sequence[int], n_ctx: int = DEFAULT_N_CTX,
               zero: Sequence[Coordinate] = ()) -> Perplexity:
    return perplexity_from_nll(token_nll(model, token_ids, n_ctx, zero))


def _compared(c: Candidate, p: Perplexity, baseline: Perplexity, factor: float) -> Verification:
    diff = p.nll - baseline.nll
    ratio = math.exp(float(diff.mean()))
    ratio_se = ratio * (float(diff.std()) if diff.numel() > 1 else 0.0) / math.sqrt(diff.numel())
    return Verification(candidate=c, perplexity=p, ratio=ratio, ratio_se=ratio_se, is_super_weight=ratio >= factor)


def verify_candidates(model: nn.Module, token_ids: Sequence[int], candidates: Sequence[Candidate],
                      factor: float = DEFAULT_VERIFY_FACTOR, n_ctx: int = DEFAULT_N_CTX,
                      chunks: int | None = None, progress: Progress = no_progress) -> VerificationResult:
    """Zero each candidate alone and compare perplexity with the unmodified model, on the
    first ``chunks`` windows of ``n_ctx`` tokens (None: all). Progress: stage ``verifying``,
    one step per window of each pass (the unmodified model's, then each candidate's)."""
    if factor <= 1:
        raise ValueError(f"verification factor must be > 1, got {factor}")
    start = time.perf_counter()
    wins = windows(token_ids, n_ctx)
    wins = wins[:cap_windows(len(wins), chunks)]
    steps = itertools.count(1)
    total = len(wins) * (1 + len(candidates))

    def step(item: str) -> Callable[[], None]:
        return lambda: progress(STAGE, next(steps), total, item)

    progress(STAGE, 0, total, "unmodified model")  # the stage starts now, not after its first window
    baseline = perplexity_from_nll(window_nll(model, wins, (), step("unmodified model")))
    results = [_compared(c, perplexity_from_nll(window_nll(model, wins, [c.coordinate], step(_zeroed_name(c)))),
                         baseline, factor) for c in candidates]
    return VerificationResult(baseline=baseline, factor=factor, n_ctx=n_ctx, results=results,
                              seconds=time.perf_counter() - start, n_windows=len(wins), chunks=chunks)


def _zeroed_name(c: Candidate) -> str:
    layer, row, col = c.coordinate
    return f"layer {layer} [{row}, {col}] zeroed"
