"""HellaSwag accuracy through the patched runtime, scored as ``llama-perplexity
--hellaswag`` scores it (``hellaswag_score`` in the pinned llama.cpp's
tools/perplexity/perplexity.cpp; docs/hellaswag.md):

* the task file is llama-perplexity's layout, 6 lines per task: context, the index
  of the gold ending (0-3), the four endings; plain text or ``.bz2``;
* each ending becomes ``context + " " + ending``, tokenized with BOS where the
  vocabulary adds one (``common_tokenize(ctx, text, true)``);
* the leading tokens all four sequences share are evaluated once; an ending's score
  is the mean log-probability of its tokens after that shared prefix, the first of
  them predicted from the prefix's last position;
* the task is right when the gold ending scores highest (the first of equal scores);
* attention as the tool computes it by default: flash attention (:func:`load_options`).

The first ``n`` tasks of the file are scored, in order; llama-perplexity draws its
tasks at random even when it takes them all (:func:`llama_perplexity_order`).
"""

from __future__ import annotations

import bz2
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__, runtime
from ..errors import SwggufError
from ..formats.gguf_io import shares_readers
from ..progress import Progress, no_progress
from ..runtime import vocab
from ..runtime.branches import MAX_UBATCH
from .evaluator import Evaluator, ModelSpec, as_spec, check_inputs
from .perplexity import FileInfo, file_info
from .stats import log_softmax

TASK_LINES = 6  # context, gold ending, four endings
N_ENDINGS = 4
DEFAULT_TASKS = 400  # llama-perplexity's --hellaswag-tasks default
STAGE = "hellaswag"
LAYOUT = "6 lines per task: context, gold ending 0-3, four endings (llama-perplexity --hellaswag's layout)"
SCORING = ("llama-perplexity --hellaswag: context + ' ' + ending tokenized with BOS where the vocabulary adds one; "
           "score = mean log-probability of the ending's tokens after the prefix the four sequences share; "
           "right when the gold ending scores highest; flash attention on, as the tool's default on the CPU")


@dataclass(frozen=True)
class Task:
    context: str
    gold: int  # index of the right ending
    endings: tuple[str, ...]


@dataclass(frozen=True)
class TaskFile:
    """The first tasks of a HellaSwag file, in order."""

    source: str  # the file's path
    tasks: tuple[Task, ...]
    n_in_file: int  # tasks the whole file holds

    def __len__(self) -> int:
        return len(self.tasks)


def read_tasks(path: str | Path, n: int | None = None) -> TaskFile:
    """The first ``n`` tasks (all with None) of a HellaSwag file in llama-perplexity's layout."""
    path = Path(path)
    if n is not None and n < 1:
        raise SwggufError(f"--tasks must be at least 1, got {n}")
    lines = _read_lines(path)
    if not lines or len(lines) % TASK_LINES:
        raise SwggufError(f"{len(lines)} lines, not a positive multiple of {TASK_LINES}: expected {LAYOUT}", path)
    in_file = len(lines) // TASK_LINES
    count = in_file if n is None else min(n, in_file)
    tasks = tuple(_task(lines[i * TASK_LINES:(i + 1) * TASK_LINES], i, path) for i in range(count))
    return TaskFile(str(path), tasks, in_file)


def _read_lines(path: Path) -> list[str]:
    """The file's lines as std::getline splits them: on '\\n' only, nothing translated."""
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise SwggufError("no such HellaSwag task file", path) from None
    except IsADirectoryError:
        raise SwggufError("is a directory, not a HellaSwag task file", path) from None
    except UnicodeDecodeError as err:
        raise SwggufError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None
    except (OSError, EOFError) as err:  # e.g. a damaged .bz2
        raise SwggufError(f"cannot read it ({err})", path) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _task(block: list[str], index: int, path: Path) -> Task:
    label = block[1].strip()
    if label not in {str(i) for i in range(N_ENDINGS)}:
        raise SwggufError(f"line {index * TASK_LINES + 2} (task {index + 1}): the gold ending must be 0-"
                          f"{N_ENDINGS - 1}, got {block[1][:40]!r}; expected {LAYOUT}", path)
    return Task(block[0], int(label), tuple(block[2:]))


# --- tokens and scores -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskTokens:
    sequences: tuple[tuple[int, ...], ...]  # context + " " + ending, one per ending
    prefix: int  # leading tokens the sequences share: evaluated once
    gold: int


