"""How a protected file was made, as the ``swgguf.provenance.*`` keys it records
(informational: the runtime does not read them; docs/convert.md lists them)."""

from __future__ import annotations

from pathlib import Path

import gguf

from .. import __version__
from ..formats.files import sha256_file
from ..formats.sidecar import KEY_PROVENANCE_PREFIX, KEY_SWGGUF_VERSION
from .engine import Protection, Statistics

PROV = KEY_PROVENANCE_PREFIX
KEY_FTYPE = PROV + "ftype"
KEY_POLICY = PROV + "policy"
KEY_COLS_PER_TENSOR = PROV + "cols_per_tensor"
KEY_SCALARS = PROV + "super_weights"
KEY_SCALAR_SOURCE = PROV + "super_weight_source"
KEY_MANIFEST_SHA = PROV + "manifest_sha256"
KEY_CALIB_SHA = PROV + "calibration_sha256"
KEY_CALIB_SOURCE = PROV + "calibration_source"
KEY_IMATRIX_QUANT = PROV + "imatrix_in_quantization"
KEY_CLIP = PROV + "clip"


def provenance(protection: Protection, stats: Statistics, *, ftype: str, manifest: Path | None,
               imatrix_in_quantization: bool, clip: bool) -> dict[str, object]:
    """The keys, in the order they are written."""
    return {
        KEY_SWGGUF_VERSION: __version__,
        KEY_FTYPE: ftype,
        KEY_POLICY: protection.policy,
        KEY_COLS_PER_TENSOR: ([sc.n_cols for sc in protection.sidecars.values()], gguf.GGUFValueType.UINT32),
        KEY_SCALARS: [s.label() for s in protection.scalars] or [""],
        KEY_SCALAR_SOURCE: protection.scalar_source,
        KEY_MANIFEST_SHA: sha256_file(manifest) if manifest else "",
        KEY_CALIB_SHA: stats.sha256 or "",
        KEY_CALIB_SOURCE: stats.source or "",
        KEY_IMATRIX_QUANT: imatrix_in_quantization,
        KEY_CLIP: bool(clip),
    }
