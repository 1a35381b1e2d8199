"""Perplexity and KL divergence of GGUF files on text, through the patched llama.cpp.

  swgguf ppl FILE [FILE ...] [--ref F16.gguf] [--text FILE] [--ctx 512] [--chunks N]
             [--llama-compat] [--json out.json]

Perplexity is exp(mean NLL) over the scored tokens, with the standard error
ppl * std(NLL) / sqrt(n) (tokens taken as independent, as llama-perplexity and
mlx-lm do: a lower bound, neighbouring tokens are correlated). The scoring
convention is in swgguf/textdata.py and docs/ppl.md; ``--llama-compat``
scores exactly as ``llama-perplexity``.

With ``--ref``, every file's next-token distributions are compared with the
reference's: KL(ref || file) per scored token from float32 logits (computed in
float64), reported as mean +- standard error, median, p90, p99 and max, plus
the share of tokens where both argmaxes agree and the RMS change of the
correct token's probability. The reference runs once; all models are loaded
together and evaluated window by window, so only one window of logits per
model is ever held (ctx x vocab float32 each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import gguf
import numpy as np

from . import __version__
from .errors import SwggufError
from .runtime import llm
from .sidecar import sidecar_base
from .textdata import Text, Window, compat_windows, load_text, windows
from . import textdata

CONVENTION_SWGGUF = ("swgguf: consecutive non-overlapping windows of ctx tokens (BOS first where the "
                     "vocabulary adds one), every next-token prediction in a window scored")
CONVENTION_COMPAT = ("llama-compat: llama-perplexity's chunks of ctx tokens, BOS replacing each chunk's "
                     "first token, only the second half of each chunk scored")
_ROW_BLOCK = 64  # rows of logits turned into float64 at a time: bounds memory for large vocabularies

# (done, total, label) after each model has evaluated a window
Progress = Callable[[int, int, str], None]


# --- statistics ------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of float32 logits rows."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


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
        for a in range(0, len(targets), _ROW_BLOCK):
            lp = log_softmax(rows[a: a + _ROW_BLOCK])
            nll[a: a + _ROW_BLOCK] = -lp[np.arange(lp.shape[0]), targets[a: a + _ROW_BLOCK]]
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
        for a in range(0, n, _ROW_BLOCK):
            b = min(a + _ROW_BLOCK, n)
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

    def stats(self) -> KldStats:
        k = np.concatenate(self._kld) if self._kld else np.zeros(0)
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


# --- files ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    type: str  # llama.cpp's file type, e.g. Q4_K_M, from general.file_type
    size_bytes: int
    n_params: int  # elements of the model's own tensors (sidecars excluded)
    sidecar_bytes: int
    bpw: float  # 8 * all tensor bytes (sidecars included) / n_params


def _ftype_name(value: int | None) -> str:
    if value is None:
        return "?"
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"ftype {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def file_info(path: str | Path) -> FileInfo:
    try:
        reader = gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise SwggufError("no such file", path) from None
    except Exception as err:  # gguf-py raises ValueError/struct.error on bad files
        raise SwggufError(f"not a readable GGUF file ({err})", path) from None
    field_ = reader.get_field("general.file_type")
    ftype = None if field_ is None else int(field_.contents())
    n_params = sidecar = model_bytes = 0
    for t in reader.tensors:
        if sidecar_base(t.name) is not None:
            sidecar += int(t.n_bytes)
        else:
            n_params += int(t.n_elements)
            model_bytes += int(t.n_bytes)
    bpw = 8.0 * (model_bytes + sidecar) / n_params if n_params else float("nan")
    return FileInfo(type=_ftype_name(ftype), size_bytes=Path(path).stat().st_size, n_params=n_params,
                    sidecar_bytes=sidecar, bpw=bpw)


# --- models -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF and the runtime environment its context is created in (e.g.
    ``{"SWGGUF_SW_SCALE": "0"}``; None unsets a variable)."""

    path: Path
    label: str | None = None
    env: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.path.name


