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
from ..formats.manifest import Manifest
from ..progress import Progress, no_progress
from .core import DEFAULT_ACTIVATION_FACTOR, DEFAULT_PROMPT, DEFAULT_THRESHOLD_FACTOR, DEFAULT_WEIGHT_FACTOR, \
    DetectionResult, ThresholdRule, relative_threshold
from .verify import DEFAULT_N_CTX, DEFAULT_VERIFY_FACTOR

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
    low_mem: bool = False


@dataclass
class DetectOutcome:
    manifest: Manifest
    result: DetectionResult
    verification: Any  # detection.verify's result, None when not verified
    source: Any  # the pytorch.WeightSource the model came from
    tokenizer: Any
    load_seconds: float


def run_detection(model_path: str | Path, opts: DetectOptions = DetectOptions(),
                  progress: Progress = no_progress) -> DetectOutcome:
    """Load, detect, verify, hash; progress reports each step as a stage without a count."""
    from .core import detect_super_weights
    from .report import build_manifest
    from .verify import default_text, verify_candidates
    from ..pytorch import build_model, open_source

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
    verification = None
    if opts.verify and result.candidates:
        text = opts.text if opts.text is not None else default_text()
        text_ids = tokenizer(text).input_ids
        if len(text_ids) < 2:
            raise SwggufError("the verification text has fewer than 2 tokens", opts.text_name)
        progress(f"verifying {len(result.candidates)} candidates on {len(text_ids)} tokens", 0, 0, "")
        try:
            verification = verify_candidates(model, text_ids, result.candidates, factor=opts.verify_factor,
                                             n_ctx=opts.ctx)
        except ValueError as err:
            raise SwggufError(str(err)) from None
    progress("hashing the model", 0, 0, "")
    sha = source.sha256()
    manifest = build_manifest(source, sha, opts.prompt, result, verification, opts.text_name, low_mem=opts.low_mem)
    return DetectOutcome(manifest, result, verification, source, tokenizer, load_s)


def marked_candidates(outcome: DetectOutcome) -> list:
    """The candidates to mark on the plot: the verified super weights, or all when not verified."""
    if outcome.verification is None:
        return list(outcome.result.candidates)
    found = {w.coordinate for w in outcome.manifest.super_weights}
    return [c for c in outcome.result.candidates if c.coordinate in found]
