"""The super-weight manifest: what `swgguf detect` writes and `convert`/`ablate` read.

Schema ``swgguf.manifest/1`` (JSON, documented in docs/detect.md)::

    {
      "schema": "swgguf.manifest/1",
      "created_by": "swgguf 0.1.0",
      "model": {"path", "format": "gguf"|"hf", "architecture", "sha256", "n_layers"},
      "detection": {"prompt", "threshold", "threshold_rule", "typical_scale", "low_mem"},
      "verification": null | {"text", "n_tokens", "factor", "baseline_ppl", "baseline_ppl_se"},
      "super_weights": [SuperWeight...],   # verified: removal raised perplexity >= factor
      "candidates": [SuperWeight...],      # detected, not (or not yet) verified
      "super_activations": [SuperActivation...]
    }

Coordinates are Hugging Face ones: ``layer``, and ``row``/``col`` of
``model.layers.<layer>.mlp.down_proj.weight`` (row = output channel, col =
input channel). ``tensor`` is the GGUF tensor holding that matrix
(``blk.<layer>.ffn_down.weight``), where the element is at offset
``row * n_in + col``.

:func:`load_manifest` validates every field and raises
:class:`~swgguf.errors.SwggufError` quoting the bad value.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import SwggufError
from .files import write_json

SCHEMA = "swgguf.manifest/1"
MODEL_FORMATS = ("gguf", "hf")


@dataclass
class SuperWeight:
    layer: int
    row: int
    col: int
    value: float
    tensor: str
    input_activation: float | None = None  # down_proj input at (token, col)
    output_activation: float | None = None  # down_proj output at (token, row)
    token: int | None = None  # prompt position of the spike
    ppl: float | None = None  # perplexity with this weight zeroed
    ppl_se: float | None = None
    ppl_ratio: float | None = None  # ppl / baseline ppl
    ppl_ratio_se: float | None = None

    @property
    def coordinate(self) -> tuple[int, int, int]:
        return (self.layer, self.row, self.col)


@dataclass
class SuperActivation:
    channel: int  # residual-stream channel
    layers: list[int]  # decoder layers whose output carries it
    magnitude: float  # largest |value| over those layers
    token: int  # prompt position of that value
    layer_of_max: int | None = None


@dataclass
class ModelInfo:
    path: str
    format: str
    architecture: str
    sha256: str
    n_layers: int


@dataclass
class DetectionInfo:
    prompt: str
    threshold: float
    threshold_rule: str
    typical_scale: float | None = None
    low_mem: bool = False


@dataclass
class VerificationInfo:
    text: str
    n_tokens: int
    factor: float
    baseline_ppl: float
    baseline_ppl_se: float
    ctx: int | None = None  # window length in tokens (absent from manifests before --chunks)
    n_windows: int | None = None  # windows of the text evaluated per pass
    chunks: int | None = None  # the cap on them (--chunks); None: every window


@dataclass
class Manifest:
    model: ModelInfo
    detection: DetectionInfo
    super_weights: list[SuperWeight] = field(default_factory=list)
    candidates: list[SuperWeight] = field(default_factory=list)
    super_activations: list[SuperActivation] = field(default_factory=list)
    verification: VerificationInfo | None = None
    schema: str = SCHEMA
    created_by: str = f"swgguf {__version__}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        order = ["schema", "created_by", "model", "detection", "verification",
                 "super_weights", "candidates", "super_activations"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> "Manifest":
        return _Validator(source).manifest(data)


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write ``manifest`` as JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    _Validator(path).manifest(manifest.to_dict())  # never write what load_manifest would refuse
    return write_json(manifest.to_dict(), path)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; SwggufError naming the file and the bad field otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SwggufError("no such manifest", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SwggufError(f"not a JSON manifest ({err})", path) from None
    return Manifest.from_dict(data, path)


class _Validator:
    """Checks types and ranges field by field; every message quotes the offending value."""

    def __init__(self, source: str | Path | None) -> None:
        self.source = source

    def fail(self, where: str, message: str, value: Any) -> SwggufError:
        shown = json.dumps(value) if _jsonable(value) else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return SwggufError(f"manifest {where}: {message}, got {shown}", self.source)

    def obj(self, data: Any, where: str, required: tuple[str, ...]) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, "expected an object", data)
        for key in required:
            if key not in data:
                raise self.fail(where, f"missing field {key!r}", sorted(data))
        return data

    def int_(self, data: dict, key: str, where: str, minimum: int = 0, optional: bool = False) -> int | None:
        v = data.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.fail(f"{where}.{key}", f"expected an integer >= {minimum}", v)
        return v

    def float_(self, data: dict, key: str, where: str, optional: bool = False,
               positive: bool = False) -> float | None:
        v = data.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                (positive and v <= 0):
            raise self.fail(f"{where}.{key}", "expected a finite " + ("positive " if positive else "") + "number", v)
        return float(v)

    def str_(self, data: dict, key: str, where: str, choices: tuple[str, ...] | None = None) -> str:
        v = data[key]
        if not isinstance(v, str) or (choices is not None and v not in choices) or (choices is None and not v):
            expected = f"one of {', '.join(choices)}" if choices else "a non-empty string"
            raise self.fail(f"{where}.{key}", f"expected {expected}", v)
        return v

    def manifest(self, data: Any) -> Manifest:
        data = self.obj(data, "", ("schema", "model", "detection", "super_weights"))
        if data["schema"] != SCHEMA:
            raise self.fail("schema", f"expected {SCHEMA!r}", data["schema"])
        model = self.model(data["model"])
        weights = [self.weight(w, f"super_weights[{i}]", model.n_layers)
                   for i, w in enumerate(self.list_(data, "super_weights"))]
        candidates = [self.weight(w, f"candidates[{i}]", model.n_layers)
                      for i, w in enumerate(self.list_(data, "candidates", optional=True))]
        acts = [self.activation(a, f"super_activations[{i}]", model.n_layers)
                for i, a in enumerate(self.list_(data, "super_activations", optional=True))]
        verification = data.get("verification")
        return Manifest(
            model=model, detection=self.detection(data["detection"]), super_weights=weights,
            candidates=candidates, super_activations=acts,
            verification=None if verification is None else self.verification(verification),
            created_by=str(data.get("created_by", "")))

    def list_(self, data: dict, key: str, optional: bool = False) -> list:
        v = data.get(key, [] if optional else None)
        if not isinstance(v, list):
            raise self.fail(key, "expected a list", v)
        return v

    def model(self, data: Any) -> ModelInfo:
        d = self.obj(data, "model", ("path", "format", "architecture", "sha256", "n_layers"))
        sha = d["sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise self.fail("model.sha256", "expected 64 lowercase hex digits", sha)
        return ModelInfo(path=self.str_(d, "path", "model"), format=self.str_(d, "format", "model", MODEL_FORMATS),
                         architecture=self.str_(d, "architecture", "model"), sha256=sha,
                         n_layers=self.int_(d, "n_layers", "model", minimum=1))

    def detection(self, data: Any) -> DetectionInfo:
        d = self.obj(data, "detection", ("prompt", "threshold", "threshold_rule"))
        if not isinstance(d["prompt"], str):
            raise self.fail("detection.prompt", "expected a string", d["prompt"])
        low_mem = d.get("low_mem", False)
        if not isinstance(low_mem, bool):
            raise self.fail("detection.low_mem", "expected true or false", low_mem)
        return DetectionInfo(prompt=d["prompt"], threshold=self.float_(d, "threshold", "detection", positive=True),
                             threshold_rule=self.str_(d, "threshold_rule", "detection"),
                             typical_scale=self.float_(d, "typical_scale", "detection", optional=True),
                             low_mem=low_mem)

    def verification(self, data: Any) -> VerificationInfo:
        w = "verification"
        d = self.obj(data, w, ("text", "n_tokens", "factor", "baseline_ppl", "baseline_ppl_se"))
        return VerificationInfo(text=self.str_(d, "text", w), n_tokens=self.int_(d, "n_tokens", w, minimum=2),
                                factor=self.float_(d, "factor", w, positive=True),
                                baseline_ppl=self.float_(d, "baseline_ppl", w, positive=True),
                                baseline_ppl_se=self.float_(d, "baseline_ppl_se", w),
                                **{k: self.int_(d, k, w, minimum=1, optional=True)
                                   for k in ("ctx", "n_windows", "chunks")})

    def weight(self, data: Any, where: str, n_layers: int) -> SuperWeight:
        d = self.obj(data, where, ("layer", "row", "col", "value", "tensor"))
        layer = self.int_(d, "layer", where)
        if layer >= n_layers:
            raise self.fail(f"{where}.layer", f"expected a layer below model.n_layers={n_layers}", layer)
        token = d.get("token")
        if token is not None:
            token = self.int_(d, "token", where)
        opt = {k: self.float_(d, k, where, optional=True)
               for k in ("input_activation", "output_activation", "ppl", "ppl_se", "ppl_ratio", "ppl_ratio_se")}
        return SuperWeight(layer=layer, row=self.int_(d, "row", where), col=self.int_(d, "col", where),
                           value=self.float_(d, "value", where), tensor=self.str_(d, "tensor", where),
                           token=token, **opt)

    def activation(self, data: Any, where: str, n_layers: int) -> SuperActivation:
        d = self.obj(data, where, ("channel", "layers", "magnitude", "token"))
        layers = d["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                   and 0 <= x < n_layers for x in layers):
            raise self.fail(f"{where}.layers", f"expected a list of layer indices below {n_layers}", layers)
        layer_of_max = d.get("layer_of_max")
        if layer_of_max is not None:
            layer_of_max = self.int_(d, "layer_of_max", where)
        return SuperActivation(channel=self.int_(d, "channel", where), layers=layers,
                               magnitude=self.float_(d, "magnitude", where),
                               token=self.int_(d, "token", where), layer_of_max=layer_of_max)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
