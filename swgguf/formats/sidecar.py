"""The outlier sidecar: the GGUF tensors and keys that carry, next to a
quantized weight tensor, the values low-bit quantization destroyed.

The format is specified in docs/sidecar.md; this module is that spec as code.
The patched runtime (patches/llama.cpp) checks the same rules in C++.

For a weight tensor ``<base>.weight`` of numpy shape ``(n_out, n_in)`` (GGUF
``ne = [n_in, n_out]``), its sidecar is:

======================  =========  ==================  =========================================
tensor                  type       numpy shape         meaning
======================  =========  ==================  =========================================
``<base>.swg_cols``     I32        ``(K,)``            protected input columns, strictly increasing
``<base>.swg_resid``    F16        ``(n_out, K)``      R = W_true - dequant(W_q) at those columns
``<base>.swg_sw_pos``   I32        ``(S, 2)``          super-weight scalars: (row, col); col in cols
``<base>.swg_sw_val``   F16        ``(S,)``            their true values
======================  =========  ==================  =========================================

The runtime adds ``R @ x[cols]`` to ``W_q @ x``. A super weight whose column
is not otherwise protected is carried as a column whose residual is zero
except at the scalar's row. None of these names ends in ``weight``, so
``llama_model_quantize`` copies them untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import gguf
import numpy as np

from ..errors import SwggufError
from . import gguf_io

__all__ = [
    "SIDECAR_VERSION", "KEY_VERSION", "KEY_TENSORS", "KEY_WEIGHT_TYPES", "KEY_SWGGUF_VERSION",
    "KEY_PROVENANCE_PREFIX", "SUFFIX_COLS", "SUFFIX_RESID", "SUFFIX_SW_POS", "SUFFIX_SW_VAL", "SUFFIXES",
    "WEIGHT_SUFFIX", "MAX_COLS", "RESID_BYTES", "INDEX_BYTES", "column_bytes", "sidecar_base", "weight_base",
    "Sidecar", "validate_arrays", "build_sidecar", "read_sidecars", "sidecars_from_reader", "sidecar_keys",
    "write_with_sidecars", "replace_sidecars", "Census", "census",
]

# --- format constants -------------------------------------------------------

SIDECAR_VERSION = 1

KEY_VERSION = "swgguf.sidecar.version"            # u32
KEY_TENSORS = "swgguf.sidecar.tensors"            # [string]: protected weight base names
KEY_WEIGHT_TYPES = "swgguf.sidecar.weight_types"  # [u32]: GGML type of each weight, same order
# provenance (informational; the runtime does not read these)
KEY_SWGGUF_VERSION = "swgguf.version"
KEY_PROVENANCE_PREFIX = "swgguf.provenance."

SUFFIX_COLS = ".swg_cols"
SUFFIX_RESID = ".swg_resid"
SUFFIX_SW_POS = ".swg_sw_pos"
SUFFIX_SW_VAL = ".swg_sw_val"
SUFFIXES = (SUFFIX_COLS, SUFFIX_RESID, SUFFIX_SW_POS, SUFFIX_SW_VAL)
WEIGHT_SUFFIX = ".weight"

# A column costs n_out * 2 bytes in the file and n_out * 4 + n_in * 4 bytes at
# run time; the cap keeps a crafted file from asking for gigabytes.
MAX_COLS = 1024

# bytes of one protected column in the file: an F16 residual per output row + its I32 index
RESID_BYTES = 2
INDEX_BYTES = 4


def column_bytes(n_out: int) -> int:
    """File bytes of one protected column of a weight with ``n_out`` output rows."""
    return n_out * RESID_BYTES + INDEX_BYTES


def sidecar_base(tensor_name: str) -> str | None:
    """``blk.0.ffn_down.swg_cols`` -> ``blk.0.ffn_down``; None for other tensors."""
    for suffix in SUFFIXES:
        if tensor_name.endswith(suffix):
            return tensor_name[: -len(suffix)]
    return None


def weight_base(weight_name: str) -> str:
    """``blk.0.ffn_down.weight`` -> ``blk.0.ffn_down``, the name its sidecar is keyed by."""
    return weight_name.removesuffix(WEIGHT_SUFFIX)


@dataclass
class Sidecar:
    """The sidecar of one weight tensor ``<base>.weight`` of shape (n_out, n_in)."""

    base: str
    shape: tuple[int, int]  # (n_out, n_in) of the weight
    cols: np.ndarray  # int32 (K,)
    resid: np.ndarray  # float16 (n_out, K)
    sw_pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))  # int32 (S, 2)
    sw_val: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float16))  # float16 (S,)

    @property
    def n_cols(self) -> int:
        return int(self.cols.shape[0])

    @property
    def n_scalars(self) -> int:
        return int(self.sw_pos.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.cols, self.resid, self.sw_pos, self.sw_val))

    def validate(self) -> None:
        """Raise SwggufError unless this sidecar obeys docs/sidecar.md."""
        validate_arrays(self.base, self.shape, self.cols, self.resid, self.sw_pos, self.sw_val)

    def tensors(self) -> list[tuple[str, np.ndarray]]:
        """The GGUF tensors (name, numpy array) of this sidecar."""
        out = [
            (self.base + SUFFIX_COLS, np.ascontiguousarray(self.cols, dtype=np.int32)),
            (self.base + SUFFIX_RESID, np.ascontiguousarray(self.resid, dtype=np.float16)),
        ]
        if self.n_scalars:
            out.append((self.base + SUFFIX_SW_POS, np.ascontiguousarray(self.sw_pos, dtype=np.int32)))
            out.append((self.base + SUFFIX_SW_VAL, np.ascontiguousarray(self.sw_val, dtype=np.float16)))
        return out

    def dense_correction(self, sw_scale: float = 1.0) -> np.ndarray:
        """The float32 (n_out, n_in) matrix the runtime adds to dequant(W_q).

        With ``sw_scale`` = a, each super-weight scalar is applied as a * w_true
        (a = 0 prunes it), as ``SWGGUF_SW_SCALE`` does in the runtime.
        """
        n_out, n_in = self.shape
        delta = np.zeros((n_out, n_in), np.float32)
        delta[:, self.cols] = self.resid.astype(np.float32)
        if self.n_scalars and sw_scale != 1.0:
            rows, cols = self.sw_pos[:, 0], self.sw_pos[:, 1]
            delta[rows, cols] += (sw_scale - 1.0) * self.sw_val.astype(np.float32)
        return delta


def validate_arrays(
    base: str,
    shape: tuple[int, int],
    cols: np.ndarray,
    resid: np.ndarray,
    sw_pos: np.ndarray,
    sw_val: np.ndarray,
) -> None:
    """The checks of docs/sidecar.md section "Validity", with the bad value quoted."""
    n_out, n_in = shape

    def bad(message: str) -> SwggufError:
        return SwggufError(f"sidecar of '{base}': {message}")

    if cols.dtype != np.int32 or cols.ndim != 1:
        raise bad(f"swg_cols must be int32 of one dimension, got {cols.dtype} {cols.shape}")
    k = cols.shape[0]
    if not 1 <= k <= min(n_in, MAX_COLS):
        raise bad(f"swg_cols has {k} entries, expected 1..{min(n_in, MAX_COLS)}")
    if cols.min() < 0 or cols.max() >= n_in:
        raise bad(f"column index {int(cols.min() if cols.min() < 0 else cols.max())} out of range [0, {n_in})")
    if k > 1 and not np.all(np.diff(cols) > 0):
        raise bad("swg_cols must be strictly increasing")
    if resid.dtype != np.float16 or resid.shape != (n_out, k):
        raise bad(f"swg_resid must be float16 of shape ({n_out}, {k}), got {resid.dtype} {resid.shape}")
    if not np.all(np.isfinite(resid)):
        raise bad("swg_resid holds a non-finite value")
    if sw_pos.dtype != np.int32 or sw_pos.ndim != 2 or sw_pos.shape[1] != 2:
        raise bad(f"swg_sw_pos must be int32 of shape (S, 2), got {sw_pos.dtype} {sw_pos.shape}")
    if sw_val.dtype != np.float16 or sw_val.shape != (sw_pos.shape[0],):
        raise bad(f"swg_sw_val must be float16 of shape ({sw_pos.shape[0]},), got {sw_val.dtype} {sw_val.shape}")
    if sw_pos.shape[0]:
        rows, pcols = sw_pos[:, 0], sw_pos[:, 1]
        if rows.min() < 0 or rows.max() >= n_out:
            raise bad(f"super-weight row {int(rows.min() if rows.min() < 0 else rows.max())} out of range [0, {n_out})")
        missing = np.setdiff1d(pcols, cols)
        if missing.size:
            raise bad(f"super-weight column {int(missing[0])} is not among swg_cols")
        if len({(int(r), int(c)) for r, c in sw_pos}) != sw_pos.shape[0]:
            raise bad("swg_sw_pos lists a position twice")
        if not np.all(np.isfinite(sw_val)):
            raise bad("swg_sw_val holds a non-finite value")


# --- building a sidecar from the quantized bytes ------------------------------


def build_sidecar(
    base: str,
    w_true: np.ndarray,
    w_deq: np.ndarray,
    cols: Iterable[int],
    scalars: Iterable[tuple[int, int]] = (),
) -> Sidecar:
    """Sidecar for weight ``base`` from the true weight and dequant(W_q), both (n_out, n_in).

    The residual is computed in float32 from what the quantizer actually wrote
    and stored as float16: |R| is at most a quantization step, so its float16
    rounding error (2^-11 relative) is far below that of W_true itself.
    Scalar columns not in ``cols`` get a residual only at the scalar's row.
    """
    n_out, n_in = w_true.shape
    scalars = sorted({(int(r), int(c)) for r, c in scalars})
    all_cols = np.array(sorted(set(int(c) for c in cols) | {c for _, c in scalars}), dtype=np.int32)
    full = set(int(c) for c in cols)
    resid = np.zeros((n_out, all_cols.size), np.float32)
    for k, c in enumerate(all_cols):
        if int(c) in full:
            resid[:, k] = w_true[:, c].astype(np.float32) - w_deq[:, c].astype(np.float32)
    for r, c in scalars:
        k = int(np.searchsorted(all_cols, c))
        resid[r, k] = np.float32(w_true[r, c]) - np.float32(w_deq[r, c])
    sidecar = Sidecar(
        base=base,
        shape=(n_out, n_in),
        cols=all_cols,
        resid=resid.astype(np.float16),
        sw_pos=np.array(scalars, dtype=np.int32).reshape(-1, 2),
        sw_val=np.array([w_true[r, c] for r, c in scalars], dtype=np.float16),
    )
    sidecar.validate()
    return sidecar


# --- reading a file's sidecars --------------------------------------------------


def read_sidecars(path: str | Path) -> dict[str, Sidecar]:
    """All sidecars of a GGUF file, validated; {} for a file without any."""
    return sidecars_from_reader(gguf_io.open_gguf(path), path)


def sidecars_from_reader(reader: gguf.GGUFReader, path: str | Path = "") -> dict[str, Sidecar]:
    """The sidecars of an open file, checked against its keys and weights as the runtime does."""
    tensors = {t.name: t for t in reader.tensors}
    parts: dict[str, dict[str, gguf.ReaderTensor]] = {}
    for name, t in tensors.items():
        base = sidecar_base(name)
        if base is not None:
            parts.setdefault(base, {})[name[len(base):]] = t
    listed = _listed_sidecars(reader, parts, path)
    out = {}
    for base, weight_type in listed.items():
        sidecar = _sidecar_from_parts(base, parts[base], tensors.get(base + WEIGHT_SUFFIX), weight_type, path)
        try:
            sidecar.validate()
        except SwggufError as err:
            raise SwggufError(str(err), path) from None
        out[base] = sidecar
    return out


def _listed_sidecars(reader: gguf.GGUFReader, parts: Mapping[str, object], path: str | Path) -> dict[str, int]:
    """Base -> weight type, as the keys list them; they must list exactly the sidecars present."""
    version = gguf_io.field_value(reader, KEY_VERSION)
    if not parts:
        if version is not None:
            raise SwggufError(f"{KEY_VERSION} is set but the file holds no sidecar tensor", path)
        return {}
    if version != SIDECAR_VERSION:
        raise SwggufError(f"{KEY_VERSION} is {version!r}, expected {SIDECAR_VERSION}", path)
    listed = list(gguf_io.field_value(reader, KEY_TENSORS) or [])
    types = list(gguf_io.field_value(reader, KEY_WEIGHT_TYPES) or [])
    if len(listed) != len(types) or sorted(listed) != sorted(parts):
        raise SwggufError(f"{KEY_TENSORS} lists {sorted(listed)} but the file has sidecars for {sorted(parts)}", path)
    return dict(zip(listed, (int(t) for t in types)))


def _sidecar_from_parts(base: str, have: Mapping[str, gguf.ReaderTensor], weight: gguf.ReaderTensor | None,
                        weight_type: int, path: str | Path) -> Sidecar:
    """One sidecar from its tensors, checked against its weight (not yet validated)."""
    for pair in ((SUFFIX_COLS, SUFFIX_RESID), (SUFFIX_SW_POS, SUFFIX_SW_VAL)):
        present = [s in have for s in pair]
        if any(present) and not all(present):
            raise SwggufError(f"sidecar of '{base}' has {pair[present.index(True)]} without its pair", path)
    if SUFFIX_COLS not in have:
        raise SwggufError(f"sidecar of '{base}' has no {SUFFIX_COLS}", path)
    if weight is None:
        raise SwggufError(f"sidecar for '{base}{WEIGHT_SUFFIX}', which is not in the file", path)
    if int(weight.tensor_type) != weight_type:
        raise SwggufError(f"'{base}{WEIGHT_SUFFIX}' is {weight.tensor_type.name} but its sidecar was made for "
                          f"{gguf.GGMLQuantizationType(weight_type).name}: the residuals are stale", path)
    shape = gguf_io.tensor_shape(weight)
    if len(shape) != 2:
        raise SwggufError(f"sidecar for '{base}{WEIGHT_SUFFIX}' of {len(shape)} dimensions (2 needed)", path)

    def arr(suffix: str, empty: np.ndarray) -> np.ndarray:
        t = have.get(suffix)
        return empty if t is None else np.asarray(t.data).reshape(gguf_io.tensor_shape(t))

    return Sidecar(base=base, shape=shape,  # type: ignore[arg-type]
                   cols=arr(SUFFIX_COLS, np.zeros(0, np.int32)), resid=arr(SUFFIX_RESID, np.zeros((0, 0), np.float16)),
                   sw_pos=arr(SUFFIX_SW_POS, np.zeros((0, 2), np.int32)),
                   sw_val=arr(SUFFIX_SW_VAL, np.zeros((0,), np.float16)))


# --- writing ----------------------------------------------------------------------


def sidecar_keys(bases: Iterable[str], weight_types: Mapping[str, int]) -> dict[str, object]:
    """The keys that list the sidecars ``bases`` (in order) and their weights' types."""
    bases = list(bases)
    return {KEY_VERSION: (SIDECAR_VERSION, gguf.GGUFValueType.UINT32),
            KEY_TENSORS: bases,
            KEY_WEIGHT_TYPES: ([weight_types[b + WEIGHT_SUFFIX] for b in bases], gguf.GGUFValueType.UINT32)}


