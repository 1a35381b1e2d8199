"""The demo as one library call: every step on SmolLM2-135M-Instruct, timed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import SwggufError
from ..formats.files import check_outputs
from ..formats.gguf_io import shares_readers
from ..progress import Progress, no_progress

DEFAULT_OUT = Path("swgguf-demo")
DEFAULT_TYPES = ("Q3_K_M", "Q4_K_M")
DEFAULT_CHUNKS = 24  # windows of 512 tokens: 12k tokens of the corpus keep the demo short
CTX = 512
# the files of the output folder (besides one GGUF per type, plain and protected)
F16_NAME, MANIFEST_NAME, PLOT_NAME = "smollm2-f16.gguf", "manifest.json", "detect.png"
REPORT_NAME, RESULTS_NAME = "report.md", "results.json"

T = TypeVar("T")


@dataclass
class DemoResult:
    out_dir: Path
    manifest: Path
    plot: Path
    report: Path
    results_json: Path
    results: list = field(default_factory=list)  # evaluate.Result, the reference first
    seconds: dict[str, float] = field(default_factory=dict)


def file_name(ftype: str, protected: bool) -> str:
    return f"smollm2-{ftype.lower()}{'-sw' if protected else ''}.gguf"


def demo_outputs(out_dir: Path, types: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Every file the demo writes into ``out_dir``, for the output rule."""
    names = [F16_NAME, MANIFEST_NAME, PLOT_NAME, REPORT_NAME, RESULTS_NAME]
    names += [file_name(t, p) for t in types for p in (False, True)]
    return [(f"the demo's {n}", out_dir / n) for n in names]


class _Timer:
    """Runs the demo's steps, reporting each and keeping its seconds."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., T], *args, **kwargs) -> T:
        self.progress(name, 0, 0, "")
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        return value


@shares_readers
def run_demo(out_dir: Path = DEFAULT_OUT, types: tuple[str, ...] = DEFAULT_TYPES, chunks: int = DEFAULT_CHUNKS,
             text: Path | None = None, model: Path | None = None, progress: Progress = no_progress) -> DemoResult:
    from ..conversion import ConvertOptions, ProtectOptions, QuantOptions, convert, make_f16_reference
    from ..default_model import default_model_path
    from ..detection.pipeline import DetectOptions, marked_candidates, run_detection
    from ..detection.plot import plot_spikes
    from ..evaluate import embedded_corpus, evaluate, load_text
    from ..formats.manifest import save_manifest
    from .report import write_results

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SwggufError(f"cannot make the output folder ({err.strerror or err})", out_dir) from None
    model = model or default_model_path()
    check_outputs(demo_outputs(out_dir, types), [model, text])
    timed = _Timer(progress)
    f16 = timed("F16 reference", make_f16_reference, model, out_dir / F16_NAME)
    outcome = timed("detect", run_detection, f16, DetectOptions(), _steps_of("detect", progress))
    manifest = save_manifest(outcome.manifest, out_dir / MANIFEST_NAME)
    plot = out_dir / PLOT_NAME
    plot_spikes(outcome.result.baseline, plot, outcome.result.threshold, marked_candidates(outcome),
                title="SmolLM2-135M-Instruct")
    files = []
    for ftype in types:
        for protected in (False, True):
            dst = out_dir / file_name(ftype, protected)
            opts = ConvertOptions(QuantOptions(ftype=ftype), ProtectOptions(manifest=manifest) if protected else None)
            label = f"convert {ftype}{' --protect-sw' if protected else ''}"
            timed(label, convert, f16, dst, opts, _steps_of(label, progress))
            files.append(dst)
    corpus = load_text(text) if text else embedded_corpus()
    results = timed("ppl + KLD", evaluate, files, ref=f16, text=corpus, ctx=CTX, chunks=chunks,
                    progress=_steps_of("ppl + KLD", progress))
    result = DemoResult(out_dir, manifest, plot, out_dir / REPORT_NAME, out_dir / RESULTS_NAME, results,
                        timed.seconds)
    write_results(result, outcome.manifest, corpus, chunks, CTX)
    return result


def _steps_of(label: str, progress: Progress) -> Progress:
    """A conversion's reports as steps of the demo's: ``<label>: <stage>``, counts kept."""
    def report(stage: str, done: int, total: int, item: str) -> None:
        progress(f"{label}: {stage}", done, total, "")
    return report
