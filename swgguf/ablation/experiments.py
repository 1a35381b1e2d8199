"""The super-weight paper's experiments on a GGUF file, in llama.cpp: the library
call behind ``swgguf ablate`` (the command's help lists them; docs/ablate.md
has the measurements).

Every experiment is a set of evaluators run window by window against the
original file (:func:`swgguf.evaluate.run_windows`): the file with its
super-weight scalars scaled by the runtime (:func:`scaled`), and for +SA one
whose first position comes from the original (:class:`RestoreSA`).
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import runtime
from ..errors import SwggufError
from ..evaluate import (Evaluator, KldStats, ModelSpec, PplStats, Text, Window, embedded_corpus, run_windows,
                        text_windows)
from ..evaluate.evaluator import check_inputs
from ..evaluate.hellaswag import TaskFile, TaskTokens, load_options, run_tasks, task_tokens
from ..evaluate.stats import probabilities
from ..formats.files import work_dir
from ..formats.gguf_io import shares_readers
from ..formats.manifest import Manifest
from ..progress import Progress, no_progress
from .results import Ablation, HellaswagAblation, HellaswagRow, RestoreResult, ScalePoint, StopwordRow
from .sites import carries_scalars, find_super_weights, pruned_leftover, write_scalar_copy

DEFAULT_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_CHUNKS = 32
N_STOPWORDS = 10  # the most common tokens of the text
PROMPT_MIN = 16  # a prompt is a prefix of a window at least this long...
PROMPT_STEP = 8  # ...ending every PROMPT_STEP tokens
SA_POSITIONS = 1  # positions of each window computed with the super weights under --restore-sa
STAGE = "ablate"  # progress stage of the evaluation; the stop words report f"{STAGE} stop words"


# --- evaluators ------------------------------------------------------------------------------


def scaled(driver: Path, alpha: float, options: runtime.LoadOptions, n_scalars: int) -> Evaluator:
    """``driver`` with its super-weight scalars applied as alpha * w, checked to be
    ``n_scalars`` (a runtime that applied fewer would make the experiment a lie)."""
    ev = Evaluator(ModelSpec(driver, f"α={alpha:g}", runtime.ContextSettings(sw_scale=alpha)), options)
    try:
        applied = runtime.applied_scalar_count(ev.llama)
    except SwggufError as err:
        ev.close()
        raise SwggufError(str(err), driver) from None
    if applied != n_scalars:
        ev.close()
        raise SwggufError(f"the runtime applies {applied} super-weight scalars, {n_scalars} expected", driver)
    return ev


class RestoreSA(Evaluator):
    """Super weights zeroed, except that the first ``n_prefix`` positions of every window
    are computed by the original model: their KV cache (and logits) is copied into the
    pruned context, which then evaluates the rest. The super activation lives at the
    first position (docs/ablate.md), so this restores it and nothing else: every other
    position's own computation runs without the super weights."""

    def __init__(self, pruned: Evaluator, original: Evaluator, n_prefix: int = SA_POSITIONS) -> None:
        self.spec = ModelSpec(pruned.spec.path, "α=0 +SA", pruned.spec.settings)
        self.llama, self.original = pruned.llama, original.llama
        self._owned = (pruned, original)
        self.n_prefix = n_prefix
        self.seconds, self.tokens = 0.0, 0

    def compute_logits(self, tokens: Sequence[int]) -> np.ndarray:
        try:
            return runtime.logits_with_prefix_from(self.original, self.llama, tokens, self.n_prefix)
        except SwggufError as err:
            raise SwggufError(str(err), self.spec.path) from None

    def close(self) -> None:
        for e in self._owned:
            e.close()


# --- stop words ----------------------------------------------------------------------------------


def prompt_positions(window_len: int) -> list[int]:
    """Last positions of the prompts cut from one window (prefixes of PROMPT_MIN.. tokens)."""
    return list(range(PROMPT_MIN - 1, window_len - 1, PROMPT_STEP))


