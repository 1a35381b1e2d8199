"""Perplexity and KL divergence of GGUF files on text, through the patched llama.cpp.

  swgguf ppl FILE [FILE ...] [--ref F16.gguf] [--text FILE] [--ctx 512] [--chunks N]
             [--llama-compat] [--json out.json]
  swgguf ppl FILE [FILE ...] --hellaswag TASKS [--tasks N] [--ref F16.gguf] [--json out.json]

Perplexity is exp(mean NLL) over the scored tokens, with the standard error
ppl * std(NLL) / sqrt(n) (tokens taken as independent, as llama-perplexity and
mlx-lm do: a lower bound, neighbouring tokens are correlated). The scoring
convention is in swgguf/evaluate/text.py and docs/ppl.md; ``--llama-compat``
scores exactly as ``llama-perplexity``.

With ``--ref``, every file's next-token distributions are compared with the
reference's: KL(ref || file) per scored token from float32 logits (computed in
float64), reported as mean +- standard error, median, p90, p99 and max, plus
the share of tokens where both argmaxes agree and the RMS change of the
correct token's probability. The reference runs once; all models are loaded
together and evaluated window by window, so only one window of logits per
model is ever held (ctx x vocab float32 each).

``--hellaswag TASKS`` scores HellaSwag accuracy instead, as ``llama-perplexity
--hellaswag`` does (TASKS in its layout, plain or .bz2; the first ``--tasks`` of
them): accuracy +- binomial standard error per file and, with ``--ref``, the
paired difference from the reference (docs/hellaswag.md).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from ..errors import SwggufError
from ..evaluate import Result, evaluate, hellaswag, load_text, report
from ..formats.files import check_outputs, write_json


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
    parser.add_argument("--hellaswag", type=Path, default=None, metavar="TASKS",
                        help="score HellaSwag accuracy instead, on this file in llama-perplexity's layout "
                             "(plain or .bz2)")
    parser.add_argument("--tasks", type=int, default=hellaswag.DEFAULT_TASKS, metavar="N",
                        help=f"with --hellaswag: the first N tasks (default {hellaswag.DEFAULT_TASKS})")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .progress_bars import TaskBar

    check_outputs([("--json", args.json)], [*args.files, args.ref, args.text, args.hellaswag])
    if args.hellaswag is not None:
        return hellaswag_main(args)
    text = load_text(args.text)
    with TaskBar(Console(stderr=True), "ppl") as bar:
        results = evaluate(args.files, ref=args.ref, text=text, ctx=args.ctx, chunks=args.chunks,
                           llama_compat=args.llama_compat, n_threads=args.threads, progress=bar)
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
        write_json(report(results, text, args.ctx, args.chunks, args.llama_compat), args.json)
    return 0


def hellaswag_main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .progress_bars import TaskBar

    if args.text is not None or args.chunks is not None or args.llama_compat:
        raise SwggufError("--hellaswag scores HellaSwag instead of perplexity: --text, --chunks and "
                          "--llama-compat do not apply")
    tasks = hellaswag.read_tasks(args.hellaswag, args.tasks)
    with TaskBar(Console(stderr=True), "hellaswag") as bar:
        results = hellaswag.hellaswag(args.files, tasks, ref=args.ref, ctx=args.ctx, n_threads=args.threads,
                                      progress=bar)
    Console().print(hellaswag_table(results, f"HellaSwag: the first {len(tasks)} tasks of {args.hellaswag}"))
    if args.json is not None:
        write_json(hellaswag.report(results, tasks, args.ctx), args.json)
    return 0


# --- rendering ----------------------------------------------------------------------------


def hellaswag_table(results: Sequence[hellaswag.HellaswagResult], title: str):
    """Accuracy ± binomial error per file; with a reference, the paired difference from it."""
    from rich.table import Table

    has_ref = any(r.is_ref for r in results)
    table = Table(title=title)
    for col in ("file", "type", "size", "sidecar", "accuracy %", "Δ vs ref (paired)", "same choice", "tok/s"):
        if has_ref or col not in ("Δ vs ref (paired)", "same choice"):
            table.add_column(col, justify="left" if col in ("file", "type") else "right")
    for r in results:
        row = [r.name + (" (ref)" if r.is_ref else ""), r.info.type, _mib(r.info.size_bytes),
               _mib(r.info.sidecar_bytes) if r.info.sidecar_bytes else "-",
               f"{100 * r.stats.accuracy:.2f} ± {100 * r.stats.stderr:.2f}"]
        if has_ref:
            v = r.vs_ref
            row += ["", ""] if v is None else [f"{100 * v.diff:+.2f} ± {100 * v.stderr:.2f}", f"{100 * v.agree:.1f}%"]
        row.append(_fmt(r.tokens_per_s, ".0f"))
        table.add_row(*row)
    return table




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
