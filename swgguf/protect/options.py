"""What ``--protect-sw`` is asked to do: the protection options, and the sidecar budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SwggufError
from ..formats.sidecar import MAX_COLS
from .salience import ColumnPolicy, top_k

# Chosen by measurement on SmolLM2-135M (bench/convert_sweep.py, docs/convert.md): without
# --protect-cols/--sidecar-budget, the bytes of 2 columns per protected tensor, allocated over
# all tensors by salience per byte (at equal bytes it beat 2 columns in every tensor).
DEFAULT_BUDGET = "2cols"
_BUDGET = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(%|cols?|[kKmMgG]i?[bB]?|[bB])?\s*")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass
class ProtectOptions:
    """Which columns and super weights the sidecar carries (the ``outlier sidecar`` flags)."""

    protect_cols: int | None = None  # top K columns in every tensor; under a budget, the cap per tensor
    sidecar_budget: str | None = None  # "0.5%" of the plain file, bytes ("2M"), or "2cols" (per tensor, on average)
    max_tensors: int | None = None  # under a budget: protect at most this many tensors (runtime speed)
    manifest: Path | None = None  # super weights from `swgguf detect`; default: found from the activations
    clip: bool = False  # the paper's variant: quantize with each super weight replaced by its block median
    salience_text: Path | None = None  # activation statistics only (default: built-in text)
    salience_imatrix: Path | None = None  # activation statistics only, from an imatrix file
    policy: ColumnPolicy | None = None  # library use: overrides protect_cols
    lora_compat: bool = False  # correction as a LoRA adapter next to a plain file, not as a sidecar

    def validate(self) -> None:
        for what, path in (("manifest", self.manifest), ("salience text", self.salience_text),
                           ("salience imatrix", self.salience_imatrix)):
            if path is not None and not Path(path).is_file():
                raise SwggufError(f"no such {what} file", path)
        if self.protect_cols is not None and not 0 <= self.protect_cols <= MAX_COLS:
            raise SwggufError(f"--protect-cols {self.protect_cols} is out of range [0, {MAX_COLS}]")
        if self.sidecar_budget is not None:
            parse_budget(self.sidecar_budget, 1, 1)
        if self.max_tensors is not None and self.max_tensors < 1:
            raise SwggufError(f"--max-tensors must be at least 1, got {self.max_tensors}")
        if self.max_tensors is not None and self.protect_cols is not None and self.sidecar_budget is None:
            raise SwggufError("--max-tensors applies to a sidecar budget, not to --protect-cols alone: "
                              "add --sidecar-budget")
        if self.salience_text is not None and self.salience_imatrix is not None:
            raise SwggufError("--salience-text and --salience-imatrix are exclusive")
        if self.lora_compat and self.clip:
            # the clipped quantization is only right with its correction, which a LoRA-less
            # stock run would drop: the plain file must stay llama-quantize's
            raise SwggufError("--lora-compat and --clip are exclusive")

    def column_policy(self) -> ColumnPolicy | None:
        """The per-tensor policy in force, if any (the library's, else --protect-cols)."""
        if self.policy is not None:
            return self.policy
        return None if self.protect_cols is None else top_k(self.protect_cols)

    def budget_text(self) -> str | None:
        """The byte budget in force: the user's, or the default when no column policy was given."""
        if self.sidecar_budget is not None:
            return self.sidecar_budget
        return DEFAULT_BUDGET if self.column_policy() is None else None

    def max_per_tensor(self) -> int:
        """Under a budget, the most columns one tensor may get."""
        return self.protect_cols if self.protect_cols is not None else MAX_COLS

    def policy_name(self) -> str:
        """How the columns were chosen, as recorded in the file (swgguf.provenance.policy)."""
        budget = self.budget_text()
        if budget is not None:
            return f"budget:{budget}" + (f",max_tensors:{self.max_tensors}" if self.max_tensors else "")
        return getattr(self.column_policy(), "__name__", "custom")


def parse_budget(text: str, plain_bytes: int, column_bytes: int) -> int:
    """Budget text -> bytes: '0.5%' of ``plain_bytes``; a size ('2M', '512k', '1500000');
    or '2cols', as many bytes as 2 columns in every tensor (``column_bytes`` = one column
    in each), spent where salience is highest."""
    m = _BUDGET.fullmatch(text)
    if not m:
        raise SwggufError(f"sidecar budget {text!r} is not a percentage ('0.5%'), a size ('2M') "
                          "or columns per tensor ('2cols')")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit.startswith("col"):
        return int(value * column_bytes)
    if unit == "%":
        if value > 100:
            raise SwggufError(f"sidecar budget {text!r} is over 100%")
        return int(plain_bytes * value / 100)
    return int(value * _UNITS[unit[:1]])
