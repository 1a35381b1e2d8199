"""The planner as a pure function of small hand-made tables, and the size parser."""

from __future__ import annotations

import numpy as np
import pytest

from swgguf.errors import SwggufError
from swgguf.formats.sidecar import column_bytes
from swgguf.optimize import (GroupFactor, Tables, TensorTable, TypeOption, bits_per_weight, parse_size, plan,
                             restrict, smallest_bytes, target_bytes, tensor_groups, weigh)
from swgguf.optimize.sensitivity import tensor_group
from swgguf.optimize.planner import SIDECAR_OVERHEAD, error_of, trajectory
from swgguf.optimize.tables import load_tables, prune, save_tables

N_OUT = 100  # a column costs column_bytes(100) = 204 bytes


def opt(qtype: str, nbytes: int, error: float, gains=()) -> TypeOption:
    return TypeOption(qtype, qtype, nbytes, error, np.asarray(gains, np.float64))


def tables(**tensors: list[TypeOption]) -> Tables:
    return Tables("Q4_K_M", 1000, {n: TensorTable(n, N_OUT, prune(o)) for n, o in tensors.items()})


def two_tensors() -> Tables:
    # "a": an upgrade buys 8 for 1000 bytes (0.008/B); its first column 5 for 204+overhead
    # "b": an upgrade buys 1 for 1000 bytes; columns buy little
    return tables(
        a=[opt("Q2_K", 1000, 10.0, [5.0, 1.0, 0.5]), opt("Q3_K", 2000, 2.0, [1.0, 0.2]),
           opt("Q4_K", 3000, 1.0, [0.5])],
        b=[opt("Q2_K", 1000, 2.0, [0.01]), opt("Q3_K", 2000, 1.0, [0.01]), opt("Q4_K", 3000, 0.5)])


def test_smallest_plan_and_refusal() -> None:
    t = two_tensors()
    assert smallest_bytes(t) == 1000 + 2000
    p = plan(t, smallest_bytes(t))
    assert p.types == {"a": "Q2_K", "b": "Q2_K"} and p.cols == {} and p.error == pytest.approx(12.0)
    with pytest.raises(SwggufError, match="below the smallest plan"):
        plan(t, smallest_bytes(t) - 1)


def test_greedy_takes_best_gain_per_byte_first() -> None:
    t = two_tensors()
    col = SIDECAR_OVERHEAD + column_bytes(N_OUT)
    # a's first column: 5 / 524 B beats a's upgrade 8 / 1000 B
    p = plan(t, smallest_bytes(t) + col)
    assert p.cols == {"a": 1} and p.types["a"] == "Q2_K"
    assert p.error == pytest.approx(7.0)
    # a's second column (1 / 204 B) still beats the upgrade (4 / 1000 B)
    p = plan(t, smallest_bytes(t) + col + column_bytes(N_OUT))
    assert p.cols == {"a": 2} and p.error == pytest.approx(4.0 + 2.0)
    # an upgrade keeps the columns, at the new type's gains: Q3_K with 2 columns leaves 2 - 1.2
    steps = trajectory(t)
    upgrade = next(i for i, s in enumerate(steps) if s[2] == "a" and s[3].type_index == 1)
    assert steps[upgrade][3].cols >= 2
    assert [s[1] for s in steps] == sorted((s[1] for s in steps), reverse=True)


def test_no_sidecar_plans_types_only() -> None:
    t = two_tensors()
    p = plan(t, smallest_bytes(t) + 1500, sidecar=False)
    assert p.cols == {} and p.types == {"a": "Q3_K", "b": "Q2_K"}


@pytest.mark.parametrize("sidecar", [True, False])
def test_plans_are_monotone_in_size(sidecar: bool) -> None:
    """A larger target never gives a larger error, and every plan fits its target."""
    rng = np.random.default_rng(0)
    t = tables(**{f"t{i}": [opt(q, 1000 * (k + 1) + int(rng.integers(0, 300)), e, np.sort(rng.random(8))[::-1] * e / 20)
                            for k, (q, e) in enumerate(zip(("Q2_K", "Q3_K", "Q4_K", "Q5_K"),
                                                            np.sort(rng.random(4) * 10)[::-1]))]
                  for i in range(12)})
    steps = trajectory(t, sidecar)
    last_err, last_bytes = float("inf"), 0
    for target in range(smallest_bytes(t), smallest_bytes(t) + 60_000, 997):
        p = plan(t, target, sidecar, steps)
        assert p.bytes <= target
        assert p.error <= last_err + 1e-12 and p.bytes >= last_bytes
        assert p.error == pytest.approx(error_of(t, p.types, p.cols))
        last_err, last_bytes = p.error, p.bytes
    assert last_err < plan(t, smallest_bytes(t), sidecar).error


def test_prune_drops_dominated_options() -> None:
    # Q2_K and Q3_K fall back to the same IQ4_NL bytes: only the better one stays
    o = prune([opt("Q2_K", 500, 3.0), opt("Q3_K", 500, 2.9), opt("Q4_K", 600, 3.5), opt("Q5_K", 700, 1.0)])
    assert [x.requested for x in o] == ["Q3_K", "Q5_K"]


