"""Super-weight scalars: which single weights the sidecar carries exactly, from a
`swgguf detect` manifest or, without one, from the activation statistics."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import SwggufError
from ..formats.manifest import load_manifest
from ..formats.sidecar import WEIGHT_SUFFIX, weight_base
from .salience import TensorQuant
from .tensors import TensorSet

# Without a manifest, super weights are found from the activation statistics. A
# massive activation is >= MASSIVE_ACT_RATIO x the median channel's mean x²
# (SmolLM2-135M: 1.4e3-9.3e5 in the layers with super weights, <= 4e2 elsewhere
# but for one); the super weight is the largest weight of that input column
# and must be an outlier of its matrix, >= SUPER_WEIGHT_Z x its RMS (SmolLM2's
# published super weights: 28-30 x; swgguf detect uses 10 x for candidates
# that it then verifies, which this rule cannot).
MASSIVE_ACT_RATIO = 1e3
SUPER_WEIGHT_Z = 20.0


class Scalar(NamedTuple):
    """One super weight: its weight's base name, position and true value."""

    base: str
    row: int
    col: int
    value: float

    def label(self) -> str:
        """As recorded in swgguf.provenance.super_weights: ``blk.2.ffn_down[507,90]``."""
        return f"{self.base}[{self.row},{self.col}]"


def scalars_from_manifest(path: Path, tensors: TensorSet) -> list[Scalar]:
    """The manifest's (verified) super weights, checked against the model: the tensor must
    be protected here, the position inside it, the value its own."""
    manifest = load_manifest(path)
    out = []
    for sw in manifest.super_weights:
        name = sw.tensor if sw.tensor in tensors.shapes else sw.tensor + WEIGHT_SUFFIX
        if name not in tensors.shapes:
            raise SwggufError(f"super weight in tensor {sw.tensor!r}, which this model has not as a quantized "
                              "weight with activation statistics", path)
        n_out, n_in = tensors.shapes[name]
        if not (0 <= sw.row < n_out and 0 <= sw.col < n_in):
            raise SwggufError(f"super weight ({sw.row}, {sw.col}) is outside {sw.tensor} of shape ({n_out}, {n_in})",
                              path)
        have = float(tensors.true_value(name, sw.row, sw.col))
        if abs(have - sw.value) > 1e-2 * abs(sw.value) + 1e-3:
            raise SwggufError(f"super weight {sw.tensor}[{sw.row}, {sw.col}] is {sw.value:g} in the manifest but "
                              f"{have:g} in this model: was the manifest made for another model?", path)
        out.append(Scalar(weight_base(name), int(sw.row), int(sw.col), have))
    return out


def super_weight_of(t: TensorQuant) -> Scalar | None:
    """The super-weight scalar of one tensor from the activation statistics alone (no
    manifest): in an ffn_down, the largest weight of the input column with a massive mean
    x², if it is an outlier weight. A heuristic: `swgguf detect` + --manifest is the
    measured way."""
    if not t.name.endswith("ffn_down.weight") or t.act_sq is None:
        return None
    c = int(np.argmax(t.act_sq))
    if t.act_sq[c] < MASSIVE_ACT_RATIO * max(float(np.median(t.act_sq)), 1e-30):
        return None
    col = np.abs(t.w_true[:, c])
    r = int(np.argmax(col))
    rms = float(np.sqrt(np.mean(np.square(t.w_true, dtype=np.float64))))
    return Scalar(weight_base(t.name), r, c, float(t.w_true[r, c])) if col[r] >= SUPER_WEIGHT_Z * rms else None


def by_weight(scalars: list[Scalar]) -> dict[str, list[tuple[int, int]]]:
    """Weight name -> the (row, col) of its scalars."""
    out: dict[str, list[tuple[int, int]]] = {}
    for s in scalars:
        out.setdefault(s.base + WEIGHT_SUFFIX, []).append((s.row, s.col))
    return out
