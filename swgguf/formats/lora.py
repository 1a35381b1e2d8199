"""The sidecars' correction as a llama.cpp LoRA adapter (``convert --lora-compat``),
for stock llama.cpp: ``llama-cli -m OUT.gguf --lora OUT.lora.gguf``.

For each protected weight, ``lora_a`` (K, n_in) selects the protected input
columns (one-hot) and ``lora_b`` (n_out, K) holds their residuals, so
``B (A x) = R x[cols]``. With alpha = 0 llama.cpp applies it at the ``--lora``
scale (1 by default). Both are F32, so the gathered activations (super
activations among them) are never rounded to F16, as in the swgguf runtime;
the residuals are the sidecar's F16 values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from . import gguf_io
from .sidecar import WEIGHT_SUFFIX, Sidecar

LORA_SUFFIX = ".lora.gguf"
KEY_TYPE = "general.type"
KEY_ADAPTER_TYPE = "adapter.type"
KEY_ALPHA = "adapter.lora.alpha"
SUFFIX_A = ".lora_a"
SUFFIX_B = ".lora_b"


def lora_path(dst: Path) -> Path:
    """``out.gguf`` -> ``out.lora.gguf``."""
    return dst.with_name(dst.name.removesuffix(".gguf") + LORA_SUFFIX)


def write_lora_adapter(model: Path, dst: Path, sidecars: Mapping[str, Sidecar],
                       extra_kv: Mapping[str, object]) -> Path:
    """The adapter of ``sidecars`` for ``model`` (its architecture), with ``extra_kv``."""
    arch = gguf_io.field_value(gguf_io.open_gguf(model), gguf_io.KEY_ARCHITECTURE)
    kv = {KEY_TYPE: "adapter", KEY_ADAPTER_TYPE: "lora", KEY_ALPHA: 0.0, **extra_kv}
    return gguf_io.write_gguf(dst, arch, kv, _tensors(sidecars))


def _tensors(sidecars: Mapping[str, Sidecar]) -> Iterator[tuple[str, np.ndarray]]:
    for base, sc in sidecars.items():
        n_out, n_in = sc.shape
        a = np.zeros((sc.n_cols, n_in), np.float32)
        a[np.arange(sc.n_cols), sc.cols] = 1.0
        yield f"{base}{WEIGHT_SUFFIX}{SUFFIX_A}", a
        yield f"{base}{WEIGHT_SUFFIX}{SUFFIX_B}", sc.resid.astype(np.float32)
