"""What a unit of the error proxy costs in KLD, per group of tensors: the proxy's
calibration against the model's own output (docs/optimizer.md, "Sensitivity").

The proxy err(W, Q) = sum_j E[x_j^2] * ||W_j - Q_j||^2 is a tensor's own output error.
How much of it reaches the logits depends on where the tensor sits: measured on
SmolLM2, a unit of proxy in the first layers' attn_v costs about 200 times the KLD of
one in the last layers' ffn_down. A greedy on the plain proxy therefore spends where
the proxy is large, not where the logits are sensitive.

So, per group (tensor kind x third of the depth), the model is run with that group's
tensors at their cheapest option and everything else at Q8_0 (the group's tensors
copied from a file with every planned tensor at its cheapest option into the Q8_0
file, so that llama.cpp quantizes twice, not once per group). The group's factor is
the mean KLD it adds over the Q8_0 file, against the float model on the calibration
text (paired per token), divided by the group's proxy. The planner then sees each
tensor's error and column gains multiplied by its group's factor: the error in
predicted nats of KLD. A factor is floored at one standard error of its measurement
(a group whose change is lost in noise still counts a little).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import runtime
from ..evaluate import Evaluator, KldAccumulator, ModelSpec, Window
from ..formats import gguf_io
from ..formats.files import write_text
from ..formats.imatrix import Imatrix
from ..progress import Progress, no_progress
from .measure import override_patterns
from .tables import Tables, TensorTable

BASE = "Q8_0"  # the rest of the model while a group is measured: close to the float model
DEPTHS = 3  # a kind's layers in this many bands (early, middle, late)


@dataclass
class GroupFactor:
    tensors: int
    proxy: float  # the group's summed proxy at the cheapest option
    kld_added: float  # mean per-token KLD over the BASE file
    kld_added_stderr: float
    layers: tuple[int, int] = (-1, -1)  # first and last layer of the group (-1: not in a layer)

    @property
    def factor(self) -> float:
        """Nats of KLD per unit of proxy (floored at one standard error of the change)."""
        return max(self.kld_added, self.kld_added_stderr) / self.proxy if self.proxy > 0 else 0.0


def _layer_and_kind(name: str) -> tuple[int, str] | None:
    """'blk.17.attn_v.weight' -> (17, 'attn_v.weight'); None outside the layers."""
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    return (int(m.group(1)), m.group(2)) if m else None


def _layers(names: Sequence[str]) -> list[int]:
    return [lk[0] for n in names if (lk := _layer_and_kind(n))]


def _layer_range(names: Sequence[str]) -> tuple[int, int]:
    """The first and last layer of ``names``; (-1, -1) outside the layers."""
    layers = _layers(names)
    return (min(layers), max(layers)) if layers else (-1, -1)


def tensor_group(name: str, n_layers: int, depths: int = DEPTHS) -> str:
    """'blk.17.attn_v.weight' in 30 layers -> 'attn_v.weight@1' (its third of the depth)."""
    lk = _layer_and_kind(name)
    if lk is None:
        return name
    return f"{lk[1]}@{depths * lk[0] // n_layers}"


def tensor_groups(names: Sequence[str], depths: int = DEPTHS) -> dict[str, list[str]]:
    layers = _layers(names)
    n_layers = max(layers) + 1 if layers else 1
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(tensor_group(name, n_layers, depths), []).append(name)
    return out


def weigh(tables: Tables, factors: dict[str, GroupFactor]) -> Tables:
    """``tables`` with each tensor's errors and column gains times its group's factor
    (the group of its kind whose layers hold it: ``tables`` may hold fewer tensors than
    were measured)."""
    scale = {n: factor_of(n, factors) for n in tables.tensors}
    tensors = {n: TensorTable(n, t.n_out, [replace(o, error=o.error * scale[n], col_gains=o.col_gains * scale[n])
                                            for o in t.options]) for n, t in tables.tensors.items()}
    return Tables(tables.base_ftype, tables.fixed_bytes, tensors, f"{tables.source}; weighed by measured KLD per group")


def factor_of(name: str, factors: dict[str, GroupFactor]) -> float:
    """The factor of ``name``'s group: the group of its kind whose layers hold it."""
    lk = _layer_and_kind(name)
    if lk is None:
        return factors[name].factor
    layer, kind = lk
    for group, f in factors.items():
        if group.split("@")[0] == kind and f.layers[0] <= layer <= f.layers[1]:
            return f.factor
    raise KeyError(f"no measured sensitivity for {name}")


def measure_factors(float_path: Path, tables: Tables, windows: Sequence[Window], work: Path, *, ctx: int,
                    quant_imatrix: Imatrix | None = None, imatrix_file: str | None = None, nthread: int = 0,
                    progress: Progress = no_progress) -> dict[str, GroupFactor]:
    """Each group's :class:`GroupFactor` (module docstring), on ``windows`` of text."""
    groups = tensor_groups(list(tables.tensors))
    cheapest = {n: t.options[0].requested for n, t in tables.tensors.items()}
    q = dict(nthread=nthread, imatrix=quant_imatrix, imatrix_file=imatrix_file)
    base = runtime.quantize(float_path, work / "sensitivity-base.gguf", BASE, **q)
    cheap = runtime.quantize(float_path, work / "sensitivity-cheap.gguf", BASE,
                             tensor_types=override_patterns(cheapest), **q)
    reference = logit_rows(float_path, windows, ctx)
    base_kld = kld_per_token(base, windows, reference, ctx)
    cheap_tensors = {t.name: t for t in gguf_io.open_gguf(cheap).tensors}
    base_reader = gguf_io.open_gguf(base)
    out = {}
    for i, (group, names) in enumerate(sorted(groups.items())):
        progress("measuring sensitivity", i + 1, len(groups), group)
        variant = gguf_io.copy_gguf(base_reader, work / "sensitivity-variant.gguf",
                                    swap={n: cheap_tensors[n] for n in names})
        d = kld_per_token(variant, windows, reference, ctx) - base_kld
        variant.unlink()
        out[group] = GroupFactor(len(names), sum(tables.tensors[n].options[0].error for n in names),
                                 float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)),
                                 _layer_range(names))
    base.unlink()
    cheap.unlink()
    return out


def save_factors(factors: dict[str, GroupFactor], path: Path) -> Path:
    return write_text(json.dumps({g: asdict(f) for g, f in factors.items()}, indent=1) + "\n", path)


def load_factors(path: Path) -> dict[str, GroupFactor]:
    return {g: GroupFactor(**{**f, "layers": tuple(f["layers"])}) for g, f in json.loads(Path(path).read_text()).items()}


def logit_rows(path: Path, windows: Sequence[Window], ctx: int) -> list[np.ndarray]:
    """The scored rows of logits of each window (float32, in memory)."""
    ev = Evaluator(ModelSpec(path), runtime.LoadOptions(n_ctx=ctx, n_batch=ctx))
    try:
        return [ev.logits(w.tokens)[w.score_from: len(w.tokens) - 1].copy() for w in windows]
    finally:
        ev.close()


def kld_per_token(path: Path, windows: Sequence[Window], reference: list[np.ndarray], ctx: int) -> np.ndarray:
    """Per-token KLD of ``path`` against the reference rows."""
    acc = KldAccumulator()
    rows = logit_rows(path, windows, ctx)
    for ref, got in zip(reference, rows):
        acc.add(ref, got)
    return acc.values()
