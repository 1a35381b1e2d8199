"""Published super-weight coordinates (swgguf/data/known_super_weights.json) and `--expect`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable

from ..errors import SwggufError
from .core import Coordinate

KNOWN_FILE = "known_super_weights.json"


@dataclass(frozen=True)
class KnownModel:
    name: str
    hf_id: str
    architecture: str
    n_layers: int
    hidden_size: int
    intermediate_size: int
    super_weights: tuple[Coordinate, ...]
    source: str


@dataclass(frozen=True)
class Comparison:
    expected: KnownModel
    matched: list[Coordinate]
    missing: list[Coordinate]  # published, not found
    extra: list[Coordinate]  # found, not published

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


@lru_cache(maxsize=1)
def known_models() -> tuple[KnownModel, ...]:
    data = json.loads(resources.files("swgguf").joinpath("data", KNOWN_FILE).read_text())
    return tuple(
        KnownModel(name=m["name"], hf_id=m["hf_id"], architecture=m["architecture"], n_layers=m["n_layers"],
                   hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
                   super_weights=tuple(tuple(c) for c in m["super_weights"]), source=m["source"])
        for m in data["models"])


def find_known(name: str) -> KnownModel:
    """The known model called ``name`` (its name or HF id, case-insensitive)."""
    key = name.lower()
    for m in known_models():
        if key in (m.name.lower(), m.hf_id.lower(), m.hf_id.split("/")[-1].lower()):
            return m
    names = ", ".join(m.name for m in known_models())
    raise SwggufError(f"no published coordinates for {name!r} (known: {names})")


def compare(found: Iterable[Coordinate], expected: KnownModel) -> Comparison:
    found_set = {tuple(c) for c in found}
    exp = list(expected.super_weights)
    return Comparison(expected=expected, matched=[c for c in exp if c in found_set],
                      missing=[c for c in exp if c not in found_set],
                      extra=sorted(c for c in found_set if c not in set(exp)))
