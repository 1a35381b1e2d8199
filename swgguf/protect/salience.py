"""Which input columns of a quantized weight to restore: policies as callables.

For a weight ``W`` (n_out, n_in) quantized to ``Q`` and an input ``x``, the
output error is ``(W - Q) x``. With the input channels independent, its
expected square is ``sum_c ||W[:, c] - Q[:, c]||² · E[x_c²]``: column c
contributes its quantization error² times the mean square of its input
channel (the llama.cpp importance matrix). Restoring a column removes its
term, so the columns worth restoring are those with the largest

    salience[c] = ||W[:, c] - Q[:, c]||² · E[x_c²].

A super activation (E[x²] thousands of times the median) makes its column
the first choice in every tensor it enters, whether or not the weights of
that column are large; a super-weight scalar that the quantizer kept almost
exact adds little by itself (docs/convert.md has the measurements).

A policy is any ``Callable[[TensorQuant], np.ndarray]`` returning sorted
column indices; :func:`top_k` is the default, :func:`by_error` and
:func:`by_activation` exist for ablations, and :func:`allocate_budget`
spreads a byte budget over all tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..formats.sidecar import MAX_COLS, column_bytes


@dataclass(frozen=True)
class TensorQuant:
    """One weight tensor as the policies see it."""

    name: str  # e.g. "blk.0.ffn_down.weight"
    w_true: np.ndarray  # float32 (n_out, n_in): the weight before quantization
    w_deq: np.ndarray  # float32 (n_out, n_in): dequant of the bytes written
    act_sq: np.ndarray | None  # float64 (n_in,): mean x² per input channel; None = unknown (ones)

    @property
    def shape(self) -> tuple[int, int]:
        return self.w_true.shape  # type: ignore[return-value]


ColumnPolicy = Callable[[TensorQuant], np.ndarray]


def column_error(t: TensorQuant) -> np.ndarray:
    """||W[:, c] - Q[:, c]||² per column, float64 (n_in,)."""
    d = t.w_true.astype(np.float64) - t.w_deq.astype(np.float64)
    return np.einsum("rc,rc->c", d, d)


def salience(t: TensorQuant) -> np.ndarray:
    """Expected squared output error each column causes: error² x mean activation²."""
    err = column_error(t)
    return err if t.act_sq is None else err * t.act_sq


def _top(score: np.ndarray, k: int) -> np.ndarray:
    k = min(k, score.size)
    if k <= 0:
        return np.zeros(0, np.int32)
    idx = np.argpartition(-score, k - 1)[:k]
    return np.sort(idx).astype(np.int32)


def top_k(k: int) -> ColumnPolicy:
    """The k columns of largest salience (the default policy)."""
    def policy(t: TensorQuant) -> np.ndarray:
        return _top(salience(t), k)
    policy.__name__ = f"top_k({k})"
    return policy


def by_error(k: int) -> ColumnPolicy:
    """The k columns of largest quantization error, ignoring activations (ablation)."""
    def policy(t: TensorQuant) -> np.ndarray:
        return _top(column_error(t), k)
    policy.__name__ = f"by_error({k})"
    return policy


def by_activation(k: int) -> ColumnPolicy:
    """The k input channels of largest mean activation², ignoring the weights (ablation)."""
    def policy(t: TensorQuant) -> np.ndarray:
        return _top(np.ones(t.shape[1]) if t.act_sq is None else t.act_sq, k)
    policy.__name__ = f"by_activation({k})"
    return policy


def allocate_budget(scores: Mapping[str, np.ndarray], n_out: Mapping[str, int], budget_bytes: int,
                    max_per_tensor: int = MAX_COLS, max_tensors: int | None = None) -> dict[str, np.ndarray]:
    """``allocate_budget_all`` over at most ``max_tensors`` tensors: those whose columns
    carry the most salience in the unrestricted allocation, which then get the whole
    budget. Each protected tensor costs the runtime a fixed number of graph nodes, so a
    cap on tensors bounds the time overhead (GPU generation is launch-bound)."""
    chosen = allocate_budget_all(scores, n_out, budget_bytes, max_per_tensor)
    if max_tensors is None or len(chosen) <= max_tensors:
        return chosen
    weight = {n: float(scores[n][c].sum()) for n, c in chosen.items()}
    keep = sorted(weight, key=lambda n: -weight[n])[:max_tensors]
    return allocate_budget_all({n: scores[n] for n in keep}, n_out, budget_bytes, max_per_tensor)


def allocate_budget_all(scores: Mapping[str, np.ndarray], n_out: Mapping[str, int], budget_bytes: int,
                        max_per_tensor: int = MAX_COLS) -> dict[str, np.ndarray]:
    """Spread ``budget_bytes`` of columns over tensors, greedily by salience per byte.

    ``scores[name]`` is each tensor's salience; taking columns in decreasing
    salience/cost order is optimal for the summed expected error when the
    layers' errors add up (an approximation: errors in different layers reach
    the logits with different gains). Returns sorted columns per tensor
    (tensors without any are left out)."""
    names, cols, gains, costs = [], [], [], []
    for name, s in scores.items():
        cost = column_bytes(n_out[name])
        top = _top(s, min(max_per_tensor, s.size))
        names += [name] * top.size
        cols.append(top)
        gains.append(s[top] / cost)
        costs.append(np.full(top.size, cost))
    if not names:
        return {}
    gain, cost, col = np.concatenate(gains), np.concatenate(costs), np.concatenate(cols)
    order = np.argsort(-gain, kind="stable")
    spent = np.cumsum(cost[order])
    take = order[spent <= budget_bytes]
    out: dict[str, list[int]] = {}
    for i in take:
        out.setdefault(names[i], []).append(int(col[i]))
    return {n: np.array(sorted(c), np.int32) for n, c in out.items()}
