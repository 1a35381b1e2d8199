"""The protection engine: from a float model, its quantization and activation
statistics, the sidecars that restore what quantization destroyed.

Two passes over the quantized weights, one tensor at a time: the first scores
every input column (salience = column error² x mean activation², see
:mod:`.salience`) and finds super weights from the activations; between the
passes the byte budget is spread over all tensors; the second builds each
sidecar from the bytes actually written (:func:`swgguf.formats.sidecar.build_sidecar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..formats.imatrix import Imatrix
from ..formats.sidecar import Sidecar, build_sidecar, weight_base
from ..progress import Progress, no_progress
from .salience import ColumnPolicy, allocate_budget, column_error, salience
from .clip import clip_outliers
from .options import ProtectOptions, parse_budget
from .scalars import Scalar, by_weight, scalars_from_manifest, super_weight_of
from .tensors import TensorSet

# requantize(clipped float model): quantize it onto the quantized file (--clip)
Requantize = Callable[[Path], object]


@dataclass(frozen=True)
class Statistics:
    """Mean x² per input channel of each weight (an importance matrix) and where it came from."""

    imatrix: Imatrix
    source: str  # "imatrix:<file name>" or "text:<file name>", recorded in the file's provenance
    sha256: str  # of that file


@dataclass
class Protection:
    """What the engine decided: the sidecars and how they were chosen."""

    sidecars: dict[str, Sidecar]
    scalars: list[Scalar]
    scalar_source: str  # "manifest:<file name>" or "activations"
    policy: str  # as recorded in swgguf.provenance.policy
    warnings: list[str] = field(default_factory=list)


@dataclass
class Survey:
    """What the first pass over the tensors keeps: small per-column vectors only."""

    scores: dict[str, np.ndarray]  # salience per column (with a budget)
    chosen: dict[str, np.ndarray]  # columns picked by a per-tensor policy
    scalars: list[Scalar]  # super weights found from the activations


def survey(tensors: TensorSet, policy: ColumnPolicy | None, want_scores: bool,
           progress: Progress = no_progress) -> Survey:
    out = Survey({}, {}, [])
    for i, name in enumerate(tensors.quant):
        progress("scoring columns", i + 1, len(tensors), name)
        t = tensors.get(name)
        if want_scores:
            out.scores[name] = salience(t)
        if policy is not None:
            out.chosen[name] = np.asarray(policy(t), np.int32)
        sw = super_weight_of(t)
        if sw is not None:
            out.scalars.append(sw)
    return out


def build_sidecars(tensors: TensorSet, chosen: dict[str, np.ndarray], scalars: list[Scalar],
                   progress: Progress = no_progress) -> dict[str, Sidecar]:
    """Second pass: the sidecars of the tensors with chosen columns or scalars, residuals from
    the quantized bytes."""
    positions = by_weight(scalars)
    out = {}
    names = [n for n in tensors.quant if chosen.get(n, np.zeros(0)).size or n in positions]
    for i, n in enumerate(names):
        progress("building sidecars", i + 1, len(names), n)
        t = tensors.get(n)
        picked = chosen.get(n, np.zeros(0, np.int32))
        err = column_error(t) if picked.size else None
        cols = [int(c) for c in picked if err[c] > 0]  # an exact column needs no residual
        if not cols and n not in positions:
            continue
        base = weight_base(n)
        out[base] = build_sidecar(base, t.w_true, t.w_deq, cols, positions.get(n, []))
    return out


def protect(float_model: Path, quantized: Path, stats: Statistics, opts: ProtectOptions, *,
            requantize: Requantize | None = None, work: Path | None = None,
            progress: Progress = no_progress) -> Protection:
    """The sidecars of ``quantized`` (a quantization of ``float_model``) under ``opts``.

    With ``opts.clip`` and super weights found, the float model's super weights are
    replaced by their block medians in a copy under ``work``, which ``requantize``
    quantizes onto ``quantized`` before the sidecars are built from it."""
    policy, budget_text = opts.column_policy(), opts.budget_text()
    tensors = TensorSet(float_model, quantized, stats.imatrix)
    found = survey(tensors, policy, budget_text is not None, progress)
    warnings = []
    if opts.manifest is not None:
        scalars, scalar_source = scalars_from_manifest(opts.manifest, tensors), f"manifest:{opts.manifest.name}"
    else:
        scalars, scalar_source = found.scalars, "activations"
    if not scalars:
        warnings.append("no super weight found: only salient columns are protected")
    if opts.clip and scalars:
        requantize(clip_outliers(float_model, quantized, scalars, work / "clipped.gguf"))
        tensors = TensorSet(float_model, quantized, stats.imatrix)  # true weights, clipped quantization
        found = survey(tensors, policy, budget_text is not None, progress)
    chosen = found.chosen
    if budget_text is not None:
        budget = parse_budget(budget_text, quantized.stat().st_size, tensors.column_bytes())
        chosen = allocate_budget(found.scores, tensors.n_out(), budget,
                                          max_per_tensor=opts.max_per_tensor(), max_tensors=opts.max_tensors)
    sidecars = build_sidecars(tensors, chosen, scalars, progress)
    return Protection(sidecars, scalars, scalar_source, opts.policy_name(), warnings)
