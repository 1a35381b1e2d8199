"""A Hugging Face directory or a GGUF file as a float32 PyTorch causal LM on the CPU.

:func:`build_model` makes the module skeleton with its parameters on the meta
device, then either fills all of them (normal mode) or attaches hooks that load
one decoder layer's weights right before that layer runs and drop them right
after (``low_mem``), so peak memory is about one layer plus the embeddings.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..errors import SwggufError
from .names import DOWN_PROJ_PATTERN
from .sources import WeightSource, open_source

log = logging.getLogger(__name__)


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create modules with their parameters on the meta device (no memory, no init cost)
    while buffers (rotary frequencies, embedding scales) are computed for real."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=False)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def skeleton(config) -> nn.Module:
    """A causal-LM module for ``config`` with every parameter on the meta device."""
    from transformers import AutoModelForCausalLM

    try:
        with _parameters_on_meta():
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except ValueError as err:
        raise SwggufError(f"unsupported architecture {config.model_type!r}: no causal-LM class in "
                          f"transformers ({str(err).splitlines()[0]})") from None
    return model.eval()


def down_proj_modules(model: nn.Module) -> dict[int, nn.Linear]:
    """Layer index -> the layer's MLP down projection (an ``nn.Linear``)."""
    found = {}
    for name, module in model.named_modules():
        m = DOWN_PROJ_PATTERN.match(name)
        if m and isinstance(module, nn.Linear):
            found[int(m["layer"])] = module
    return dict(sorted(found.items()))


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers that hold the down projections, in layer order."""
    layers = []
    for name, module in model.named_modules():
        m = DOWN_PROJ_PATTERN.match(name)
        if m and isinstance(module, nn.Linear):
            layers.append((int(m["layer"]), model.get_submodule(f"{m['layers']}.{m['layer']}")))
    return [layer for _, layer in sorted(layers, key=lambda item: item[0])]


def _set_param(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    module._parameters[attr] = nn.Parameter(value, requires_grad=False)


def _param_names(model: nn.Module) -> dict[str, torch.Size]:
    """Every parameter name, tied duplicates included (lm_head.weight when tied to the embedding)."""
    return {n: p.shape for n, p in model.named_parameters(remove_duplicate=False)}


def _tied_source_name(model: nn.Module, name: str) -> str | None:
    """For a parameter the checkpoint may omit because it is tied (lm_head), the name it is tied to."""
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    if out is None or inp is None or not getattr(model.config, "tie_word_embeddings", False):
        return None
    out_names = {f"{n}.weight" for n, m in model.named_modules() if m is out}
    if name in out_names:
        return next(f"{n}.weight" for n, m in model.named_modules() if m is inp)
    return None


class _Loader:
    """Fetches parameters of a skeleton from a source, resolving tied names."""

    def __init__(self, model: nn.Module, source: WeightSource) -> None:
        self.model = model
        self.source = source
        self.shapes = _param_names(model)

    def fetch(self, name: str) -> torch.Tensor:
        key = name
        if not self.source.has_tensor(key):
            key = _tied_source_name(self.model, name) or name
        if not self.source.has_tensor(key):
            raise SwggufError(f"the checkpoint has no tensor for parameter {name!r} "
                              f"({self.source.architecture} layout not supported)", self.source.path)
        t = self.source.tensor(key)
        if t.shape != self.shapes[name]:
            raise SwggufError(f"tensor for {name!r} has shape {tuple(t.shape)}, the model expects "
                              f"{tuple(self.shapes[name])}", self.source.path)
        return t

    def load(self, names: list[str]) -> None:
        shared: dict[str, torch.Tensor] = {}  # tied names share one tensor, as in the original model
        for name in names:
            key = _tied_source_name(self.model, name) or name
            if key not in shared:
                shared[key] = self.fetch(name)
            _set_param(self.model, name, shared[key])

    def release(self, names: list[str]) -> None:
        for name in names:
            _set_param(self.model, name, torch.empty(self.shapes[name], device="meta"))


def build_model(source: WeightSource, low_mem: bool = False) -> nn.Module:
    """The float32 causal LM of ``source``, fully loaded, or with ``low_mem`` streaming its
    decoder layers, input embedding and output head from disk as each one runs."""
    model = skeleton(source.config)
    if not down_proj_modules(model):
        raise SwggufError(f"architecture {source.architecture!r} has no MLP down projection "
                          "(model.layers.N.mlp.down_proj): super-weight detection does not apply", source.path)
    source.bind(model)
    loader = _Loader(model, source)
    names = list(loader.shapes)
    if not low_mem:
        loader.load(names)
        return model
    streamed: list[tuple[nn.Module, list[str]]] = []
    prefix_of = {m: n for n, m in model.named_modules()}
    units = [*decoder_layers(model), model.get_input_embeddings(), model.get_output_embeddings()]
    for unit in units:
        if unit is None:
            continue
        prefix = prefix_of[unit] + "."
        streamed.append((unit, [n for n in names if n.startswith(prefix)]))
    in_units = {n for _, unit_names in streamed for n in unit_names}
    loader.load([n for n in names if n not in in_units])  # norms and the like: small, kept
    for unit, unit_names in streamed:
        unit.register_forward_pre_hook(lambda *_, n=unit_names: loader.load(n))
        unit.register_forward_hook(lambda *_, n=unit_names: loader.release(n))
    log.debug("low-mem: %d streamed units", len(streamed))
    return model


def load_model(path: str | Path, low_mem: bool = False) -> tuple[WeightSource, nn.Module]:
    source = open_source(path)
    return source, build_model(source, low_mem=low_mem)
