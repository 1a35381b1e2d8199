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

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import gguf
import numpy as np

from ..errors import SwggufError
from . import gguf_io
from .sidecar_hash import swg64

__all__ = [
    "SIDECAR_VERSION", "UNHASHED_VERSION", "KEY_VERSION", "KEY_TENSORS", "KEY_WEIGHT_TYPES", "KEY_WEIGHT_HASHES",
    "KEY_SWGGUF_VERSION", "LOOKUP_WEIGHTS", "weight_hash", "sidecar_tensor_names",
    "KEY_PROVENANCE_PREFIX", "SUFFIX_COLS", "SUFFIX_RESID", "SUFFIX_SW_POS", "SUFFIX_SW_VAL", "SUFFIXES",
    "WEIGHT_SUFFIX", "MAX_COLS", "RESID_BYTES", "INDEX_BYTES", "column_bytes", "sidecar_base", "weight_base",
    "Sidecar", "validate_arrays", "build_sidecar", "read_sidecars", "sidecars_from_reader", "sidecar_keys",
    "write_with_sidecars", "replace_sidecars",
]

# --- format constants -------------------------------------------------------

# version 2 binds each sidecar to a hash of its weight's bytes; version 1 (no hash)
# is still read, with a warning that it cannot be checked
SIDECAR_VERSION = 2
UNHASHED_VERSION = 1

KEY_VERSION = "swgguf.sidecar.version"              # u32
KEY_TENSORS = "swgguf.sidecar.tensors"              # [string]: protected weight base names
KEY_WEIGHT_TYPES = "swgguf.sidecar.weight_types"    # [u32]: GGML type of each weight, same order
KEY_WEIGHT_HASHES = "swgguf.sidecar.weight_hashes"  # [u64]: swg64 of each weight's bytes, same order
# provenance (informational; the runtime does not read these)
KEY_SWGGUF_VERSION = "swgguf.version"
KEY_PROVENANCE_PREFIX = "swgguf.provenance."

SUFFIX_COLS = ".swg_cols"
SUFFIX_RESID = ".swg_resid"
SUFFIX_SW_POS = ".swg_sw_pos"
SUFFIX_SW_VAL = ".swg_sw_val"
SUFFIXES = (SUFFIX_COLS, SUFFIX_RESID, SUFFIX_SW_POS, SUFFIX_SW_VAL)
WEIGHT_SUFFIX = ".weight"
# weights the graph reads by row (get_rows), not through a matmul: a sidecar there would
# correct at most a tied output projection, never the lookup, so it is refused
LOOKUP_WEIGHTS = ("token_embd", "per_layer_token_embd", "position_embd", "token_types")

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


def sidecar_tensor_names(reader: gguf.GGUFReader) -> list[str]:
    """The names of a file's sidecar tensors."""
    return [t.name for t in reader.tensors if sidecar_base(t.name) is not None]


def weight_hash(t: gguf.ReaderTensor) -> int:
    """swg64 of a tensor's bytes as stored in the file."""
    raw = np.asarray(t.data).reshape(-1).view(np.uint8)
    if raw.size != int(t.n_bytes):
        raise SwggufError(f"tensor '{t.name}' holds {raw.size} bytes, expected {int(t.n_bytes)}")
    return swg64(raw)


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
    for base, rec in listed.items():
        sidecar = _sidecar_from_parts(base, parts[base], tensors.get(base + WEIGHT_SUFFIX), rec, path)
        try:
            sidecar.validate()
        except SwggufError as err:
            raise SwggufError(str(err), path) from None
        out[base] = sidecar
    return out


_warned_unhashed: set[str] = set()


class Record(NamedTuple):
    """What the keys record of one protected weight."""

    weight_type: int
    weight_hash: int | None  # None in a version-1 file


def _key(reader: gguf.GGUFReader, key: str, types: list[gguf.GGUFValueType]) -> object:
    """The value of ``key`` if it is stored with exactly ``types`` (the runtime reads no other), else None."""
    f = reader.get_field(key)
    return f.contents() if f is not None and list(f.types) == types else None


