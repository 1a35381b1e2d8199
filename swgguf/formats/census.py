"""What a GGUF's tensors weigh: the model's own (weights, norms, ...) and its sidecars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import gguf_io
from .sidecar import sidecar_base

__all__ = ["Census", "census"]


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
