"""The demo's outputs: results.json and report.md in its folder."""

from __future__ import annotations

from pathlib import Path

from ..evaluate import Text
from ..formats.files import write_json, write_text
from ..formats.manifest import Manifest


def kld_change(results: list) -> dict[str, float]:
    """Per protected file: its mean KLD relative to the plain file of the same type, in %."""
    by_name = {Path(r.file).name: r for r in results}
    out = {}
    for name, r in by_name.items():
        plain = by_name.get(name.replace("-sw.gguf", ".gguf"))
        if name.endswith("-sw.gguf") and plain is not None and r.kld and plain.kld:
            out[name] = 100.0 * (r.kld.mean / plain.kld.mean - 1.0)
    return out


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


def write_results(result, manifest: Manifest, corpus: Text, chunks: int, ctx: int) -> None:
    """results.json (the evaluation's rows) and report.md (super weights, quality table)."""
    rows = [r.as_dict() for r in result.results]
    write_json({"schema": "swgguf.demo/1", "text": corpus.label, "ctx": ctx, "chunks": chunks,
                "seconds": result.seconds, "results": rows}, result.results_json)
    lines = ["# swgguf demo: SmolLM2-135M-Instruct", "",
             "## Super weights found (`swgguf detect`)", "",
             "| tensor | row | col | value | ppl ratio when zeroed |", "|---|---|---|---|---|"]
    for w in manifest.super_weights:
        ratio = f"{w.ppl_ratio:.2f}" if getattr(w, "ppl_ratio", None) is not None else "-"
        lines.append(f"| {w.tensor} | {w.row} | {w.col} | {w.value:.3f} | {ratio} |")
    lines += ["", f"![max |down_proj| input and output per layer]({result.plot.name})", "",
              f"## Quality against the F16 reference ({corpus.label}, {chunks} windows of {ctx} tokens)", "",
              "| file | type | size MiB | bpw | sidecar KiB | PPL ± err | mean KLD ± err | vs plain | KLD p99 | top-1 % |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    change = kld_change(result.results)
    for r in rows:
        lines.append(_quality_row(r, change))
    lines += ["", "Reproduce: `swgguf demo`. Times (s): "
              + ", ".join(f"{k} {v}" for k, v in result.seconds.items()), ""]
    write_text("\n".join(lines), result.report)


def _quality_row(r: dict, change: dict[str, float]) -> str:
    kld = f"{r['kld_mean']:.4f} ± {r['kld_stderr']:.4f}" if r["kld_mean"] is not None else "(reference)"
    p99 = f"{r['kld_p99']:.3f}" if r["kld_p99"] is not None else "-"
    top1 = f"{100 * r['top1']:.1f}" if r["top1"] is not None else "-"
    name = Path(r["file"]).name
    return (f"| {name} | {r['type']} | {r['size_bytes'] / 2**20:.1f} | {r['bpw']:.2f} | "
            f"{(r['sidecar_bytes'] or 0) / 1024:.0f} | {r['ppl']:.3f} ± {r['ppl_stderr']:.3f} | {kld} | "
            f"{pct(change.get(name))} | {p99} | {top1} |")
