"""Detection as one library call: load, detect, verify, build the manifest.

``swgguf detect`` and ``swgguf demo`` both call :func:`run_detection`; the CLI
only renders and writes what it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SwggufError
from ..evaluate.text import check_chunks
from ..formats.gguf_io import shares_readers
from ..formats.manifest import Manifest
from ..progress import Progress, no_progress
from .core import DEFAULT_ACTIVATION_FACTOR, DEFAULT_PROMPT, DEFAULT_THRESHOLD_FACTOR, DEFAULT_WEIGHT_FACTOR, \
    DetectionResult, ThresholdRule, relative_threshold
from .verify import DEFAULT_CHUNKS, DEFAULT_N_CTX, DEFAULT_VERIFY_FACTOR


@dataclass
class DetectOptions:
    prompt: str = DEFAULT_PROMPT
    rule: ThresholdRule = field(default_factory=lambda: relative_threshold(DEFAULT_THRESHOLD_FACTOR))
    weight_factor: float = DEFAULT_WEIGHT_FACTOR
    activation_factor: float = DEFAULT_ACTIVATION_FACTOR
    max_rounds: int | None = None
    verify: bool = True
    text: str | None = None  # verification text; None: the embedded default
    text_name: str = "builtin:default_text.txt"
    verify_factor: float = DEFAULT_VERIFY_FACTOR
    ctx: int = DEFAULT_N_CTX
    chunks: int | None = DEFAULT_CHUNKS  # windows of the text verified; None: all
    low_mem: bool = False


@dataclass
class DetectOutcome:
    manifest: Manifest
    result: DetectionResult
    verification: Any  # detection.verify's result, None when not verified
    source: Any  # the pytorch.WeightSource the model came from
    tokenizer: Any
    load_seconds: float


@shares_readers
def run_detection(model_path: str | Path, opts: DetectOptions = DetectOptions(),
                  progress: Progress = no_progress) -> DetectOutcome:
    """Load, detect, verify, hash; progress reports each step as a stage (verification
    with a count of windows, the others without)."""
    from .core import detect_super_weights
    from .report import build_manifest
    from ..pytorch import build_model, open_source

    check_chunks(opts.chunks)  # before the model loads, not a minute later
    t0 = time.perf_counter()
    progress("loading the model", 0, 0, "")
    source = open_source(Path(model_path))
    model = build_model(source, low_mem=opts.low_mem)
    tokenizer = source.tokenizer()
    load_s = time.perf_counter() - t0
    ids = tokenizer(opts.prompt, return_tensors="pt").input_ids
    if ids.numel() == 0:
        raise SwggufError("the prompt is empty after tokenization")
    progress("detecting", 0, 0, "")
    result = detect_super_weights(model, ids, rule=opts.rule, weight_factor=opts.weight_factor,
                                  max_rounds=opts.max_rounds, activation_factor=opts.activation_factor)
    verification = _verify(model, tokenizer, result, opts, progress) if opts.verify and result.candidates else None
    progress("hashing the model", 0, 0, "")
    sha = source.sha256()
    manifest = build_manifest(source, sha, opts.prompt, result, verification, opts.text_name, low_mem=opts.low_mem)
    return DetectOutcome(manifest, result, verification, source, tokenizer, load_s)


def _verify(model, tokenizer, result: DetectionResult, opts: DetectOptions, progress: Progress):
    """Verification on the first ``opts.chunks`` windows of the text: only as much of the
    text as they hold is tokenized."""
    from .verify import default_text, leading_tokens, verify_candidates

    text = opts.text if opts.text is not None else default_text()
    progress("tokenizing the text", 0, 0, "")
    text_ids = leading_tokens(tokenizer, text, None if opts.chunks is None else opts.chunks * opts.ctx)
    if len(text_ids) < 2:
        raise SwggufError("the verification text has fewer than 2 tokens", opts.text_name)
    try:
        return verify_candidates(model, text_ids, result.candidates, factor=opts.verify_factor,
                                 n_ctx=opts.ctx, chunks=opts.chunks, progress=progress)
    except ValueError as err:
        raise SwggufError(str(err)) from None


def marked_candidates(outcome: DetectOutcome) -> list:
    """The candidates to mark on the plot: the verified super weights, or all when not verified."""
    if outcome.verification is None:
        return list(outcome.result.candidates)
    found = {w.coordinate for w in outcome.manifest.super_weights}
    return [c for c in outcome.result.candidates if c.coordinate in found]