def common_tokens(wins: Sequence[Window], k: int = N_STOPWORDS) -> list[tuple[int, int]]:
    """The ``k`` most common scored tokens of ``wins``: (token, count)."""
    counts = Counter(t for w in wins for t in w.targets)
    return counts.most_common(k)


def stopword_probabilities(original: Evaluator, pruned: Evaluator, wins: Sequence[Window], n_prompts: int,
                           tokens: Sequence[int], progress: Progress = no_progress,
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean next-token probability of ``tokens`` over ``n_prompts`` prompts for both models."""
    per_window = len(prompt_positions(len(wins[0].tokens)))
    if per_window == 0:
        raise SwggufError(f"--ctx is too short for stop-word prompts (at least {PROMPT_MIN + 1} tokens)")
    need = math.ceil(n_prompts / per_window)
    if need > len(wins):
        raise SwggufError(f"{n_prompts} prompts need {need} windows of the text, it has {len(wins)}: "
                          "use a longer text or fewer --stopwords prompts")
    sums = np.zeros((2, len(tokens)))
    left = n_prompts
    for i, w in enumerate(wins[:need]):
        rows = prompt_positions(len(w.tokens))[:left]
        for j, ev in enumerate((original, pruned)):
            sums[j] += probabilities(ev.logits(w.tokens), rows, tokens).sum(axis=0)
            progress(f"{STAGE} stop words", 2 * i + j + 1, 2 * need, ev.name)
        left -= len(rows)
    return sums[0] / n_prompts, sums[1] / n_prompts, n_prompts


def stopword_rows(path: Path, text: Text, wins: Sequence[Window], ctx: int, original: Evaluator, pruned: Evaluator,
              n_prompts: int, progress: Progress) -> list[StopwordRow]:
    """The text's most common tokens (in the evaluated windows), their probability with
    and without the super weights over ``n_prompts`` prompts from the whole text."""
    common = common_tokens(wins)
    ids = [t for t, _ in common]
    all_wins = text_windows(path, text, ctx, None, llama_compat=False)
    p_orig, p_pruned, _ = stopword_probabilities(original, pruned, all_wins, n_prompts, ids, progress)
    return [StopwordRow(t, runtime.vocab.token_text(path, t), c, float(a), float(b))
            for (t, c), a, b in zip(common, p_orig, p_pruned)]


# --- HellaSwag -----------------------------------------------------------------------------------


def hellaswag_rows(tasks: TaskFile, tokens: Sequence[TaskTokens], original: Evaluator, scales: Sequence[float],
                   variants: Sequence[Evaluator], progress: Progress) -> HellaswagAblation:
    """HellaSwag accuracy of the original and of every variant (one per scale, then +SA
    if present), all on the same tasks (``tokens``: in the file's tokens)."""
    stats = run_tasks([original, *variants], [tokens] * (1 + len(variants)), progress, stage=f"{STAGE} hellaswag")
    rows = [HellaswagRow(f"α={a:g}", a, False, st) for a, st in zip(scales, stats[1:])]
    if len(variants) > len(scales):
        rows.append(HellaswagRow("α=0 +SA", 0.0, True, stats[-1]))
    return HellaswagAblation(tasks, stats[0], rows)


# --- the experiments -------------------------------------------------------------------------------


def check_options(stopwords: int | None, scales: Sequence[float]) -> list[float]:
    """The scales to run (0 always among them), sorted; SwggufError on a bad option."""
    if stopwords is not None and stopwords < 1:
        raise SwggufError(f"--stopwords must be at least 1 prompt, got {stopwords}")
    scales = sorted({float(a) for a in scales} | {0.0})
    if not all(math.isfinite(a) for a in scales):
        raise SwggufError(f"--scale values must be finite numbers, got {scales}")
    return scales


@shares_readers
def ablate(path: str | Path, manifest: Manifest | None = None, text: Text | None = None, ctx: int = 512,
           chunks: int | None = DEFAULT_CHUNKS, scales: Sequence[float] = DEFAULT_SCALES,
           restore_sa: bool = False, stopwords: int | None = None, n_threads: int | None = None,
           workdir: str | Path | None = None, hellaswag: TaskFile | None = None,
           progress: Progress = no_progress) -> Ablation:
    """Run the experiments on ``path``; alpha = 0 (pruning) is always among the scales.
    With ``hellaswag``, also the HellaSwag accuracy of the original and of every variant."""
    path = Path(path)
    check_inputs([ModelSpec(path)])
    scales = check_options(stopwords, scales)
    text = text or embedded_corpus()
    sites = find_super_weights(path, manifest)
    wins = text_windows(path, text, ctx, chunks, llama_compat=False)
    hs_tokens = task_tokens(path, hellaswag.tasks, ctx) if hellaswag is not None else None
    options = runtime.LoadOptions(n_ctx=ctx, n_batch=ctx, n_threads=n_threads)
    with ExitStack() as files:
        driver, how = path, "file"
        if not carries_scalars(path, sites):
            tmp = files.enter_context(work_dir(workdir or tempfile.gettempdir(), "ablate"))
            driver, how = write_scalar_copy(path, tmp / path.name, sites), "temporary copy"
        with ExitStack() as stack:
            original, models, evaluators = variants(stack, path, driver, scales, restore_sa, len(sites), options)
            ppls, klds, ref_ppl = run_windows(evaluators, wins, original, progress, stage=STAGE)
            result = Ablation(str(path), how, sites, text, ctx, len(wins), ref_ppl,
                              [ScalePoint(a, p, k) for a, p, k in zip(scales, ppls, klds)],
                              leftover=pruned_leftover(driver, sites))
            if restore_sa:
                result.restore_sa = _restored(result, ppls[-1], klds[-1])
            if stopwords:
                result.stopwords = stopword_rows(path, text, wins, ctx, original, models[scales.index(0.0)],
                                                 stopwords, progress)
                result.n_prompts = stopwords
        if hellaswag is not None:  # contexts of their own, as llama-perplexity --hellaswag makes them
            with ExitStack() as stack:
                original, _, evaluators = variants(stack, path, driver, scales, restore_sa, len(sites),
                                                   load_options(ctx, n_threads))
                result.hellaswag = hellaswag_rows(hellaswag, hs_tokens, original, scales, evaluators, progress)
    return result


def variants(stack: ExitStack, path: Path, driver: Path, scales: Sequence[float], restore_sa: bool, n_sites: int,
             options: runtime.LoadOptions) -> tuple[Evaluator, list[Evaluator], list[Evaluator]]:
    """The original, one evaluator per scale, and those with the +SA one last; all closed
    when ``stack`` closes."""
    original = _opened(stack, Evaluator(ModelSpec(path, "original"), options))
    models = [_opened(stack, scaled(driver, a, options, n_sites)) for a in scales]
    evaluators: list[Evaluator] = list(models)
    if restore_sa:
        evaluators.append(_opened(stack, RestoreSA(scaled(driver, 0.0, options, n_sites),
                                                   Evaluator(ModelSpec(path, "original (SA prefix)"), options))))
    return original, models, evaluators


def _opened(stack: ExitStack, ev: Evaluator) -> Evaluator:
    """``ev``, closed when ``stack`` closes."""
    stack.callback(ev.close)
    return ev


def _restored(result: Ablation, ppl: PplStats, kld: KldStats) -> RestoreResult:
    """The +SA row: how much of pruning's loss increase restoring the SA takes back."""
    pruned = result.point(0.0).ppl
    gap = pruned.nll - result.original.nll
    return RestoreResult(ppl, kld, (pruned.nll - ppl.nll) / gap if gap else float("nan"), SA_POSITIONS)
