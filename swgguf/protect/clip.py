"""The paper's clipping variant (``--clip``): quantize with each super weight
replaced by the median of its quantization block, so the outlier no longer sets
the block's scale; the sidecar then restores the super weight exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import gguf
import numpy as np

from ..formats import gguf_io
from .scalars import Scalar, by_weight


def block_size(qtype: gguf.GGMLQuantizationType) -> int:
    """Weights per quantization block of ``qtype`` (gguf-py's table)."""
    return gguf.GGML_QUANT_SIZES[qtype][0]


def clip_outliers(float_path: Path, plain_path: Path, scalars: Sequence[Scalar], dst: Path) -> Path:
    """Copy of the float model with each super weight replaced by the median of its
    quantization block (the block size of the type llama.cpp chose for its tensor)."""
    plain_types = {t.name: t.tensor_type for t in gguf_io.open_gguf(plain_path).tensors}
    reader = gguf_io.open_gguf(float_path)
    positions = by_weight(list(scalars))
    replaced = {}
    for t in reader.tensors:
        if t.name not in positions:
            continue
        w = gguf_io.dequantize_tensor(t).copy()  # a float input's tensor is a read-only map
        bs = block_size(plain_types[t.name])
        for r, c in positions[t.name]:
            lo = (c // bs) * bs
            block = np.delete(w[r, lo: lo + bs], c - lo)
            w[r, c] = np.median(block)
        replaced[t.name] = gguf_io.encode_like(w, t.tensor_type)
    return gguf_io.copy_gguf(reader, dst, replace=replaced)