def shared_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Leading tokens every sequence shares, as llama-perplexity counts them, but leaving
    each sequence at least one token to score (an ending that tokenizes to a prefix of the
    others would make llama-perplexity read past its end)."""
    n = 0
    for column in zip(*sequences):
        if any(t != column[0] for t in column):
            break
        n += 1
    return min(n, min(len(s) for s in sequences) - 1)


def task_tokens(model: str | Path, tasks: Sequence[Task], ctx: int) -> list[TaskTokens]:
    """Every task in ``model``'s tokens; SwggufError when one does not fit ``ctx``."""
    out = []
    for i, task in enumerate(tasks):
        seqs = tuple(tuple(vocab.tokenize(model, f"{task.context} {e}", add_bos=True)) for e in task.endings)
        prefix = shared_prefix(seqs)
        if prefix < 1:
            raise SwggufError(f"task {i + 1}: its four sequences share no first token to predict the endings from")
        longest = max(len(s) for s in seqs)
        if longest > ctx:
            raise SwggufError(f"task {i + 1} is {longest} tokens long, more than the context of {ctx} (--ctx)")
        out.append(TaskTokens(seqs, prefix, task.gold))
    return out


def ending_scores(ev: Evaluator, task: TaskTokens) -> np.ndarray:
    """Mean log-probability per token of each ending after the shared prefix."""
    k = task.prefix
    first = log_softmax(ev.logits(task.sequences[0][:k])[k - 1:k])[0]
    # an ending's last token is predicted, never evaluated
    rows = ev.branches(k, [seq[k:-1] for seq in task.sequences if len(seq) > k + 1])
    scores = np.empty(len(task.sequences))
    for i, seq in enumerate(task.sequences):
        logp = [first[seq[k]]]
        if len(seq) > k + 1:
            lp = log_softmax(rows.pop(0))
            logp.extend(lp[np.arange(len(seq) - k - 1), list(seq[k + 1:])])
        scores[i] = np.mean(logp)
    return scores


# --- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paired:
    """One model against another on the same tasks."""

    diff: float  # accuracy difference, as a fraction
    stderr: float  # of the mean per-task difference (paired: far below either accuracy's own)
    agree: float  # share of tasks where both chose the same ending


@dataclass(frozen=True)
class HellaswagStats:
    choices: tuple[int, ...]  # the ending chosen for each task
    golds: tuple[int, ...]

    @property
    def n_tasks(self) -> int:
        return len(self.choices)

    @property
    def right(self) -> np.ndarray:
        return np.array(self.choices) == np.array(self.golds)

    @property
    def accuracy(self) -> float:
        return float(self.right.mean())

    @property
    def stderr(self) -> float:
        """Binomial: sqrt(p (1 - p) / n)."""
        p = self.accuracy
        return math.sqrt(p * (1 - p) / self.n_tasks)

    def versus(self, other: HellaswagStats) -> Paired:
        d = self.right.astype(float) - other.right.astype(float)
        err = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
        return Paired(float(d.mean()), err, float((np.array(self.choices) == np.array(other.choices)).mean()))

    def as_dict(self) -> dict:
        return {"n_tasks": self.n_tasks, "correct": int(self.right.sum()), "accuracy": self.accuracy,
                "stderr": self.stderr, "choices": "".join(map(str, self.choices))}


def load_options(ctx: int, n_threads: int | None) -> runtime.LoadOptions:
    """Contexts as llama-perplexity --hellaswag makes them (flash attention: its default,
    auto, is on for the CPU), with a sequence per ending so that the four endings are
    evaluated in one decode, in ubatches small enough for llama.cpp to compute them
    right (:mod:`swgguf.runtime.branches`)."""
    return runtime.LoadOptions(n_ctx=ctx, n_batch=ctx, n_threads=n_threads, n_seq=N_ENDINGS, flash_attn=True,
                               n_ubatch=MAX_UBATCH)


def tasks_info(tasks: TaskFile) -> dict:
    return {"source": tasks.source, "n_tasks": len(tasks), "of": tasks.n_in_file, "which": "the first, in order"}


def run_tasks(models: Sequence[Evaluator], tokens: Sequence[Sequence[TaskTokens]], progress: Progress = no_progress,
              stage: str = STAGE) -> list[HellaswagStats]:
    """Score every task with every model (``tokens[m]``: the tasks in model m's tokens),
    task by task. Progress: ``stage``, one step per task and model."""
    n = len(tokens[0])
    choices: list[list[int]] = [[] for _ in models]
    for i in range(n):
        for m, ev in enumerate(models):
            choices[m].append(int(np.argmax(ending_scores(ev, tokens[m][i]))))  # argmax: the first of equals
            progress(stage, i * len(models) + m + 1, n * len(models), ev.name)
    golds = tuple(t.gold for t in tokens[0])
    return [HellaswagStats(tuple(c), golds) for c in choices]


