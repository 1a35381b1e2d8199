"""Which super weights a file has, and a copy of it whose sidecars carry them as
super-weight scalars (what the runtime's ``SWGGUF_SW_SCALE`` scales).

A file whose sidecar does not carry the super weights (or that has none) gets a
copy with a sidecar of just those scalars (residual zero, value = what the file
applies), so alpha = 1 is the file exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import gguf
import numpy as np

from ..errors import SwggufError
from ..formats import gguf_io
from ..formats.manifest import Manifest, SuperWeight
from ..formats.sidecar import (WEIGHT_SUFFIX, Sidecar, read_sidecars, replace_sidecars, sidecars_from_reader,
                               weight_base)


@dataclass(frozen=True)
class SuperWeightSite:
    tensor: str  # GGUF weight name, e.g. blk.11.ffn_down.weight
    row: int
    col: int
    value: float  # what the file applies at (row, col): dequantized weight + sidecar residual
    value_manifest: float | None = None
    source: str = "sidecar"  # "sidecar", "manifest" or "manifest candidates"

    @property
    def base(self) -> str:
        return weight_base(self.tensor)


def applied_value(t: gguf.ReaderTensor, sidecar: Sidecar | None, row: int, col: int) -> float:
    """The weight the runtime uses at (row, col): dequantized row (one row only: cheap
    for large tensors) plus the sidecar's residual where that column is protected."""
    w = float(gguf_io.dequantize_row(t, row)[col])
    if sidecar is not None:
        k = np.searchsorted(sidecar.cols, col)
        if k < sidecar.n_cols and sidecar.cols[k] == col:
            w += float(sidecar.resid[row, k])
    return w


def find_super_weights(path: str | Path, manifest: Manifest | None = None) -> list[SuperWeightSite]:
    """The super weights of ``path``: from ``manifest`` if given, else the super-weight
    scalars of the file's sidecars."""
    path = Path(path)
    reader = gguf_io.open_gguf(path)
    sidecars = sidecars_from_reader(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    if manifest is None:
        sites = [SuperWeightSite(base + WEIGHT_SUFFIX, int(r), int(c), applied_value(
            tensors[base + WEIGHT_SUFFIX], sc, int(r), int(c)), source="sidecar")
            for base, sc in sidecars.items() for r, c in sc.sw_pos]
        if not sites:
            raise SwggufError("no super weights known for this file: it has no sidecar with super-weight "
                              "scalars and no --manifest was given; run `swgguf detect FILE --out manifest.json` "
                              "(on it or on its source model) first and pass --manifest manifest.json", path)
        return sites
    chosen, source = manifest.super_weights, "manifest"
    if not chosen:
        chosen, source = manifest.candidates, "manifest candidates"
    if not chosen:
        raise SwggufError("the manifest lists no super weight (nor candidate): nothing to ablate; "
                          "run `swgguf detect` again", path)
    return [_manifest_site(sw, tensors, sidecars, source, path) for sw in chosen]


def _manifest_site(sw: SuperWeight, tensors: dict[str, gguf.ReaderTensor], sidecars: dict[str, Sidecar],
                   source: str, path: Path) -> SuperWeightSite:
    t = tensors.get(sw.tensor)
    if t is None:
        raise SwggufError(f"the manifest's super weight is in '{sw.tensor}', which this file does not "
                          "have: the manifest is for another model", path)
    n_out, n_in = gguf_io.tensor_shape(t)
    if not (0 <= sw.row < n_out and 0 <= sw.col < n_in):
        raise SwggufError(f"the manifest's super weight [{sw.row}, {sw.col}] is outside '{sw.tensor}' "
                          f"({n_out} x {n_in}): the manifest is for another model", path)
    value = applied_value(t, sidecars.get(weight_base(sw.tensor)), sw.row, sw.col)
    return SuperWeightSite(sw.tensor, sw.row, sw.col, value, float(sw.value), source)


def carries_scalars(path: str | Path, sites: Sequence[SuperWeightSite]) -> bool:
    """Whether the file's sidecars hold a super-weight scalar at every site (and no other)."""
    have = {(b, int(r), int(c)) for b, sc in read_sidecars(path).items() for r, c in sc.sw_pos}
    return have == {(s.base, s.row, s.col) for s in sites}


def with_scalars(sidecar: Sidecar | None, shape: tuple[int, int], sites: Sequence[SuperWeightSite]) -> Sidecar:
    """``sidecar`` (or an empty one) with super-weight scalars at ``sites`` and nothing else
    changed: a new column's residual is zero, each scalar's value is what the file applies,
    so at SWGGUF_SW_SCALE=1 the runtime computes exactly what it computed before."""
    base = sites[0].base
    old_cols = sidecar.cols if sidecar is not None else np.zeros(0, np.int32)
    cols = np.union1d(old_cols, [s.col for s in sites]).astype(np.int32)
    resid = np.zeros((shape[0], cols.size), np.float16)
    if sidecar is not None:
        resid[:, np.searchsorted(cols, old_cols)] = sidecar.resid
    # keep only the sites' scalars: SWGGUF_SW_SCALE scales all scalars of a file
    return Sidecar(base=base, shape=shape, cols=cols, resid=resid,
                   sw_pos=np.array([[s.row, s.col] for s in sites], np.int32).reshape(-1, 2),
                   sw_val=np.array([s.value for s in sites], np.float16))


def write_scalar_copy(src: str | Path, dst: str | Path, sites: Sequence[SuperWeightSite]) -> Path:
    """Copy of ``src`` whose sidecars carry exactly ``sites`` as super-weight scalars."""
    reader = gguf_io.open_gguf(src)
    existing = sidecars_from_reader(reader, src)
    shapes = {t.name: gguf_io.tensor_shape(t) for t in reader.tensors}
    by_base: dict[str, list[SuperWeightSite]] = {}
    for s in sites:
        by_base.setdefault(s.base, []).append(s)
    changed: dict[str, Sidecar] = {}
    for base, sc in existing.items():  # scalars elsewhere would be scaled too: drop them
        if sc.n_scalars and base not in by_base:
            changed[base] = Sidecar(base, sc.shape, sc.cols, sc.resid)
    for base, group in by_base.items():
        changed[base] = with_scalars(existing.get(base), shapes[base + WEIGHT_SUFFIX], group)  # type: ignore[arg-type]
    return replace_sidecars(src, dst, changed)


def pruned_leftover(driver: str | Path, sites: Sequence[SuperWeightSite]) -> float:
    """Largest |w| left at alpha = 0: the runtime subtracts the float16 scalar stored in
    the driver's sidecar from the weight it applies."""
    sidecars = read_sidecars(driver)
    left = 0.0
    for s in sites:
        sc = sidecars[s.base]
        k = next(i for i, (r, c) in enumerate(sc.sw_pos) if (int(r), int(c)) == (s.row, s.col))
        left = max(left, abs(s.value - float(sc.sw_val[k])))
    return left
