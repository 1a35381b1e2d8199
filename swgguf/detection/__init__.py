"""Super-weight detection and verification in PyTorch (`swgguf detect`)."""

from .core import (DEFAULT_PROMPT, Candidate, DetectionResult, LayerStats, Probe, ThresholdRule,
                   absolute_threshold, detect_super_weights, find_super_activations, probe,
                   relative_threshold, zeroed)

__all__ = [
    "DEFAULT_PROMPT", "Candidate", "DetectionResult", "LayerStats", "Probe", "ThresholdRule",
    "absolute_threshold", "detect_super_weights", "find_super_activations", "probe",
    "relative_threshold", "zeroed",
]