def _listed_sidecars(reader: gguf.GGUFReader, parts: Mapping[str, object], path: str | Path) -> dict[str, Record]:
    """Base -> record, as the keys list them; they must list exactly the sidecars present."""
    if not parts:
        if reader.get_field(KEY_VERSION) is not None:
            raise SwggufError(f"{KEY_VERSION} is set but the file holds no sidecar tensor", path)
        return {}
    version = _key(reader, KEY_VERSION, [gguf.GGUFValueType.UINT32])
    if version not in (SIDECAR_VERSION, UNHASHED_VERSION):
        raise SwggufError(f"{KEY_VERSION} must be the uint32 {UNHASHED_VERSION} or {SIDECAR_VERSION}", path)
    arr = gguf.GGUFValueType.ARRAY
    listed = _key(reader, KEY_TENSORS, [arr, gguf.GGUFValueType.STRING])
    types = _key(reader, KEY_WEIGHT_TYPES, [arr, gguf.GGUFValueType.UINT32])
    if listed is None or types is None or len(listed) != len(types):  # type: ignore[arg-type]
        raise SwggufError(f"{KEY_TENSORS} (strings) and {KEY_WEIGHT_TYPES} (uint32) must be arrays of one length", path)
    hashes: list = [None] * len(listed)  # type: ignore[arg-type]
    if version == SIDECAR_VERSION:
        hashes = _key(reader, KEY_WEIGHT_HASHES, [arr, gguf.GGUFValueType.UINT64])  # type: ignore[assignment]
        if hashes is None or len(hashes) != len(listed):  # type: ignore[arg-type]
            raise SwggufError(f"{KEY_WEIGHT_HASHES} must be an array of uint64 as long as {KEY_TENSORS}", path)
    elif str(path) not in _warned_unhashed:  # once per file: ablate reads a file several times
        _warned_unhashed.add(str(path))
        print(f"swgguf: warning: {path}: sidecar version {UNHASHED_VERSION} records no hash of its weights: "
              "cannot check that the residuals still match the weight bytes", file=sys.stderr)
    if len(set(listed)) != len(listed) or sorted(listed) != sorted(parts):  # type: ignore[arg-type]
        raise SwggufError(f"{KEY_TENSORS} lists {sorted(listed)} but the file has sidecars for {sorted(parts)}", path)  # type: ignore[arg-type]
    return {b: Record(int(t), h) for b, t, h in zip(listed, types, hashes)}  # type: ignore[call-overload]


def _type_name(value: int) -> str:
    try:
        return gguf.GGMLQuantizationType(value).name
    except ValueError:
        return f"type {value} (no GGML type)"


def _check_weight(base: str, weight: gguf.ReaderTensor | None, rec: Record, path: str | Path) -> tuple[int, int]:
    """The weight a sidecar corrects: a 2-D tensor the graph multiplies, of the recorded type and
    bytes. Returns its (n_out, n_in)."""
    if weight is None:
        raise SwggufError(f"sidecar for '{base}{WEIGHT_SUFFIX}', which is not in the file", path)
    if base in LOOKUP_WEIGHTS:
        raise SwggufError(f"sidecar of '{base}': the weight is read by row lookup (get_rows), "
                          "which no sidecar corrects", path)
    ne = _ne4(weight)
    if not (ne[1] > 1 and ne[2] == ne[3] == 1):
        raise SwggufError(f"sidecar for '{base}{WEIGHT_SUFFIX}' of ne {ne}: only 2-D weights can carry a sidecar", path)
    if int(weight.tensor_type) != rec.weight_type:
        raise SwggufError(f"'{base}{WEIGHT_SUFFIX}' is {weight.tensor_type.name} but its sidecar was made for "
                          f"{_type_name(rec.weight_type)}: the residuals are stale", path)
    if rec.weight_hash is not None and weight_hash(weight) != int(rec.weight_hash):
        raise SwggufError(f"the bytes of '{base}{WEIGHT_SUFFIX}' hash to {weight_hash(weight):016x} but its sidecar "
                          f"was made for {int(rec.weight_hash):016x}: the residuals are stale", path)
    return ne[1], ne[0]


def _ne4(t: gguf.ReaderTensor) -> list[int]:
    """GGUF ne padded with 1s to 4 dimensions: llama.cpp's writer drops trailing 1s (a
    one-scalar swg_sw_pos [2, 1] is stored as [2]), so shapes compare in this form."""
    ne = [int(d) for d in t.shape]
    return ne + [1] * (4 - len(ne))


def _part(base: str, have: Mapping[str, gguf.ReaderTensor], suffix: str, qtype: gguf.GGMLQuantizationType,
          ne: tuple[int, int], path: str | Path) -> np.ndarray:
    """A sidecar tensor of the given type and ne, as a numpy array of shape (ne1, ne0)."""
    t = have[suffix]
    if t.tensor_type != qtype:
        raise SwggufError(f"sidecar of '{base}': {suffix} has type {t.tensor_type.name}, expected {qtype.name}", path)
    if _ne4(t) != [ne[0], ne[1], 1, 1]:
        raise SwggufError(f"sidecar of '{base}': {suffix} has ne {_ne4(t)}, expected [{ne[0]}, {ne[1]}]", path)
    return np.asarray(t.data).reshape(ne[1], ne[0])


