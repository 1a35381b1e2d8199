"""The plan for a byte budget: a type per tensor and sidecar columns per tensor, chosen
greedily by error removed per byte. A pure function of the measured :class:`Tables`.

Every tensor starts at its cheapest type without columns. A move is one more sidecar
column (its gain is the next column's error term, its cost the column's bytes, plus a
tensor's sidecar overhead for its first column) or a higher type (to any higher type,
keeping the columns: the error falls to that type's with as many columns, and the cost
is the difference in bytes; the best ratio over the higher types is taken, so a step
that buys little but opens a big one is not missed). The greedy sequence of moves is
computed once without a budget; the plan for a budget is its longest prefix that fits,
so a larger budget never gives a plan with a larger error (the planner's promise,
tests/optimize/test_planner.py).
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass

import numpy as np

from ..errors import SwggufError
from ..formats.sidecar import column_bytes
from .tables import Tables

# File bytes of a tensor's sidecar beyond its columns: two tensor infos (name, dims, type,
# offset), their alignment padding and the tensor's name in the sidecar keys.
SIDECAR_OVERHEAD = 320


@dataclass
class State:
    type_index: int = 0
    cols: int = 0


@dataclass
class Plan:
    """Per tensor: the type asked for and the columns the sidecar carries."""

    base_ftype: str
    types: dict[str, str]  # tensor -> requested type
    written: dict[str, str]  # tensor -> type llama.cpp writes (fallbacks included)
    cols: dict[str, int]  # tensor -> sidecar columns (tensors without columns left out)
    bytes: int  # predicted file size
    error: float  # predicted sum of the tensors' error proxies
    budget: int = 0  # the file size the plan was made for
    sidecar: bool = True
    column_weight: float = 1.0  # how the greedy weighed columns (trajectory)
    sensitivity: str = "none"  # "kld": errors weighed by measured KLD per group (sensitivity.py)

    @property
    def sidecar_cols(self) -> int:
        return sum(self.cols.values())

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.written.values():
            out[t] = out.get(t, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, object]:
        """The plan as recorded in the file (swgguf.provenance.plan) and printed."""
        return {"target_bytes": self.budget, "predicted_bytes": self.bytes, "error_proxy": self.error,
                "base_ftype": self.base_ftype, "sidecar": self.sidecar, "column_weight": self.column_weight,
                "sensitivity": self.sensitivity, "type_counts": self.type_counts(),
                "sidecar_tensors": len(self.cols), "sidecar_cols": self.sidecar_cols,
                "types": self.types, "cols": self.cols}

    def to_json(self) -> str:
        return json.dumps(self.summary(), separators=(",", ":"))


def _error(tables: Tables, name: str, s: State, column_weight: float = 1.0) -> float:
    """The tensor's proxy error in state ``s``; with ``column_weight`` w, as the planner
    weighs it: each restored column counts w times its term."""
    o = tables.tensors[name].options[s.type_index]
    return o.error - column_weight * float(o.col_gains[:s.cols].sum())


def _bytes(tables: Tables, name: str, s: State) -> int:
    t = tables.tensors[name]
    extra = SIDECAR_OVERHEAD + s.cols * column_bytes(t.n_out) if s.cols else 0
    return t.options[s.type_index].nbytes + extra


def best_move(tables: Tables, name: str, s: State, sidecar: bool,
              column_weight: float = 1.0) -> tuple[float, State] | None:
    """The move of highest error removed per byte from ``s``, if any removes error."""
    err, size = _error(tables, name, s, column_weight), _bytes(tables, name, s)
    options = tables.tensors[name].options
    candidates = [State(t, min(s.cols, options[t].col_gains.size)) for t in range(s.type_index + 1, len(options))]
    if sidecar and s.cols < options[s.type_index].col_gains.size:
        candidates.append(State(s.type_index, s.cols + 1))
    best = None
    for c in candidates:
        gain, cost = err - _error(tables, name, c, column_weight), _bytes(tables, name, c) - size
        if gain > 0 and cost > 0 and (best is None or gain / cost > best[0]):
            best = (gain / cost, c)
    return best


def trajectory(tables: Tables, sidecar: bool = True,
               column_weight: float = 1.0) -> list[tuple[int, float, str, State]]:
    """The greedy moves from the cheapest plan: (total tensor bytes, total error, tensor,
    its new state) after each. ``column_weight`` > 1 favours sidecar columns over types
    (docs/optimizer.md: the proxy undervalues columns of massive activations)."""
    states = {n: State() for n in tables.tensors}
    total = sum(_bytes(tables, n, s) for n, s in states.items())
    err = sum(_error(tables, n, s) for n, s in states.items())
    heap: list[tuple[float, str, int]] = []
    version = dict.fromkeys(states, 0)
    moves: dict[str, State] = {}

    def push(name: str) -> None:
        m = best_move(tables, name, states[name], sidecar, column_weight)
        version[name] += 1
        if m is not None:
            moves[name] = m[1]
            heapq.heappush(heap, (-m[0], name, version[name]))

    for n in states:
        push(n)
    out = []
    while heap:
        _, name, v = heapq.heappop(heap)
        if v != version[name]:
            continue
        old, new = states[name], moves[name]
        total += _bytes(tables, name, new) - _bytes(tables, name, old)
        err += _error(tables, name, new) - _error(tables, name, old)
        states[name] = new
        out.append((total, err, name, new))
        push(name)
    return out


def smallest_bytes(tables: Tables) -> int:
    """File bytes of the cheapest plan (every tensor at its cheapest type, no sidecar)."""
    return tables.fixed_bytes + sum(t.options[0].nbytes for t in tables.tensors.values())


def plan(tables: Tables, target_bytes: int, sidecar: bool = True,
         steps: list[tuple[int, float, str, State]] | None = None) -> Plan:
    """The plan whose predicted file is at most ``target_bytes``; ``steps`` is
    :func:`trajectory`'s result, when planning several sizes."""
    if not tables.tensors:
        raise SwggufError("no tensor to plan: the model has no quantized weight with activation statistics")
    floor = smallest_bytes(tables)
    if target_bytes < floor:
        raise SwggufError(f"target size {target_bytes} bytes is below the smallest plan ({floor} bytes = "
                          f"{floor / 2**20:.1f} MiB, every planned tensor at {_cheapest(tables)}, the others as "
                          f"{tables.base_ftype} has them: a smaller --type lowers those)")
    states = {n: State() for n in tables.tensors}
    size = sum(_bytes(tables, n, s) for n, s in states.items())
    err = sum(_error(tables, n, s) for n, s in states.items())
    for total, e, name, new in steps if steps is not None else trajectory(tables, sidecar):
        if tables.fixed_bytes + total > target_bytes:
            break
        states[name], size, err = new, total, e
    return _as_plan(tables, states, tables.fixed_bytes + size, err, target_bytes, sidecar)


def _cheapest(tables: Tables) -> str:
    return "/".join(sorted({t.options[0].requested for t in tables.tensors.values()}))


def _as_plan(tables: Tables, states: dict[str, State], size: int, err: float, target: int, sidecar: bool) -> Plan:
    types, written = {}, {}
    for n, s in states.items():
        o = tables.tensors[n].options[s.type_index]
        types[n], written[n] = o.requested, o.written
    cols = {n: s.cols for n, s in states.items() if s.cols}
    return Plan(tables.base_ftype, types, written, cols, int(size), float(err), target, sidecar)


def error_of(tables: Tables, types: dict[str, str], cols: dict[str, int] | None = None) -> float:
    """The proxy error of any assignment of types (and columns) under ``tables``."""
    out = 0.0
    for n, t in tables.tensors.items():
        o = tables.option(n, types[n])
        out += o.error - float(np.sum(o.col_gains[:(cols or {}).get(n, 0)]))
    return out
