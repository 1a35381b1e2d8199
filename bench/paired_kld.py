"""KL divergence of many files against one reference on the same tokens, one file at a
time: the reference's logits are computed once and kept on disk (a 1.5B model's F16
reference is the slowest file to run, and holding a dozen models in memory at once does
not fit a small machine). Per-token KLDs are kept, so two files are compared by their
paired differences (same tokens): the standard error of a difference of means is then
far below either mean's own.

Used by bench/pareto_sized.py.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf import runtime  # noqa: E402
from swgguf.evaluate import Evaluator, KldAccumulator, ModelSpec, PplAccumulator, Window  # noqa: E402


@dataclass
class Scored:
    ppl: float
    ppl_stderr: float
    kld: np.ndarray  # per token
    top1: float
    tokens_per_s: float

    def summary(self) -> dict:
        k = self.kld
        return {"ppl": self.ppl, "ppl_stderr": self.ppl_stderr, "kld_mean": float(k.mean()),
                "kld_stderr": float(k.std(ddof=1) / math.sqrt(k.size)), "kld_p99": float(np.quantile(k, 0.99)),
                "top1": self.top1, "n_tokens": int(k.size), "tokens_per_s": self.tokens_per_s}


def reference_logits(ref: Path, wins: list[Window], folder: Path, ctx: int) -> tuple[list[Path], float]:
    """The reference's scored logits rows per window as float32 .npy files (reused when
    present), and its perplexity."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"window{i:03d}.npy" for i in range(len(wins))]
    ppl_file = folder / "ppl.txt"
    if all(p.is_file() for p in paths) and ppl_file.is_file():
        return paths, float(ppl_file.read_text())
    ev = Evaluator(ModelSpec(ref), runtime.LoadOptions(n_ctx=ctx, n_batch=ctx))
    acc = PplAccumulator()
    try:
        for w, p in zip(wins, paths):
            logits = ev.logits(w.tokens)
            acc.add(logits, w)
            np.save(p, logits[w.score_from: len(w.tokens) - 1].astype(np.float32))
    finally:
        ev.close()
    ppl = acc.stats().ppl
    ppl_file.write_text(repr(ppl))
    return paths, ppl


def score(path: Path, wins: list[Window], ref_rows: list[Path], ctx: int) -> Scored:
    """Perplexity and per-token KLD of ``path`` against the stored reference rows."""
    ev = Evaluator(ModelSpec(path), runtime.LoadOptions(n_ctx=ctx, n_batch=ctx))
    ppl, kld = PplAccumulator(), KldAccumulator()
    try:
        for w, rows in zip(wins, ref_rows):
            logits = ev.logits(w.tokens)
            ppl.add(logits, w)
            kld.add(np.load(rows), logits[w.score_from: len(w.tokens) - 1], w.targets)
    finally:
        ev.close()
    p, k = ppl.stats(), kld.stats()
    return Scored(p.ppl, p.stderr, kld.values(), k.top1, ev.tokens_per_s)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of a - b per token with its standard error, and the relative change of the mean."""
    d = a - b
    return {"diff_mean": float(d.mean()), "diff_stderr": float(d.std(ddof=1) / math.sqrt(d.size)),
            "lower_pct": float(100 * (1 - a.mean() / b.mean()))}
