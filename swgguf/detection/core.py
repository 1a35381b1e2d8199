"""Super-weight detection: the paper's down_proj spike search, iterated, with a relative threshold.

One forward pass over a short prompt records, per decoder layer, the largest
|input| and |output| of the MLP down projection (with token and channel) and
the residual stream after the layer. A layer *spikes* when its largest
|down_proj output| exceeds the threshold (see :func:`relative_threshold`).
For the earliest spiking layer, the candidate super weight is

    row = output channel of the spike,
    col = argmax_c |W[row, c] * x[token, c]|  (the weight that produces it),

which is the paper's "input channel of the spike" whenever, as in every model
it reports, one input channel dominates; taking the largest product instead
of the largest input keeps the rule right when it does not. The candidate is
zeroed and the pass repeated, until no layer spikes. A candidate must also be an
outlier weight (>= ``weight_factor`` x the RMS of its matrix): once a super weight
is zeroed, the massive input it multiplied still reaches the other rows of its
column through ordinary weights, and those echoes are not super weights. Earliest first because
a super weight's super activation makes later layers spike too; zeroing the
cause first lets those echoes disappear instead of being reported.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..pytorch import decoder_layers, down_proj_modules

log = logging.getLogger(__name__)

Coordinate = tuple[int, int, int]  # (layer, row, col) of model.layers.<layer>.mlp.down_proj.weight

# The paper's default prompt (Yu et al. 2024, Sec. 3.1 / its code).
DEFAULT_PROMPT = "Apple Inc. is a worldwide tech company."
DEFAULT_THRESHOLD_FACTOR = 10.0
# A candidate weight must be >= this many times the RMS of its matrix (SmolLM2: super weights
# are 45-49 x RMS; the ordinary weights that carry a massive input into other rows, <= 5 x).
DEFAULT_WEIGHT_FACTOR = 10.0
# A residual value is "massive" (Sun et al. 2024) at >= this many times the layer's median |h|.
DEFAULT_ACTIVATION_FACTOR = 100.0


# --- threshold rules ------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdRule:
    """Turns the per-layer max |down_proj output| of the unmodified model into a threshold."""

    description: str
    compute: Callable[[Sequence[float]], float]

    def __call__(self, layer_max_outputs: Sequence[float]) -> float:
        return float(self.compute(layer_max_outputs))


def relative_threshold(factor: float = DEFAULT_THRESHOLD_FACTOR) -> ThresholdRule:
    """Threshold = ``factor`` x the median over layers of the largest |down_proj output|.

    The median of the per-layer peaks is the typical activation scale of the model: a
    handful of spiking layers cannot move it, and it scales with the model (SmolLM2-135M
    peaks at ~30 in an ordinary layer, Llama-7B at ~100), where the paper's fixed 50 does not.
    """
    if factor <= 1:
        raise ValueError(f"threshold factor must be > 1, got {factor}")
    return ThresholdRule(f"{factor:g} x median over layers of max |down_proj output|",
                         lambda peaks: factor * float(np.median(np.asarray(peaks, dtype=np.float64))))


def absolute_threshold(value: float) -> ThresholdRule:
    """A fixed threshold, as in the paper's code (50)."""
    if value <= 0:
        raise ValueError(f"threshold must be > 0, got {value}")
    return ThresholdRule(f"fixed {value:g}", lambda peaks: value)


# --- one probing pass ---------------------------------------------------------------------


@dataclass
class LayerStats:
    """What one decoder layer's down projection did on the prompt."""

    layer: int
    max_input: float
    input_token: int
    input_channel: int
    max_output: float
    output_token: int
    output_channel: int
    # the weight behind the output spike: (output_channel, top_col) at output_token
    top_col: int
    weight: float
    input_at_col: float
    output_value: float  # signed y[output_token, output_channel]
    share: float  # |W[row, top_col] * x[token, top_col]| / |y[token, row]|
    input_channel_at_token: int  # argmax |x[output_token, :]|
    weight_z: float  # |W[row, top_col]| / RMS(W): how much of an outlier the weight is


@dataclass
class Probe:
    layers: list[LayerStats]
    residual_max: torch.Tensor  # [n_layers, hidden]: max over tokens of |h| after each layer
    residual_argmax: torch.Tensor  # [n_layers, hidden]: the token of that max
    residual_median: list[float]  # median |h| of each layer's output