def test_tables_round_trip(tmp_path) -> None:
    t = two_tensors()
    back = load_tables(save_tables(t, tmp_path / "t.json"))
    assert back.fixed_bytes == t.fixed_bytes and back.base_ftype == t.base_ftype
    assert plan(back, 5000).types == plan(t, 5000).types


@pytest.mark.parametrize("text,expected", [
    ("943718400", 943718400), ("900MiB", 900 * 2**20), ("0.9GiB", int(0.9 * 2**30)), ("900M", 900 * 2**20),
    ("900MB", 900 * 10**6), ("2k", 2048), ("1e3", 1000)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "big", "900 parsecs", "-5MiB", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(SwggufError, match="target size"):
        parse_size(text)


def test_target_bpw() -> None:
    assert target_bytes(None, 4.0, 1000) == 500
    assert target_bytes("400", 4.0, 1000) == 400
    with pytest.raises(SwggufError):
        target_bytes(None, 0.0, 1000)


def test_override_patterns_set_each_tensor_exactly() -> None:
    import re

    from swgguf.optimize import override_patterns

    types = {"blk.0.attn_q.weight": "Q3_K", "blk.1.attn_q.weight": "Q4_K", "blk.10.attn_q.weight": "Q3_K",
             "blk.1.ffn_down.weight": "Q6_K", "output.weight": "Q5_K"}
    pats = override_patterns(types)
    names = list(types) + ["blk.0.attn_q_norm.weight", "blk.100.attn_q.weight", "token_embd.weight"]
    for name in names:
        first = next((t for p, t in pats if re.search(p, name)), None)  # llama.cpp: the first match wins
        assert first == types.get(name)


def test_bits_per_weight_from_gguf_block_sizes() -> None:
    assert [bits_per_weight(t) for t in ("Q2_K", "Q3_K", "Q4_K", "Q4_0", "Q4_1", "Q6_K", "F16")] == \
        [2.625, 3.4375, 4.5, 4.5, 5.0, 6.5625, 16.0]


def test_restrict_drops_fixed_tensors_and_options_at_or_above_the_floor() -> None:
    t = tables(a=[opt("Q2_K", 1000, 10.0), opt("Q3_K", 2000, 2.0), opt("Q4_K", 3000, 1.0), opt("Q6_K", 4000, 0.1)],
               b=[opt("Q2_K", 1000, 2.0), opt("Q3_K", 2000, 1.0)])
    r = restrict(t, {"b"}, bits_per_weight("Q4_K"), "why")
    assert list(r.tensors) == ["a"] and [o.written for o in r.tensors["a"].options] == ["Q2_K", "Q3_K"]
    assert r.source.endswith("; why") and r.fixed_bytes == t.fixed_bytes  # rebase() adds b's bytes
    assert plan(r, 10**6).types == {"a": "Q3_K"}  # Q4_K and Q6_K are no longer reachable
    with pytest.raises(ValueError, match="a: no option below 2.625"):
        restrict(t, (), bits_per_weight("Q2_K"))


def test_tensor_groups_split_each_kind_by_depth_thirds() -> None:
    names = [f"blk.{i}.{k}.weight" for i in range(30) for k in ("attn_v", "ffn_down")]
    g = tensor_groups(names)
    assert sorted(g) == [f"{k}.weight@{d}" for k in ("attn_v", "ffn_down") for d in range(3)]
    assert g["attn_v.weight@0"] == [f"blk.{i}.attn_v.weight" for i in range(10)]
    assert tensor_group("blk.29.ffn_down.weight", 30) == "ffn_down.weight@2"
    assert tensor_group("output.weight", 30) == "output.weight"


def test_weigh_scales_errors_and_column_gains_by_the_group_factor() -> None:
    t = tables(**{"blk.0.attn_v.weight": [opt("Q2_K", 1000, 10.0, [4.0, 1.0]), opt("Q3_K", 2000, 2.0)],
                  "blk.1.attn_v.weight": [opt("Q2_K", 1000, 10.0, [4.0])]})
    f = {"attn_v.weight@0": GroupFactor(1, 10.0, 0.5, 0.01, (0, 0)),  # 0.05 nats per unit
         "attn_v.weight@1": GroupFactor(1, 10.0, -0.2, 0.1, (1, 1))}  # lost in noise: floored at 0.1 / 10
    w = weigh(t, f)
    a, b = w.tensors["blk.0.attn_v.weight"].options, w.tensors["blk.1.attn_v.weight"].options
    assert [o.error for o in a] == pytest.approx([0.5, 0.1]) and list(a[0].col_gains) == pytest.approx([0.2, 0.05])
    assert b[0].error == pytest.approx(0.1) and [o.nbytes for o in a] == [1000, 2000]
    assert t.tensors["blk.0.attn_v.weight"].options[0].error == 10.0  # the input is not changed
    # a subset of the tensors (restricted tables) finds its groups by layer, not by position
    only = Tables(t.base_ftype, t.fixed_bytes, {"blk.1.attn_v.weight": t.tensors["blk.1.attn_v.weight"]})
    assert weigh(only, f).tensors["blk.1.attn_v.weight"].options[0].error == pytest.approx(0.1)
