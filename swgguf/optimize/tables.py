"""What the optimizer measures, per weight tensor: for each candidate type the bytes
llama.cpp writes and the expected output error, and the error each further sidecar
column removes. The planner (:mod:`.planner`) is a pure function of these tables.

The error of a tensor W (n_out, n_in) quantized to Q is the expected squared output
error for inputs with the calibration statistics, channels taken as independent:

    err(Q) = sum_j E[x_j²] · ||W[:, j] - Q[:, j]||²

(:func:`swgguf.protect.salience.salience` summed over columns). Restoring column j
exactly (a sidecar column) removes its term, so ``col_gains`` are the largest terms,
in decreasing order. docs/optimizer.md says where this model fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

import numpy as np

from ..formats.files import write_text


@dataclass
class TypeOption:
    """One tensor at one type: what llama.cpp wrote for it and the error that leaves."""

    requested: str  # the type asked for (--tensor-type), e.g. "Q3_K"
    written: str  # the type in the file (llama.cpp falls back where rows do not fit, e.g. IQ4_NL)
    nbytes: int
    error: float
    col_gains: np.ndarray  # float64, decreasing: the error each further sidecar column removes


@dataclass
class TensorTable:
    name: str
    n_out: int
    options: list[TypeOption]  # increasing bytes, decreasing error (dominated options dropped)


@dataclass
class Tables:
    """Everything the planner needs for one model, base mixture and imatrix."""

    base_ftype: str  # llama.cpp's mixture for the tensors the plan does not set (token_embd, output, norms)
    fixed_bytes: int  # file bytes outside the planned tensors (header, keys, other tensors)
    tensors: dict[str, TensorTable] = field(default_factory=dict)
    source: str = ""  # how the tables were measured (recorded with the plan)

    def option(self, name: str, requested: str) -> TypeOption:
        return next(o for o in self.tensors[name].options if o.requested == requested)


def prune(options: list[TypeOption]) -> list[TypeOption]:
    """Options by increasing bytes, without those no better than a cheaper one (e.g. two
    requested types that both fall back to IQ4_NL)."""
    out: list[TypeOption] = []
    for o in sorted(options, key=lambda o: (o.nbytes, o.error)):
        if not out or (o.nbytes > out[-1].nbytes and o.error < out[-1].error):
            out.append(o)
    return out


def save_tables(tables: Tables, path: Path) -> Path:
    """As JSON (column gains as lists), atomically."""
    data = {"base_ftype": tables.base_ftype, "fixed_bytes": tables.fixed_bytes, "source": tables.source,
            "tensors": {n: {"n_out": t.n_out, "options": [
                {"requested": o.requested, "written": o.written, "nbytes": o.nbytes, "error": o.error,
                 "col_gains": [float(g) for g in o.col_gains]} for o in t.options]}
                for n, t in tables.tensors.items()}}
    return write_text(json.dumps(data) + "\n", path)


def load_tables(path: Path) -> Tables:
    data = json.loads(Path(path).read_text())
    tensors = {n: TensorTable(n, t["n_out"], [TypeOption(o["requested"], o["written"], o["nbytes"], o["error"],
                                                         np.asarray(o["col_gains"], np.float64))
                                              for o in t["options"]])
               for n, t in data["tensors"].items()}
    return Tables(data["base_ftype"], data["fixed_bytes"], tensors, data.get("source", ""))


def bits_per_weight(type_name: str) -> float:
    """Storage bits per weight of a ggml type, e.g. 'Q4_K' -> 4.5 (gguf-py's block sizes)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    return 8 * type_bytes / block


def restrict(tables: Tables, fixed: Collection[str], below_bpw: float, why: str = "") -> Tables:
    """``tables`` without the tensors in ``fixed`` (the base mixture then sets their type
    and their bytes belong in ``fixed_bytes``: rebase the result) and without the options
    written at ``below_bpw`` bits per weight or more. A tensor left with no option is an
    error: nothing could be planned for it."""
    rest = {}
    for name, t in tables.tensors.items():
        if name in fixed:
            continue
        options = [o for o in t.options if bits_per_weight(o.written) < below_bpw]
        if not options:
            raise ValueError(f"{name}: no option below {below_bpw} bits per weight")
        rest[name] = TensorTable(name, t.n_out, options)
    source = f"{tables.source}; {why}" if why else tables.source
    return Tables(tables.base_ftype, tables.fixed_bytes, rest, source)
