"""Perplexity and KL divergence of GGUF files on a text: the library call behind
``swgguf ppl`` (and the demo's and the benchmarks' scores).

With a reference, every file's next-token distributions are compared with the
reference's: KL(ref || file) per scored token, reported as mean +- standard
error, median, p90, p99 and max, plus the share of tokens where both argmaxes
agree and the RMS change of the correct token's probability. The scoring
conventions are :mod:`swgguf.evaluate.text`'s (docs/ppl.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import __version__, runtime
from ..errors import SwggufError
from ..formats.census import census
from ..formats.gguf_io import shares_readers
from ..progress import Progress, no_progress
from .evaluator import Evaluator, ModelSpec, as_spec, check_inputs, check_same_vocab, run_windows
from .stats import KldStats, PplStats
from .text import Text, Window, embedded_corpus, text_windows

CONVENTION_SWGGUF = ("swgguf: consecutive non-overlapping windows of ctx tokens (BOS first where the "
                     "vocabulary adds one), every next-token prediction in a window scored")
CONVENTION_COMPAT = ("llama-compat: llama-perplexity's chunks of ctx tokens, BOS replacing each chunk's "
                     "first token, only the second half of each chunk scored")


@dataclass(frozen=True)
class FileInfo:
    type: str  # llama.cpp's file type, e.g. Q4_K_M, from general.file_type
    size_bytes: int
    n_params: int  # elements of the model's own tensors (sidecars excluded)
    sidecar_bytes: int
    bpw: float  # 8 * all tensor bytes (sidecars included) / n_params


def file_info(path: str | Path) -> FileInfo:
    c = census(path)
    bpw = 8.0 * (c.weight_bytes + c.sidecar_bytes) / c.n_params if c.n_params else float("nan")
    return FileInfo(type=c.file_type, size_bytes=c.file_bytes, n_params=c.n_params, sidecar_bytes=c.sidecar_bytes,
                    bpw=bpw)


@dataclass
class Result:
    file: str
    name: str
    info: FileInfo | None
    ppl: PplStats
    kld: KldStats | None = None
    delta_ppl: float | None = None  # ppl - the reference's ppl
    tokens_per_s: float = float("nan")
    is_ref: bool = False

    def as_dict(self) -> dict:
        k = self.kld
        info = self.info
        return {
            "file": self.file, "name": self.name, "is_ref": self.is_ref,
            "type": info.type if info else None,
            "size_bytes": info.size_bytes if info else None,
            "bpw": _finite(info.bpw) if info else None,
            "sidecar_bytes": info.sidecar_bytes if info else None,
            "n_params": info.n_params if info else None,
            "ppl": self.ppl.ppl, "ppl_stderr": self.ppl.stderr, "nll": self.ppl.nll,
            "n_tokens": self.ppl.n_tokens,
            "delta_ppl": self.delta_ppl,
            "kld_mean": k.mean if k else None, "kld_stderr": k.stderr if k else None,
            "kld_median": k.median if k else None, "kld_p90": k.p90 if k else None,
            "kld_p99": k.p99 if k else None, "kld_max": k.max if k else None,
            "top1": k.top1 if k else None, "dp_rms": k.dp_rms if k else None,
            "tokens_per_s": _finite(self.tokens_per_s),
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@shares_readers
def evaluate(paths: Sequence[str | Path | ModelSpec], ref: str | Path | ModelSpec | None = None,
             text: Text | None = None, ctx: int = 512, chunks: int | None = None,
             llama_compat: bool = False, n_threads: int | None = None,
             progress: Progress = no_progress) -> list[Result]:
    """Perplexity of each file on ``text`` (default: the embedded corpus) and, with
    ``ref``, its KL divergence from the reference. The reference's own result comes
    first in the list (``is_ref``). Progress: stage "ppl", model by model."""
    specs = [as_spec(p) for p in paths]
    ref_spec = as_spec(ref) if ref is not None else None
    if not specs:
        raise SwggufError("no file to evaluate")
    check_inputs(specs + ([ref_spec] if ref_spec else []))
    text = text or embedded_corpus()
    options = runtime.LoadOptions(n_ctx=ctx, n_batch=ctx, n_threads=n_threads)
    if ref_spec is None:
        return [_evaluate_alone(s, text_windows(s.path, text, ctx, chunks, llama_compat), options, progress)
                for s in specs]
    wins = _shared_windows(ref_spec, specs, text, ctx, chunks, llama_compat)
    evaluators: list[Evaluator] = []
    try:
        ref_ev = Evaluator(ref_spec, options)
        evaluators.append(ref_ev)
        models = [Evaluator(s, options) for s in specs]
        evaluators += models
        ppls, klds, ref_ppl = run_windows(models, wins, ref_ev, progress)
    finally:
        for e in evaluators:
            e.close()
    out = [Result(str(ref_spec.path), ref_spec.name, file_info(ref_spec.path), ref_ppl,
                  tokens_per_s=ref_ev.tokens_per_s, is_ref=True)]
    for s, m, p, k in zip(specs, models, ppls, klds):
        out.append(Result(str(s.path), s.name, file_info(s.path), p, k, p.ppl - ref_ppl.ppl, m.tokens_per_s))
    return out


def _shared_windows(ref: ModelSpec, specs: Sequence[ModelSpec], text: Text, ctx: int, chunks: int | None,
                    llama_compat: bool) -> list[Window]:
    """The reference's windows, which every model must tokenize the same way."""
    check_same_vocab(ref.path, [s.path for s in specs])
    wins = text_windows(ref.path, text, ctx, chunks, llama_compat)
    for s in specs:
        mine = text_windows(s.path, text, ctx, chunks, llama_compat)
        if [w.tokens for w in mine] != [w.tokens for w in wins]:
            raise SwggufError("its tokenizer splits the text differently from the reference's "
                              "(a different vocabulary): KL divergence needs the same tokens", s.path)
    return wins


def _evaluate_alone(spec: ModelSpec, wins: Sequence[Window], options: runtime.LoadOptions,
                    progress: Progress) -> Result:
    ev = Evaluator(spec, options)
    try:
        (ppl,), _, _ = run_windows([ev], wins, progress=progress)
    finally:
        ev.close()
    return Result(str(spec.path), spec.name, file_info(spec.path), ppl, tokens_per_s=ev.tokens_per_s)


def report(results: Sequence[Result], text: Text, ctx: int, chunks: int | None, llama_compat: bool) -> dict:
    """The JSON document of ``swgguf ppl --json``."""
    return {
        "swgguf_version": __version__,
        "text": {"source": text.label, "sha256": text.sha256, "n_chars": len(text.content)},
        "ctx": ctx, "chunks": chunks, "llama_compat": llama_compat,
        "convention": CONVENTION_COMPAT if llama_compat else CONVENTION_SWGGUF,
        "stderr": "ppl * sqrt(var(NLL) / (n - 1)), tokens taken as independent (a lower bound)",
        "kld": "KL(ref || file) per scored token, nats, from float32 logits",
        "reference": next((r.file for r in results if r.is_ref), None),
        "results": [r.as_dict() for r in results],
    }