class Evaluator:
    """Float32 logits of a window from one llama.cpp context."""

    def __init__(self, spec: ModelSpec, options: llm.LoadOptions) -> None:
        self.spec = spec
        env = {"SWGGUF_SW_SCALE": None, "SWGGUF_SIDECAR": None, **spec.env}
        with llm.environment(**env):  # the runtime reads these when the context is made
            self.llama = llm.load(spec.path, options)
        self.seconds = 0.0
        self.tokens = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._logits(tokens)
        self.seconds += time.perf_counter() - t0
        self.tokens += len(tokens)
        return out

    def _logits(self, tokens: Sequence[int]) -> np.ndarray:
        return llm.logits(self.llama, tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def close(self) -> None:
        self.llama.close()


# --- evaluation ---------------------------------------------------------------------


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


def run_windows(models: Sequence[Evaluator], wins: Sequence[Window], ref: Evaluator | None = None,
                progress: Progress | None = None) -> tuple[list[PplStats], list[KldStats | None], PplStats | None]:
    """Evaluate every model on every window; with ``ref``, the reference runs once per
    window and each model is compared with it. Returns (ppl per model, kld per model,
    the reference's ppl)."""
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
            if progress:
                progress(done, total, ref.name)
        for i, m in enumerate(models):
            logits = m.logits(w.tokens)
            ppl[i].add(logits, w)
            if kld is not None:
                kld[i].add(ref_rows, logits[scored], w.targets)
            done += 1
            if progress:
                progress(done, total, m.name)
    return ([a.stats() for a in ppl], [a.stats() for a in kld] if kld else [None] * len(models),
            ref_ppl.stats() if ref_ppl else None)


def _as_spec(p: str | Path | ModelSpec) -> ModelSpec:
    return p if isinstance(p, ModelSpec) else ModelSpec(Path(p))


def check_inputs(specs: Sequence[ModelSpec]) -> None:
    for s in specs:
        if not s.path.exists():
            raise SwggufError("no such file", s.path)
        if not s.path.is_file():
            raise SwggufError("not a file", s.path)


def text_windows(model: Path, text: Text, ctx: int, chunks: int | None, llama_compat: bool) -> list[Window]:
    """The windows of ``text`` for ``model``'s tokenizer under the chosen convention."""
    bos = textdata.bos_token(model)
    if llama_compat:
        return compat_windows(textdata.tokenize(model, text.content, add_bos=True), ctx, bos, chunks)
    return windows(textdata.tokenize(model, text.content), ctx, bos, chunks)


def check_same_vocab(ref: Path, others: Sequence[Path]) -> None:
    n_ref = textdata.n_vocab(ref)
    for p in others:
        n = textdata.n_vocab(p)
        if n != n_ref:
            raise SwggufError(f"its vocabulary has {n} tokens but the reference's has {n_ref}: "
                              "KL divergence needs the same vocabulary", p)


def evaluate(paths: Sequence[str | Path | ModelSpec], ref: str | Path | ModelSpec | None = None,
             text: Text | None = None, ctx: int = 512, chunks: int | None = None,
             llama_compat: bool = False, n_threads: int | None = None,
             progress: Progress | None = None) -> list[Result]:
    """Perplexity of each file on ``text`` (default: the embedded corpus) and, with
    ``ref``, its KL divergence from the reference. The reference's own result comes
    first in the list (``is_ref``)."""
    specs = [_as_spec(p) for p in paths]
    ref_spec = _as_spec(ref) if ref is not None else None
    if not specs:
        raise SwggufError("no file to evaluate")
    check_inputs(specs + ([ref_spec] if ref_spec else []))
    text = text or textdata.embedded_corpus()
    options = llm.LoadOptions(n_ctx=ctx, n_batch=ctx, n_threads=n_threads)
    if ref_spec is None:
        return [_evaluate_alone(s, text, ctx, chunks, llama_compat, options, progress) for s in specs]
    check_same_vocab(ref_spec.path, [s.path for s in specs])
    wins = text_windows(ref_spec.path, text, ctx, chunks, llama_compat)
    for s in specs:
        mine = text_windows(s.path, text, ctx, chunks, llama_compat)
        if [w.tokens for w in mine] != [w.tokens for w in wins]:
            raise SwggufError("its tokenizer splits the text differently from the reference's "
                              "(a different vocabulary): KL divergence needs the same tokens", s.path)
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


def _evaluate_alone(spec: ModelSpec, text: Text, ctx: int, chunks: int | None, llama_compat: bool,
                    options: llm.LoadOptions, progress: Progress | None) -> Result:
    wins = text_windows(spec.path, text, ctx, chunks, llama_compat)
    ev = Evaluator(spec, options)
    try:
        (ppl,), _, _ = run_windows([ev], wins, progress=progress)
    finally:
        ev.close()
    return Result(str(spec.path), spec.name, file_info(spec.path), ppl, tokens_per_s=ev.tokens_per_s)


# --- output ---------------------------------------------------------------------------


def write_json_atomic(data: dict, path: str | Path) -> Path:
    """``json.dump`` to a temporary file beside ``path``, then rename: never half a file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SwggufError("the output directory does not exist", path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, allow_nan=False)
            f.write("\n")
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temporary file onto ``path`` with the permissions a plain
    ``open()`` would have given it (mkstemp makes files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


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


# --- CLI --------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage block of the docstring
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="GGUF files to evaluate")
    parser.add_argument("--ref", type=Path, default=None, help="reference GGUF (e.g. F16) for KL divergence")
    parser.add_argument("--text", type=Path, default=None,
                        help="UTF-8 text file (e.g. wiki.test.tokens); default: the embedded English corpus")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    parser.add_argument("--chunks", type=int, default=None, help="evaluate at most N windows (default: all)")
    parser.add_argument("--llama-compat", action="store_true",
                        help="score as llama-perplexity does (BOS per chunk, second half of each chunk)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def results_table(results: Sequence[Result], title: str):
    from rich.table import Table

    has_ref = any(r.is_ref for r in results)
    table = Table(title=title)
    for col in ("file", "type", "size", "bpw", "sidecar", "PPL", "ΔPPL", "KLD mean", "KLD p99", "top-1", "tok/s"):
        if has_ref or col not in ("ΔPPL", "KLD mean", "KLD p99", "top-1"):
            table.add_column(col, justify="left" if col in ("file", "type") else "right")
    for r in results:
        info = r.info
        row = [r.name + (" (ref)" if r.is_ref else ""), info.type if info else "-",
               _mib(info.size_bytes if info else None), _fmt(info.bpw if info else None, ".2f"),
               _mib(info.sidecar_bytes) if info and info.sidecar_bytes else "-",
               f"{r.ppl.ppl:.4f} ± {r.ppl.stderr:.4f}"]
        if has_ref:
            k = r.kld
            row += [_fmt(r.delta_ppl, "+.4f") if not r.is_ref else "",
                    f"{k.mean:.5f} ± {k.stderr:.5f}" if k else "", _fmt(k.p99 if k else None, ".4f") if k else "",
                    f"{100 * k.top1:.2f}%" if k else ""]
        row.append(_fmt(r.tokens_per_s, ".0f"))
        table.add_row(*row)
    return table


def kld_table(results: Sequence[Result]):
    """Every KLD statistic of the files compared with the reference."""
    from rich.table import Table

    table = Table(title="KL(ref || file), nats per token")
    for col in ("file", "mean ± err", "median", "p90", "p99", "max", "top-1", "Δp RMS"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for r in results:
        k = r.kld
        if k is None:
            continue
        table.add_row(r.name, f"{k.mean:.5f} ± {k.stderr:.5f}", f"{k.median:.5f}", f"{k.p90:.4f}", f"{k.p99:.4f}",
                      f"{k.max:.3f}", f"{100 * k.top1:.2f}%", _fmt(k.dp_rms, ".4f"))
    return table


def make_progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    text = load_text(args.text)
    err = Console(stderr=True)
    with make_progress(err) as bar:
        task = bar.add_task("ppl", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"ppl {label}")

        results = evaluate(args.files, ref=args.ref, text=text, ctx=args.ctx, chunks=args.chunks,
                           llama_compat=args.llama_compat, n_threads=args.threads, progress=progress)
    n = results[-1].ppl.n_tokens
    title = (f"{text.label}: {n} tokens scored, ctx {args.ctx}"
             f"{', llama-compat' if args.llama_compat else ''}")
    out = Console()
    out.print(results_table(results, title))
    if args.ref is not None:
        out.print(kld_table(results))
        out.print("top-1: share of tokens with the reference's argmax; Δp RMS: RMS change of the "
                  "correct token's probability")
    if args.json is not None:
        write_json_atomic(report(results, text, args.ctx, args.chunks, args.llama_compat), args.json)
    return 0