@contextmanager
def zeroed(model: nn.Module, coordinates: Iterable[Coordinate]) -> Iterator[None]:
    """Run ``model`` with the given down_proj weights set to 0, restored afterwards.

    Implemented with hooks around each down projection, so it also works when the
    weights are streamed in for each layer (``--low-mem``)."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for layer, row, col in coordinates:
        by_layer.setdefault(layer, []).append((row, col))
    modules = down_proj_modules(model)
    handles = []
    for layer, cells in by_layer.items():
        if layer not in modules:
            raise ValueError(f"layer {layer} has no down projection")
        saved: list[float] = []

        def zero(module, _inputs, cells=cells, saved=saved):
            saved.clear()
            for row, col in cells:
                saved.append(float(module.weight[row, col]))
                module.weight.data[row, col] = 0.0

        def restore(module, _inputs, _output, cells=cells, saved=saved):
            for (row, col), value in zip(cells, saved):
                module.weight.data[row, col] = value

        handles.append(modules[layer].register_forward_pre_hook(zero))
        handles.append(modules[layer].register_forward_hook(restore))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _argmax2(a: torch.Tensor) -> tuple[float, int, int]:
    flat = int(a.argmax())
    token, channel = divmod(flat, a.shape[1])
    return float(a[token, channel]), token, channel


def _layer_stats(layer: int, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> LayerStats:
    max_in, in_tok, in_ch = _argmax2(x.abs())
    max_out, out_tok, out_ch = _argmax2(y.abs())
    products = weight[out_ch].float() * x[out_tok].float()
    top_col = int(products.abs().argmax())
    out_value = float(y[out_tok, out_ch])
    return LayerStats(
        layer=layer, max_input=max_in, input_token=in_tok, input_channel=in_ch,
        max_output=max_out, output_token=out_tok, output_channel=out_ch, top_col=top_col,
        weight=float(weight[out_ch, top_col]), input_at_col=float(x[out_tok, top_col]),
        output_value=out_value, share=float(products[top_col].abs()) / max(abs(out_value), 1e-30),
        input_channel_at_token=int(x[out_tok].abs().argmax()),
        weight_z=abs(float(weight[out_ch, top_col])) / max(float(weight.float().pow(2).mean().sqrt()), 1e-30))


def base_model(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head: detection does not need logits."""
    return getattr(model, getattr(model, "base_model_prefix", ""), model) or model


@torch.no_grad()
def probe(model: nn.Module, input_ids: torch.Tensor, zero: Iterable[Coordinate] = ()) -> Probe:
    """One forward pass over ``input_ids`` ([1, T]) recording down_proj and residual statistics."""
    stats: dict[int, LayerStats] = {}
    residual: dict[int, torch.Tensor] = {}
    handles = []
    for layer, module in down_proj_modules(model).items():
        def record(module, inputs, output, layer=layer):
            stats[layer] = _layer_stats(layer, module.weight, inputs[0][0], output[0])
        handles.append(module.register_forward_hook(record))
    for layer, module in enumerate(decoder_layers(model)):
        def keep(_module, _inputs, output, layer=layer):
            h = output[0] if isinstance(output, (tuple, list)) else output
            residual[layer] = h[0].detach().abs().float()
        handles.append(module.register_forward_hook(keep))
    try:
        with zeroed(model, zero):
            base_model(model)(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    layers = [stats[i] for i in sorted(stats)]
    res = torch.stack([residual[i] for i in sorted(residual)])  # [L, T, H]
    res_max, res_arg = res.max(dim=1)
    return Probe(layers=layers, residual_max=res_max, residual_argmax=res_arg,
                 residual_median=[float(r.median()) for r in res])


# --- detection ----------------------------------------------------------------------------


@dataclass
class Candidate:
    layer: int
    row: int
    col: int
    value: float  # the weight
    token: int  # prompt position of the spike
    input_activation: float  # x[token, col]
    output_activation: float  # y[token, row]
    share: float  # fraction of y[token, row] this one product accounts for
    input_spike_channel: int  # argmax |x[token, :]|: the paper's col, equal to col when one input dominates
    weight_z: float  # |value| / RMS of the matrix
    round: int

    @property
    def coordinate(self) -> Coordinate:
        return (self.layer, self.row, self.col)


@dataclass
class SuperActivationStats:
    channel: int
    layers: list[int]
    magnitude: float
    token: int
    layer_of_max: int


@dataclass
class DetectionResult:
    prompt_tokens: list[int]
    threshold: float
    threshold_rule: str
    typical_scale: float
    weight_factor: float
    baseline: Probe  # the unmodified model
    candidates: list[Candidate]
    super_activations: list[SuperActivationStats]
    rounds: int
    stopped_early: bool  # max_rounds reached with a spike left
    seconds: float = 0.0
    final: Probe | None = None  # the model with every candidate zeroed
    notes: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.baseline.layers)