def write_with_sidecars(src: str | Path, dst: str | Path, sidecars: Mapping[str, Sidecar],
                        extra_kv: Mapping[str, object] | None = None) -> Path:
    """Copy GGUF ``src`` to ``dst`` adding validated ``sidecars`` and the sidecar keys."""
    reader = gguf_io.open_gguf(src)
    weight_types = {t.name: int(t.tensor_type) for t in reader.tensors}
    for base, sc in sidecars.items():
        sc.validate()
        if base + WEIGHT_SUFFIX not in weight_types:
            raise SwggufError(f"no tensor '{base}{WEIGHT_SUFFIX}' for its sidecar", src)
        if any(name in weight_types for name, _ in sc.tensors()):
            raise SwggufError(f"'{base}' already has a sidecar", src)
    kv = sidecar_keys(sidecars, weight_types) if sidecars else {}
    kv.update(extra_kv or {})
    tensors = [t for sc in sidecars.values() for t in sc.tensors()]
    return gguf_io.copy_gguf(reader, dst, add=tensors, kv=kv)


def replace_sidecars(src: str | Path, dst: str | Path, changed: Mapping[str, Sidecar]) -> Path:
    """Copy GGUF ``src`` to ``dst`` with the sidecars in ``changed`` (by base) in place of
    the file's own for those weights (or added); the others are kept as they are."""
    reader = gguf_io.open_gguf(src)
    existing = sidecars_from_reader(reader, src)
    weight_types = {t.name: int(t.tensor_type) for t in reader.tensors}
    for base, sc in changed.items():
        sc.validate()
        if base + WEIGHT_SUFFIX not in weight_types:
            raise SwggufError(f"no tensor '{base}{WEIGHT_SUFFIX}' for its sidecar", src)
    final = {**existing, **changed}
    drop = {t.name for t in reader.tensors if sidecar_base(t.name) in changed}
    tensors = [t for sc in changed.values() for t in sc.tensors()]
    return gguf_io.copy_gguf(reader, dst, add=tensors, drop=drop, kv=sidecar_keys(final, weight_types))


