"""The super-weight paper's experiments on a GGUF file, in llama.cpp.

  swgguf ablate FILE [--manifest m.json] [--text FILE] [--scale 0,0.5,1,1.5,2,3]
                [--restore-sa] [--stopwords N] [--hellaswag TASKS [--tasks N]]
                [--json out.json] [--plot out.png]

* prune: perplexity with the super weights zeroed vs the original;
* scale sweep: perplexity and KL(original || scaled) for each alpha, where each
  super weight w becomes alpha * w;
* restore SA (``--restore-sa``): super weights zeroed everywhere but the first
  position of each window computed with them, which puts the super activation
  back where it lives (the paper's "Prune SW, +SA" row);
* stop words (``--stopwords N``): mean next-token probability of the text's most
  common tokens over N prompts, with and without the super weights;
* HellaSwag (``--hellaswag TASKS``): accuracy of the original and of every variant
  above on the first ``--tasks`` tasks, scored as ``swgguf ppl --hellaswag`` does.

Scaling goes through the runtime's ``SWGGUF_SW_SCALE``, which applies every
super-weight scalar of a file's sidecar as alpha * w. A file whose sidecar does
not carry the super weights (or that has none) gets a temporary copy with a
sidecar of just those scalars (residual zero, value = what the file holds), so
alpha = 1 is the file exactly. Details and measurements: docs/ablate.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..ablation import DEFAULT_CHUNKS, DEFAULT_SCALES, Ablation, ablate, plot, shown
from ..evaluate import hellaswag, load_text
from ..formats.files import check_outputs, write_json


def _scales(spec: str) -> list[float]:
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {spec!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {spec!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage block of the docstring
    parser.add_argument("file", type=Path, metavar="FILE", help="GGUF file")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="super-weight manifest from `swgguf detect` (default: the file's sidecar scalars)")
    parser.add_argument("--text", type=Path, default=None, help="UTF-8 text file; default: the embedded corpus")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS,
                        help=f"windows evaluated per model (default {DEFAULT_CHUNKS})")
    parser.add_argument("--scale", type=_scales, default=list(DEFAULT_SCALES), metavar="A,B,...",
                        help="super-weight scales α (default 0,0.5,1,1.5,2,3; 0 is always run)")
    parser.add_argument("--restore-sa", action="store_true",
                        help="also: super weights zeroed but the super activation restored")
    parser.add_argument("--stopwords", type=int, default=None, metavar="N",
                        help="also: stop-word probabilities over N prompts (the paper used 500)")
    parser.add_argument("--hellaswag", type=Path, default=None, metavar="TASKS",
                        help="also: HellaSwag accuracy of every variant, on this file in llama-perplexity's "
                             "layout (plain or .bz2)")
    parser.add_argument("--tasks", type=int, default=hellaswag.DEFAULT_TASKS, metavar="N",
                        help=f"with --hellaswag: the first N tasks (default {hellaswag.DEFAULT_TASKS})")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write a plot")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..formats.manifest import load_manifest
    from .progress_bars import TaskBar

    check_outputs([("--json", args.json), ("--plot", args.plot)],
                  [args.file, args.manifest, args.text, args.hellaswag])
    manifest = load_manifest(args.manifest) if args.manifest is not None else None
    text = load_text(args.text)
    tasks = hellaswag.read_tasks(args.hellaswag, args.tasks) if args.hellaswag is not None else None
    with TaskBar(Console(stderr=True), "ablate") as bar:
        result = ablate(args.file, manifest, text, ctx=args.ctx, chunks=args.chunks, scales=args.scale,
                        restore_sa=args.restore_sa, stopwords=args.stopwords, n_threads=args.threads,
                        hellaswag=tasks, progress=bar)
    out = Console()
    for t in tables(result):
        out.print(t)
    summary = (f"prune: perplexity ×{result.prune_ratio:.2f} with the super weights zeroed "
               f"(|w| left at α=0: {result.leftover:.2g}; scaled via {result.driver})")
    if result.restore_sa:
        summary += f"; restoring the super activation recovers {100 * result.restore_sa.recovered:.1f}% of the loss"
    out.print(summary)
    if args.json is not None:
        write_json(result.as_dict(), args.json)
    if args.plot is not None:
        plot(result, args.plot)
    return 0


def tables(result: Ablation) -> list:
    """The super weights, the scale sweep and (if measured) the stop words, as rich tables."""
    from rich.table import Table

    sites = Table(title="super weights")
    for col in ("tensor", "row", "col", "value in file", "manifest value", "from"):
        sites.add_column(col, justify="left" if col in ("tensor", "from") else "right")
    for s in result.sites:
        sites.add_row(s.tensor, str(s.row), str(s.col), f"{s.value:.4f}",
                      "-" if s.value_manifest is None else f"{s.value_manifest:.4f}", s.source)
    n = result.original.n_tokens
    sweep = Table(title=f"scale sweep: {n} tokens ({result.n_windows} windows of {result.ctx}), {result.text.label}")
    for col in ("α", "PPL", "× original", "KLD mean", "KLD p99", "top-1"):
        sweep.add_column(col, justify="right")
    sweep.add_row("original", f"{result.original.ppl:.3f} ± {result.original.stderr:.3f}", "1.00", "", "", "")
    rows = [(f"{p.scale:g}", p.ppl, p.kld) for p in result.scale]
    if result.restore_sa:
        rows.append(("0 +SA", result.restore_sa.ppl, result.restore_sa.kld))
    for label, p, k in rows:
        sweep.add_row(label, f"{p.ppl:.3f} ± {p.stderr:.3f}", f"{p.ppl / result.original.ppl:.2f}",
                      f"{k.mean:.5f} ± {k.stderr:.5f}", f"{k.p99:.4f}", f"{100 * k.top1:.1f}%")
    out = [sites, sweep]
    if result.stopwords:
        stop = Table(title=f"stop words: mean next-token probability over {result.n_prompts} prompts")
        for col in ("token", "count", "original", "SW zeroed", "factor"):
            stop.add_column(col, justify="left" if col == "token" else "right")
        for s in result.stopwords:
            stop.add_row(shown(s.text), str(s.count), f"{s.p_original:.4f}", f"{s.p_pruned:.4f}", f"×{s.factor:.2f}")
        out.append(stop)
    if result.hellaswag:
        out.append(hellaswag_table(result))
    return out


def hellaswag_table(result: Ablation):
    """HellaSwag accuracy per variant, and its paired difference from the original."""
    from rich.table import Table

    h = result.hellaswag
    table = Table(title=f"HellaSwag: the first {len(h.tasks)} tasks of {h.tasks.source}")
    for col in ("variant", "accuracy %", "Δ vs original (paired)", "same choice"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    table.add_row("original", f"{100 * h.original.accuracy:.2f} ± {100 * h.original.stderr:.2f}", "", "")
    for r in h.rows:
        v = r.stats.versus(h.original)
        table.add_row(r.label, f"{100 * r.stats.accuracy:.2f} ± {100 * r.stats.stderr:.2f}",
                      f"{100 * v.diff:+.2f} ± {100 * v.stderr:.2f}", f"{100 * v.agree:.1f}%")
    return table