def _sidecar_from_parts(base: str, have: Mapping[str, gguf.ReaderTensor], weight: gguf.ReaderTensor | None,
                        rec: Record, path: str | Path) -> Sidecar:
    """One sidecar from its tensors, checked against its weight (not yet validated)."""
    for pair in ((SUFFIX_COLS, SUFFIX_RESID), (SUFFIX_SW_POS, SUFFIX_SW_VAL)):
        present = [s in have for s in pair]
        if any(present) and not all(present):
            raise SwggufError(f"sidecar of '{base}' has {pair[present.index(True)]} without its pair", path)
    if SUFFIX_COLS not in have:
        raise SwggufError(f"sidecar of '{base}' has no {SUFFIX_COLS}", path)
    n_out, n_in = _check_weight(base, weight, rec, path)
    k = _ne4(have[SUFFIX_COLS])[0]
    if not 1 <= k <= min(n_in, MAX_COLS):
        raise SwggufError(f"sidecar of '{base}': swg_cols has {k} entries, expected 1..{min(n_in, MAX_COLS)}", path)
    cols = _part(base, have, SUFFIX_COLS, gguf.GGMLQuantizationType.I32, (k, 1), path).reshape(k)
    resid = _part(base, have, SUFFIX_RESID, gguf.GGMLQuantizationType.F16, (k, n_out), path)
    sw_pos, sw_val = np.zeros((0, 2), np.int32), np.zeros((0,), np.float16)
    if SUFFIX_SW_POS in have:
        s = _ne4(have[SUFFIX_SW_POS])[1]
        sw_pos = _part(base, have, SUFFIX_SW_POS, gguf.GGMLQuantizationType.I32, (2, s), path)
        sw_val = _part(base, have, SUFFIX_SW_VAL, gguf.GGMLQuantizationType.F16, (s, 1), path).reshape(s)
        if s < 1:
            raise SwggufError(f"sidecar of '{base}': {SUFFIX_SW_POS} lists no scalar", path)
    return Sidecar(base=base, shape=(n_out, n_in), cols=cols, resid=resid, sw_pos=sw_pos, sw_val=sw_val)


# --- writing ----------------------------------------------------------------------


def sidecar_keys(bases: Iterable[str], weights: Mapping[str, gguf.ReaderTensor]) -> dict[str, object]:
    """The keys that list the sidecars ``bases`` (in order) and their weights' types and hashes,
    from ``weights`` (tensor name -> tensor of the file the sidecars go into)."""
    bases = list(bases)
    ws = [weights[b + WEIGHT_SUFFIX] for b in bases]
    return {KEY_VERSION: (SIDECAR_VERSION, gguf.GGUFValueType.UINT32),
            KEY_TENSORS: bases,
            KEY_WEIGHT_TYPES: ([int(w.tensor_type) for w in ws], gguf.GGUFValueType.UINT32),
            KEY_WEIGHT_HASHES: ([weight_hash(w) for w in ws], gguf.GGUFValueType.UINT64)}


def write_with_sidecars(src: str | Path, dst: str | Path, sidecars: Mapping[str, Sidecar],
                        extra_kv: Mapping[str, object] | None = None) -> Path:
    """Copy GGUF ``src`` to ``dst`` adding validated ``sidecars`` and the sidecar keys."""
    reader = gguf_io.open_gguf(src)
    weights = {t.name: t for t in reader.tensors}
    for base, sc in sidecars.items():
        sc.validate()
        if base + WEIGHT_SUFFIX not in weights:
            raise SwggufError(f"no tensor '{base}{WEIGHT_SUFFIX}' for its sidecar", src)
        if any(name in weights for name, _ in sc.tensors()):
            raise SwggufError(f"'{base}' already has a sidecar", src)
    kv = sidecar_keys(sidecars, weights) if sidecars else {}
    kv.update(extra_kv or {})
    tensors = [t for sc in sidecars.values() for t in sc.tensors()]
    return gguf_io.copy_gguf(reader, dst, add=tensors, kv=kv)


def replace_sidecars(src: str | Path, dst: str | Path, changed: Mapping[str, Sidecar]) -> Path:
    """Copy GGUF ``src`` to ``dst`` with the sidecars in ``changed`` (by base) in place of
    the file's own for those weights (or added); the others are kept as they are."""
    reader = gguf_io.open_gguf(src)
    existing = sidecars_from_reader(reader, src)
    weights = {t.name: t for t in reader.tensors}
    for base, sc in changed.items():
        sc.validate()
        if base + WEIGHT_SUFFIX not in weights:
            raise SwggufError(f"no tensor '{base}{WEIGHT_SUFFIX}' for its sidecar", src)
    final = {**existing, **changed}
    drop = {t.name for t in reader.tensors if sidecar_base(t.name) in changed}
    tensors = [t for sc in changed.values() for t in sc.tensors()]
    return gguf_io.copy_gguf(reader, dst, add=tensors, drop=drop, kv=sidecar_keys(final, weights))
