"""What ``swgguf convert`` made: the file's census and what protects it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..formats.census import census
from ..protect import Protection


@dataclass
class ConvertReport:
    output: Path
    ftype: str
    file_bytes: int
    weight_bytes: int  # bytes of the model's tensors, sidecars excluded
    n_params: int  # elements of the model's tensors
    sidecar_bytes: int
    tensor_types: dict[str, tuple[int, int]]  # type -> (tensors, bytes)
    protected: dict[str, tuple[int, int]]  # base -> (columns, scalars)
    scalars: list[tuple[str, int, int]]
    scalar_source: str
    warnings: list[str] = field(default_factory=list)
    imatrix_used: bool = False
    lora_adapter: Path | None = None

    @property
    def bpw(self) -> float:
        return 8 * self.weight_bytes / self.n_params

    @property
    def bpw_with_sidecar(self) -> float:
        return 8 * (self.weight_bytes + self.sidecar_bytes) / self.n_params


def summarize(path: Path, ftype: str, protection: Protection | None, warnings: list[str],
              imatrix_used: bool) -> ConvertReport:
    """The report of the file at ``path``; without ``protection``, a plain file."""
    c = census(path)
    protected = {b: (sc.n_cols, sc.n_scalars) for b, sc in protection.sidecars.items()} if protection else {}
    scalars = [(s.base, s.row, s.col) for s in protection.scalars] if protection else []
    return ConvertReport(path, ftype, c.file_bytes, c.weight_bytes, c.n_params, c.sidecar_bytes, c.tensor_types,
                         protected, scalars, protection.scalar_source if protection else "none", warnings,
                         imatrix_used)
