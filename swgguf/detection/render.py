"""Rich rendering of a detection run for the terminal (CLI only)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..formats.manifest import Manifest
from ..pytorch import WeightSource
from .core import DetectionResult
from .known import Comparison
from .verify import VerificationResult


def _token_text(tokenizer, ids: list[int], pos: int) -> str:
    try:
        return repr(tokenizer.decode([ids[pos]]))
    except Exception:  # a tokenizer without decode for this id: show the id
        return str(ids[pos])


def _windows(v: VerificationResult) -> str:
    """How much of the text verification read: ``8 windows of 512, the --chunks cap``."""
    shown = f"{v.n_windows} window{'s' if v.n_windows != 1 else ''} of {v.n_ctx}"
    if v.chunks is None:
        return f"all {shown}"
    return f"{shown}, the --chunks cap" if v.n_windows == v.chunks else f"{shown}, all the text has"


def render(console: Console, source: WeightSource, result: DetectionResult,
           verification: VerificationResult | None, manifest: Manifest, tokenizer, load_s: float) -> None:
    console.print(f"[bold]{source.path}[/] ({source.kind}, {source.architecture}, {result.n_layers} layers)")
    console.print(f"threshold {result.threshold:.4g} = {result.threshold_rule} "
                  f"(typical {result.typical_scale:.4g}); candidate weights >= {result.weight_factor:g} x RMS")
    if verification is not None:
        b = verification.baseline
        console.print(f"baseline perplexity {b.ppl:.3f} ± {b.se:.3f} on {b.n_tokens} tokens "
                      f"({_windows(verification)}); "
                      f"super weight: ratio >= {verification.factor:g} when zeroed alone")
    verdict = {v.candidate.coordinate: v for v in (verification.results if verification else [])}
    tokens = sorted({c.token for c in result.candidates})
    caption = "spike token " + ", ".join(f"{t} {_token_text(tokenizer, result.prompt_tokens, t)}" for t in tokens)
    table = Table(title="super-weight candidates", caption=caption if tokens else None, box=box.SIMPLE_HEAD, padding=(0, 1),
                  pad_edge=False, collapse_padding=True)
    for col in ("GGUF tensor", "[row, col]", "value", "in", "out", "ppl", "ratio", "super?"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("GGUF tensor", "super?") else "right")
    tensors = {(w.layer, w.row, w.col): w.tensor for w in [*manifest.super_weights, *manifest.candidates]}
    for c in result.candidates:
        v = verdict.get(c.coordinate)
        ppl = "-" if v is None else f"{v.perplexity.ppl:.1f}"
        ratio = "-" if v is None else f"{v.ratio:.2f}±{v.ratio_se:.2f}"
        label = "?" if v is None else ("[bold green]yes[/]" if v.is_super_weight else "no")
        table.add_row(tensors[c.coordinate].removesuffix(".weight"), f"[{c.row}, {c.col}]", f"{c.value:.3g}",
                      _num(c.input_activation), _num(c.output_activation), ppl, ratio, label)
    if result.candidates:
        console.print(table)
    if not result.candidates:
        console.print("[bold yellow]no super weight: no layer's down_proj spike comes from a single outlier weight[/]")
    elif verification is not None and not verification.super_weights:
        console.print("[bold yellow]no super weight: removing any single candidate leaves perplexity within "
                      f"{verification.factor:g}x[/]")
    if manifest.super_activations:
        acts = Table(title="super activations (residual stream)")
        for col in ("channel", "magnitude", "token", "max at layer", "layers"):
            acts.add_column(col)
        for a in manifest.super_activations:
            acts.add_row(str(a.channel), f"{a.magnitude:.4g}",
                         f"{a.token} {_token_text(tokenizer, result.prompt_tokens, a.token)}",
                         str(a.layer_of_max), _ranges(a.layers))
        console.print(acts)
    for note in result.notes:
        console.print(f"note: {note}")
    timing = f"load {load_s:.1f} s, detection {result.seconds:.2f} s ({result.rounds + 1} passes)"
    if verification is not None:
        timing += f", verification {verification.seconds:.1f} s"
    console.print(timing)


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def render_comparison(console: Console, cmp: Comparison) -> None:
    e = cmp.expected
    head = f"expected {e.name} ({e.source}): "
    if cmp.ok:
        console.print(head + f"[bold green]all {len(cmp.matched)} published coordinates found, nothing else[/]")
        return
    console.print(head + f"[bold red]mismatch[/]: matched {cmp.matched}, missing {cmp.missing}, extra {cmp.extra}")