def find_super_activations(p: Probe, channels: Iterable[int] | None = None,
                           factor: float = DEFAULT_ACTIVATION_FACTOR) -> list[SuperActivationStats]:
    """Residual channels whose |value| after some layer is >= ``factor`` x that layer's median |h|
    (restricted to ``channels`` when given), with the layers where they are, largest first."""
    medians = torch.tensor(p.residual_median).clamp_min(1e-12)[:, None]
    massive = p.residual_max >= factor * medians  # [L, H]
    wanted = None if channels is None else set(channels)
    found = []
    for channel in torch.nonzero(massive.any(dim=0)).flatten().tolist():
        if wanted is not None and channel not in wanted:
            continue
        layers = torch.nonzero(massive[:, channel]).flatten().tolist()
        values = p.residual_max[layers, channel]
        best = layers[int(values.argmax())]
        found.append(SuperActivationStats(channel=channel, layers=layers, magnitude=float(values.max()),
                                          token=int(p.residual_argmax[best, channel]), layer_of_max=best))
    return sorted(found, key=lambda s: -s.magnitude)


def detect_super_weights(
    model: nn.Module,
    input_ids: torch.Tensor,
    rule: ThresholdRule | None = None,
    weight_factor: float = DEFAULT_WEIGHT_FACTOR,
    max_rounds: int | None = None,
    activation_factor: float = DEFAULT_ACTIVATION_FACTOR,
) -> DetectionResult:
    """Find super-weight candidates of ``model`` on ``input_ids`` ([1, T] or [T]).

    Round 0 probes the unmodified model and fixes the threshold (``rule`` applied to its
    per-layer peaks). Each later round takes the earliest layer above the threshold whose
    spike comes from an outlier weight (``|W[row, col]| >= weight_factor x RMS(W)``),
    records that weight as a candidate, zeroes every candidate so far and probes again.
    It stops when no layer above the threshold has such a weight (or after ``max_rounds``,
    default 2 x the number of layers). Spikes left without an outlier weight (a massive
    input spread over ordinary weights) are reported in ``notes``, not as candidates."""
    start = time.perf_counter()
    rule = rule or relative_threshold()
    ids = input_ids.reshape(1, -1)
    baseline = probe(model, ids)
    peaks = [s.max_output for s in baseline.layers]
    threshold = rule(peaks)
    max_rounds = max_rounds if max_rounds is not None else 2 * len(peaks)
    candidates: list[Candidate] = []
    current, stopped_early = baseline, False
    while True:
        spiking = [s for s in current.layers if s.max_output > threshold]
        outliers = [s for s in spiking if s.weight_z >= weight_factor]
        if not outliers:
            break
        if len(candidates) >= max_rounds:
            stopped_early = True
            break
        s = outliers[0]
        candidate = Candidate(
            layer=s.layer, row=s.output_channel, col=s.top_col, value=s.weight, token=s.output_token,
            input_activation=s.input_at_col, output_activation=s.output_value, share=s.share,
            input_spike_channel=s.input_channel_at_token, weight_z=s.weight_z, round=len(candidates) + 1)
        log.debug("round %d: layer %d spikes %.1f > %.1f -> [%d, %d] = %g (%.0f x RMS)", candidate.round,
                  s.layer, s.max_output, threshold, candidate.row, candidate.col, candidate.value, s.weight_z)
        candidates.append(candidate)
        current = probe(model, ids, zero=[c.coordinate for c in candidates])
    notes = [f"layer {s.layer} still spikes ({s.max_output:.4g} at row {s.output_channel}, token {s.output_token}) "
             f"without an outlier weight: its largest contribution is W[{s.output_channel}, {s.top_col}] = "
             f"{s.weight:.4g}, {s.weight_z:.1f} x RMS"
             for s in current.layers if s.max_output > threshold and s.weight_z < weight_factor]
    if stopped_early:
        notes.append(f"stopped after {max_rounds} rounds with outlier spikes left")
    return DetectionResult(
        prompt_tokens=ids[0].tolist(), threshold=threshold, threshold_rule=rule.description,
        typical_scale=float(np.median(peaks)), weight_factor=weight_factor, baseline=baseline,
        candidates=candidates,
        super_activations=find_super_activations(baseline, {c.row for c in candidates}, activation_factor),
        rounds=len(candidates), stopped_early=stopped_early, seconds=time.perf_counter() - start,
        final=current if candidates else None, notes=notes)
