"""llama.cpp importance matrices: read both file formats, write the GGUF one.
(Computing one from text is llama-imatrix's job: swgguf.runtime.imatrix_tool.)

An importance matrix holds, for each weight tensor, the mean of x² over the
calibration tokens for every input channel x of its matmul. llama.cpp's
quantizer weighs rounding errors with it; swgguf's salience uses the same
numbers as the "mean activation²" of each input column (docs/convert.md).

Formats (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp of the pinned
llama.cpp):

* GGUF (default): tensors ``<weight>.in_sum2`` F32 ``ne=[n_in, n_mat]`` (sums of
  x²) and ``<weight>.counts`` F32 ``ne=[1, n_mat]`` (tokens seen), keys
  ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``.
* legacy ``.dat``: ``int32 n``, then n times ``int32 len, name, int32 ncall,
  int32 nval, float[nval]`` (already means times ncall), then optional
  ``int32 chunk_count, int32 len, dataset``.

:class:`Imatrix` holds the values llama-quantize derives from either format
(sums divided by counts, in float32), which are what it hands to
``llama_model_quantize``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from ..errors import SwggufError
from .gguf_io import GGUF_MAGIC, write_gguf

KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUFFIX_SUMS = ".in_sum2"
SUFFIX_COUNTS = ".counts"


@dataclass
class Imatrix:
    """Per weight tensor name, mean x² of each input channel (float32, (n_mat * n_in,))."""

    values: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    source: str = ""  # the file it came from (recorded as quantize.imatrix.file)

    def validate(self) -> None:
        for name, v in self.values.items():
            if v.dtype != np.float32 or v.ndim != 1 or v.size == 0:
                raise SwggufError(f"imatrix entry {name!r} must be a non-empty float32 vector, got {v.dtype} {v.shape}",
                                  self.source or None)
            if not np.all(np.isfinite(v)):
                raise SwggufError(f"imatrix entry {name!r} holds a non-finite value", self.source or None)

    def mean_sq(self, weight_name: str, n_in: int) -> np.ndarray | None:
        """Mean x² per input channel of ``weight_name`` as float64 (n_in,); None if absent.

        A stacked (MoE) entry is averaged over its matrices."""
        v = self.values.get(weight_name)
        if v is None:
            return None
        if v.size % n_in:
            raise SwggufError(f"imatrix entry {weight_name!r} has {v.size} values, not a multiple of n_in={n_in}",
                              self.source or None)
        return v.astype(np.float64).reshape(-1, n_in).mean(axis=0)


def load_imatrix(path: str | Path) -> Imatrix:
    """Read an imatrix in GGUF or legacy .dat format, normalized as llama-quantize does."""
    path = Path(path)
    if not path.is_file():
        raise SwggufError("no such imatrix file", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        im = _load_gguf(path) if magic == GGUF_MAGIC else _load_legacy(path)
    except (ValueError, struct.error, IndexError) as err:
        raise SwggufError(f"not a readable imatrix file ({err})", path) from None
    im.source = str(path)
    if not im.values:
        raise SwggufError("the imatrix holds no entries", path)
    im.validate()
    return im


def _load_gguf(path: Path) -> Imatrix:
    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    if KEY_CHUNK_COUNT not in fields or KEY_CHUNK_SIZE not in fields or KEY_DATASETS not in fields:
        # llama-quantize refuses such a file too ("missing imatrix metadata")
        raise ValueError(f"missing imatrix metadata ({KEY_DATASETS}, {KEY_CHUNK_COUNT}, {KEY_CHUNK_SIZE})")
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.name.endswith(SUFFIX_SUMS):
            sums[t.name[: -len(SUFFIX_SUMS)]] = t
        elif t.name.endswith(SUFFIX_COUNTS):
            counts[t.name[: -len(SUFFIX_COUNTS)]] = t
    if set(sums) != set(counts):
        bad = sorted(set(sums) ^ set(counts))[0]
        raise ValueError(f"mismatched sums and counts for {bad}")
    values = {}
    for name, ts in sums.items():
        tc = counts[name]
        if ts.tensor_type != gguf.GGMLQuantizationType.F32 or tc.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"sums and counts for {name} must be F32")
        s = np.asarray(ts.data, np.float32).reshape(-1)
        # common_imatrix_load rounds counts to integers; llama-quantize divides by float(count)
        c = np.rint(np.asarray(tc.data, np.float32).reshape(-1)).astype(np.float32)
        n_mat = c.size
        s = s.reshape(n_mat, -1)
        e = np.where(c[:, None] > 0, s / np.where(c > 0, c, 1)[:, None], np.float32(1.0)).astype(np.float32)
        values[name] = e.reshape(-1)
    return Imatrix(values, [str(d) for d in fields.get(KEY_DATASETS) or []],
                   int(fields[KEY_CHUNK_COUNT]), int(fields[KEY_CHUNK_SIZE]))


def _load_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        out = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return out

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise ValueError(f"{n_entries} entries")
    values = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        name = data[pos: pos + length].decode("utf-8")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise ValueError(f"entry {name!r} has {nval} values")
        sums = np.frombuffer(data, "<f4", nval, pos).astype(np.float32)
        pos += 4 * nval
        values[name] = (sums / np.float32(ncall)).astype(np.float32) if ncall > 0 else sums.copy()
    chunk_count, datasets = 0, []
    if pos < len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0:
                datasets.append(data[pos: pos + length].decode("utf-8", "replace"))
    return Imatrix(values, datasets, chunk_count, 0)


def save_imatrix(path: str | Path, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray],
                 datasets: list[str], chunk_count: int, chunk_size: int) -> Path:
    """Write a GGUF imatrix as llama-imatrix does: ``sums[name]`` (n_mat, n_in) sums of x²,
    ``counts[name]`` (n_mat,) tokens seen, names in sorted order."""
    u32 = gguf.GGUFValueType.UINT32
    kv = {KEY_TYPE: "imatrix", KEY_DATASETS: list(datasets), KEY_CHUNK_COUNT: (chunk_count, u32),
          KEY_CHUNK_SIZE: (chunk_size, u32)}
    tensors = []
    for name in sorted(sums):
        s = np.asarray(sums[name], np.float32)
        tensors.append((name + SUFFIX_SUMS, s.reshape(1, -1) if s.ndim == 1 else s))
        tensors.append((name + SUFFIX_COUNTS, np.asarray(counts[name], np.float32).reshape(-1, 1)))
    return write_gguf(path, "", kv, tensors)  # no general.architecture, as llama-imatrix