def llama_perplexity_order(n_file: int, n_tasks: int | None = None) -> list[int]:
    """The tasks (0-based, in the file) in the order ``llama-perplexity --hellaswag`` takes
    them from a file of ``n_file`` tasks: always at random, even all of them, by
    ``std::mt19937 rng(1)`` and libstdc++'s ``uniform_int_distribution`` (Lemire's
    method for a 32-bit generator), each drawn task removed from those left. numpy's
    legacy RandomState(1) yields the same 32-bit words as std::mt19937(1)."""
    rng = np.random.RandomState(1)
    left, order = list(range(n_file)), []
    for _ in range(n_file if n_tasks is None else n_tasks):
        r = len(left)
        product = int(rng.randint(0, 2**32, dtype=np.uint32)) * r
        if product & 0xFFFFFFFF < r:
            threshold = (2**32 - r) % r
            while product & 0xFFFFFFFF < threshold:
                product = int(rng.randint(0, 2**32, dtype=np.uint32)) * r
        order.append(left.pop(product >> 32))
    return order


# --- files ---------------------------------------------------------------------------------------


@dataclass
class HellaswagResult:
    file: str
    name: str
    info: FileInfo
    stats: HellaswagStats
    vs_ref: Paired | None = None
    tokens_per_s: float = float("nan")
    is_ref: bool = False

    def as_dict(self) -> dict:
        v = self.vs_ref
        return {"file": self.file, "name": self.name, "is_ref": self.is_ref, "type": self.info.type,
                "size_bytes": self.info.size_bytes, "sidecar_bytes": self.info.sidecar_bytes, **self.stats.as_dict(),
                "vs_ref": None if v is None else {"diff": v.diff, "stderr": v.stderr, "agree": v.agree},
                "tokens_per_s": self.tokens_per_s if math.isfinite(self.tokens_per_s) else None}


@shares_readers
def hellaswag(paths: Sequence[str | Path | ModelSpec], tasks: TaskFile, ref: str | Path | ModelSpec | None = None,
              ctx: int = 512, n_threads: int | None = None, progress: Progress = no_progress) -> list[HellaswagResult]:
    """HellaSwag accuracy of each file on ``tasks`` and, with ``ref``, each file against the
    reference on the same tasks (paired). The reference's own result comes first (``is_ref``).
    Every file is tokenized by its own vocabulary. Progress: stage "hellaswag"."""
    specs = ([as_spec(ref)] if ref is not None else []) + [as_spec(p) for p in paths]
    if len(specs) == (ref is not None):
        raise SwggufError("no file to evaluate")
    if not tasks:
        raise SwggufError("no HellaSwag task to score")
    check_inputs(specs)
    by_path: dict[Path, list[TaskTokens]] = {}
    for s in specs:
        if s.path.resolve() not in by_path:
            by_path[s.path.resolve()] = task_tokens(s.path, tasks.tasks, ctx)
    options = load_options(ctx, n_threads)
    evaluators: list[Evaluator] = []
    try:
        for s in specs:
            evaluators.append(Evaluator(s, options))
        stats = run_tasks(evaluators, [by_path[s.path.resolve()] for s in specs], progress)
    finally:
        for e in evaluators:
            e.close()
    out = [HellaswagResult(str(s.path), s.name, file_info(s.path), st, tokens_per_s=e.tokens_per_s)
           for s, st, e in zip(specs, stats, evaluators)]
    if ref is not None:
        out[0].is_ref = True
        for r in out[1:]:
            r.vs_ref = r.stats.versus(out[0].stats)
    return out


def report(results: Sequence[HellaswagResult], tasks: TaskFile, ctx: int) -> dict:
    """The JSON document of ``swgguf ppl --hellaswag --json``."""
    return {
        "swgguf_version": __version__,
        "tasks": tasks_info(tasks),
        "ctx": ctx, "scoring": SCORING,
        "stderr": "binomial, sqrt(p (1 - p) / n); vs_ref: paired, std of the per-task difference / sqrt(n)",
        "reference": next((r.file for r in results if r.is_ref), None),
        "results": [r.as_dict() for r in results],
    }
