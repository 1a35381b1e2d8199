"""Measuring the tables: the real quantizer, once per candidate type.

For each type of the ladder, llama.cpp quantizes the float model with the base mixture
and every planned tensor overridden to that type (``--tensor-type``), with the same
imatrix as the final file; gguf-py dequantizes each planned tensor of the result, and
the error proxy and sidecar column gains are computed from it and the activation
statistics. Quantization is per tensor, so a tensor's bytes and error at a type do not
depend on the other tensors' types: a plan's file is predicted exactly, up to padding.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..formats import gguf_io
from ..formats.imatrix import Imatrix
from ..progress import Progress, no_progress, renamed
from ..protect.salience import salience
from ..protect.tensors import TensorSet, eligible
from ..runtime import quantize
from .tables import Tables, TensorTable, TypeOption, prune

# the k-quant ladder: one step up is about one more bit per weight
LADDER = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
MAX_COLS = 64  # sidecar columns measured per tensor and type (the planner's cap)
ALIGN_SLACK = 32  # bytes of alignment padding a tensor may add in a file


def planned_names(float_path: Path, stats: Imatrix) -> list[str]:
    """The tensors the optimizer plans: the quantizable 2-D weights with activation statistics
    (token_embd and, usually, output have none and keep the base mixture's type)."""
    out = []
    for t in gguf_io.open_gguf(float_path).tensors:
        shape = gguf_io.tensor_shape(t)
        if eligible(t.name, gguf_io.gguf.GGMLQuantizationType.Q8_0, shape) and t.name in stats.values:
            out.append(t.name)
    return out


def override_patterns(types: dict[str, str]) -> list[tuple[str, str]]:
    """``--tensor-type`` pairs setting each tensor's type exactly: one anchored pattern per
    (type, name without its layer), the layers as an alternation."""
    groups: dict[tuple[str, str], list[str]] = {}
    plain: list[tuple[str, str]] = []
    for name, qtype in types.items():
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        if m:
            groups.setdefault((qtype, m.group(2)), []).append(m.group(1))
        else:
            plain.append((f"^{re.escape(name)}$", qtype))
    out = [(f"^blk\\.({'|'.join(layers)})\\.{re.escape(rest)}$", qtype) for (qtype, rest), layers in groups.items()]
    return [(p.lower(), t) for p, t in out + plain]


def measure_tables(float_path: Path, stats: Imatrix, work: Path, *, base_ftype: str,
                   quant_imatrix: Imatrix | None = None, imatrix_file: str | None = None,
                   ladder: Sequence[str] = LADDER, nthread: int = 0, max_cols: int = MAX_COLS,
                   progress: Progress = no_progress) -> Tables:
    """The tables of ``float_path``'s planned tensors over ``ladder`` (module docstring)."""
    names = planned_names(float_path, stats)
    options: dict[str, list[TypeOption]] = {n: [] for n in names}
    n_out: dict[str, int] = {}
    fixed = 0
    for qtype in ladder:
        path = work / f"ladder-{qtype}.gguf"
        quantize(float_path, path, base_ftype, nthread=nthread, imatrix=quant_imatrix, imatrix_file=imatrix_file,
                 tensor_types=override_patterns(dict.fromkeys(names, qtype)),
                 progress=renamed(progress, f"quantizing ({qtype})"))
        fixed = max(fixed, _fixed_bytes(path, names))
        tensors = TensorSet(float_path, path, stats)
        for i, name in enumerate(names):
            progress(f"measuring {qtype}", i + 1, len(names), name)
            if name in tensors.quant:  # llama.cpp leaves some tensors in float (too small)
                options[name].append(_option(tensors, name, qtype, max_cols))
                n_out[name] = tensors.shapes[name][0]
        path.unlink()
    tables = {n: TensorTable(n, n_out[n], prune(o)) for n, o in options.items() if o}
    return Tables(base_ftype, fixed, tables, f"ladder {','.join(ladder)} on base {base_ftype}")


def rebase(tables: Tables, base_ftype: str, quantized: Path) -> Tables:
    """``tables`` for another base mixture: a planned tensor's bytes and error do not depend
    on the base (the override sets its type), only the other tensors do (an untied
    token_embd gets the mixture's own type: Q2_K's is a quarter of Q6_K's). ``quantized`` is
    any file llama.cpp quantized with ``base_ftype`` (e.g. the stock file of that type)."""
    fixed = _fixed_bytes(quantized, list(tables.tensors))
    return Tables(base_ftype, fixed, tables.tensors, f"{tables.source}; rebased on {base_ftype}")


def _fixed_bytes(path: Path, names: list[str]) -> int:
    """File bytes outside the planned tensors, with room for their alignment padding."""
    wanted = set(names)
    planned = {t.name: int(t.n_bytes) for t in gguf_io.open_gguf(path).tensors if t.name in wanted}
    return path.stat().st_size - sum(planned.values()) + ALIGN_SLACK * len(planned)


def _option(tensors: TensorSet, name: str, qtype: str, max_cols: int) -> TypeOption:
    t = tensors.get(name)
    s = salience(t)
    k = min(max_cols, s.size)
    gains = np.sort(np.partition(s, s.size - k)[s.size - k:])[::-1] if k else np.zeros(0)
    q = tensors.quant[name]
    return TypeOption(qtype, q.tensor_type.name, int(q.n_bytes), float(s.sum()), gains.astype(np.float64))


def file_error(float_path: Path, path: Path, stats: Imatrix, names: Sequence[str]) -> float:
    """The error proxy of a written file, measured: each of ``names`` dequantized from
    ``path`` by gguf-py, its sidecar's correction added (restored columns), against the
    float weights and the activation statistics."""
    from ..formats.sidecar import read_sidecars, weight_base

    sidecars = read_sidecars(path)
    tensors = TensorSet(float_path, path, stats)
    total = 0.0
    for name in names:
        t = tensors.get(name)
        sc = sidecars.get(weight_base(name))
        if sc is not None:
            t = replace(t, w_deq=t.w_deq + sc.dense_correction())
        total += float(salience(t).sum())
    return total