# --- what a file's tensors weigh -----------------------------------------------------


@dataclass(frozen=True)
class Census:
    """A GGUF's tensors by kind: the model's own (weights, norms, ...) and its sidecars."""

    file_bytes: int
    file_type: str  # llama.cpp's name of general.file_type, e.g. Q4_K_M
    n_params: int  # elements of the model's tensors
    weight_bytes: int  # bytes of the model's tensors
    sidecar_bytes: int
    tensor_types: dict[str, tuple[int, int]]  # type of the model's tensors -> (tensors, bytes), by name


def census(path: str | Path) -> Census:
    reader = gguf_io.open_gguf(path)
    types: dict[str, list[int]] = {}
    weight_bytes = n_params = side_bytes = 0
    for t in reader.tensors:
        if sidecar_base(t.name) is not None:
            side_bytes += int(t.n_bytes)
            continue
        weight_bytes += int(t.n_bytes)
        n_params += int(t.n_elements)
        entry = types.setdefault(t.tensor_type.name, [0, 0])
        entry[0] += 1
        entry[1] += int(t.n_bytes)
    file_type = gguf_io.field_value(reader, gguf_io.KEY_FILE_TYPE)
    return Census(Path(path).stat().st_size, gguf_io.file_type_name(None if file_type is None else int(file_type)),
                  n_params, weight_bytes, side_bytes, {k: (v[0], v[1]) for k, v in sorted(types.items())})
