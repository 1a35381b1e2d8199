"""The options of ``swgguf convert``: how to quantize, and (with ``--protect-sw``)
how to protect. :class:`ConvertOptions` holds one of each."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..errors import SwggufError
from ..protect import ProtectOptions
from ..runtime.quantize import canonical_ftype, parse_tensor_type

DEFAULT_FTYPE = "Q4_K_M"
CALIB_CHUNKS = 64  # --calib / salience statistics: at most this many llama-imatrix chunks


@dataclass
class QuantOptions:
    """llama.cpp's quantization, as llama-quantize takes it, and the input's preparation."""

    ftype: str = DEFAULT_FTYPE
    pure: bool = False
    allow_requantize: bool = False
    imatrix: Path | None = None  # llama.cpp imatrix file, used for quantization (and salience)
    calib: Path | None = None  # text: compute an imatrix with the runtime and use it
    calib_chunks: int = CALIB_CHUNKS
    tensor_types: Sequence[tuple[str, str] | str] = ()  # (pattern, type) or "pattern=type", in order
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    hf_outtype: str = "f16"
    nthread: int = 0

    def validate(self) -> None:
        self.ftype = canonical_ftype(self.ftype)
        self.tensor_types = [parse_tensor_type(t if isinstance(t, str) else "=".join(t)) for t in self.tensor_types]
        if self.imatrix is not None and self.calib is not None:
            raise SwggufError("--imatrix and --calib are exclusive (--calib computes an imatrix)")
        for what, path in (("imatrix", self.imatrix), ("calibration text", self.calib)):
            if path is not None and not Path(path).is_file():
                raise SwggufError(f"no such {what} file", path)


@dataclass
class ConvertOptions:
    """A conversion: quantize as ``quant`` says; with ``protect``, add the outlier sidecar."""

    quant: QuantOptions = field(default_factory=QuantOptions)
    protect: ProtectOptions | None = None

    @classmethod
    def from_flags(cls, *, protect_sw: bool = False, **flags: Any) -> "ConvertOptions":
        """From the command's flags by field name (``ftype=``, ``protect_cols=``, ...):
        the protection options apply with ``protect_sw`` only, and are refused without."""
        quant_names = {f.name for f in fields(QuantOptions)}
        protect_names = {f.name for f in fields(ProtectOptions)}
        unknown = set(flags) - quant_names - protect_names
        if unknown:
            raise TypeError(f"unknown convert options: {', '.join(sorted(unknown))}")
        quant = QuantOptions(**{k: v for k, v in flags.items() if k in quant_names})
        protect = ProtectOptions(**{k: v for k, v in flags.items() if k in protect_names})
        if not protect_sw and protect != ProtectOptions():
            raise SwggufError("--manifest, --clip, --protect-cols, --sidecar-budget, --max-tensors, --salience-* and "
                              "--lora-compat need --protect-sw")
        return cls(quant, protect if protect_sw else None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ConvertOptions":
        """From ``swgguf convert``'s parsed arguments (whose dests are the field names)."""
        names = {f.name for f in fields(QuantOptions)} | {f.name for f in fields(ProtectOptions)} | {"protect_sw"}
        flags = {k: v for k, v in vars(args).items() if k in names}
        flags["ftype"] = flags.get("ftype") or DEFAULT_FTYPE
        return cls.from_flags(**flags)

    def flags(self) -> dict[str, Any]:
        """The flat view, in flag order: quantization options, protect_sw, protection options."""
        out = {f.name: getattr(self.quant, f.name) for f in fields(QuantOptions)}
        out["protect_sw"] = self.protect is not None
        protect = self.protect or ProtectOptions()
        out.update({f.name: getattr(protect, f.name) for f in fields(ProtectOptions)})
        return out

    def input_paths(self) -> list[Path]:
        """The files a conversion reads besides the model (imatrix, texts, manifest)."""
        q, p = self.quant, self.protect
        paths = [q.imatrix, q.calib] + ([p.manifest, p.salience_text, p.salience_imatrix] if p else [])
        return [Path(x) for x in paths if x is not None]

    def validate(self) -> None:
        self.quant.validate()
        if self.protect is not None:
            self.protect.validate()
