"""Detection (+ verification) results as a :class:`~swgguf.formats.manifest.Manifest`."""

from __future__ import annotations

from ..formats.manifest import (DetectionInfo, Manifest, ModelInfo, SuperActivation, SuperWeight,
                        VerificationInfo)
from ..pytorch import WeightSource, down_proj_gguf_name
from .core import Candidate, DetectionResult
from .verify import Verification, VerificationResult


def _weight(c: Candidate, tensor: str, v: Verification | None) -> SuperWeight:
    return SuperWeight(
        layer=c.layer, row=c.row, col=c.col, value=c.value, tensor=tensor,
        input_activation=c.input_activation, output_activation=c.output_activation, token=c.token,
        ppl=None if v is None else v.perplexity.ppl, ppl_se=None if v is None else v.perplexity.se,
        ppl_ratio=None if v is None else v.ratio, ppl_ratio_se=None if v is None else v.ratio_se)


def build_manifest(source: WeightSource, sha256: str, prompt: str, result: DetectionResult,
                   verification: VerificationResult | None, text_name: str = "", low_mem: bool = False) -> Manifest:
    """Verified candidates become ``super_weights``; the rest (all of them without verification)
    stay ``candidates``."""
    n_layers = result.n_layers
    by_coord = {} if verification is None else {v.candidate.coordinate: v for v in verification.results}
    weights, others = [], []
    for c in result.candidates:
        v = by_coord.get(c.coordinate)
        entry = _weight(c, down_proj_gguf_name(source.architecture, n_layers, c.layer), v)
        (weights if v is not None and v.is_super_weight else others).append(entry)
    sw_rows = {w.row for w in weights}
    activations = [SuperActivation(channel=a.channel, layers=a.layers, magnitude=a.magnitude, token=a.token,
                                   layer_of_max=a.layer_of_max)
                   for a in result.super_activations if verification is None or a.channel in sw_rows]
    return Manifest(
        model=ModelInfo(path=str(source.path), format=source.kind, architecture=source.architecture,
                        sha256=sha256, n_layers=n_layers),
        detection=DetectionInfo(prompt=prompt, threshold=result.threshold, threshold_rule=result.threshold_rule,
                                typical_scale=result.typical_scale, low_mem=low_mem),
        verification=None if verification is None else VerificationInfo(
            text=text_name, n_tokens=verification.baseline.n_tokens, factor=verification.factor,
            baseline_ppl=verification.baseline.ppl, baseline_ppl_se=verification.baseline.se,
            ctx=verification.n_ctx, n_windows=verification.n_windows, chunks=verification.chunks),
        super_weights=weights, candidates=others, super_activations=activations)
