"""The weights a sidecar can protect, read one at a time from the float and the
quantized file."""

from __future__ import annotations

from pathlib import Path

import gguf

from ..formats import gguf_io
from ..formats.imatrix import Imatrix
from ..formats.sidecar import WEIGHT_SUFFIX, column_bytes
from .salience import TensorQuant


def eligible(name: str, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> bool:
    """Weights the runtime corrects (2-D, through build_lora_mm) that were quantized.

    token_embd is read with get_rows; its sidecar would only touch a tied output."""
    return (name.endswith(WEIGHT_SUFFIX) and len(shape) == 2 and qtype not in gguf_io.FLOAT_TYPES
            and not name.startswith("token_embd."))


class TensorSet:
    """The eligible tensors of a (float, quantized) pair with activation statistics, read
    one at a time: holding them all as float32 twice would take 8 bytes per parameter."""

    def __init__(self, float_path: Path, quant_path: Path, act: Imatrix | None) -> None:
        self.true = {t.name: t for t in gguf_io.open_gguf(float_path).tensors}
        self.act = act
        self.quant: dict[str, gguf.ReaderTensor] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        for t in gguf_io.open_gguf(quant_path).tensors:
            shape = gguf_io.tensor_shape(t)
            # a tensor without statistics never saw the calibration text (e.g. output)
            if eligible(t.name, t.tensor_type, shape) and (act is None or t.name in act.values):
                self.quant[t.name] = t
                self.shapes[t.name] = shape  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.quant)

    def get(self, name: str) -> TensorQuant:
        w_deq = gguf_io.dequantize_tensor(self.quant[name])
        act_sq = self.act.mean_sq(name, w_deq.shape[1]) if self.act is not None else None
        return TensorQuant(name, gguf_io.dequantize_tensor(self.true[name]), w_deq, act_sq)

    def true_value(self, name: str, row: int, col: int) -> float:
        return float(gguf_io.dequantize_tensor(self.true[name])[row, col])

    def n_out(self) -> dict[str, int]:
        """Output rows of every tensor."""
        return {name: shape[0] for name, shape in self.shapes.items()}

    def column_bytes(self) -> int:
        """Bytes of one column in every tensor."""
        return sum(column_bytes(n_out) for n_out in self.n_out().values())
