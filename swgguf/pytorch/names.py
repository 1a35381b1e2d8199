"""Hugging Face module names and GGUF tensor names of the same weight."""

from __future__ import annotations

import re

import gguf

# transformers' decoder layers: "<prefix>.layers.<i>"; the MLP down projection in each
DOWN_PROJ_PATTERN = re.compile(r"^(?P<layers>(?:.+\.)?layers)\.(?P<layer>\d+)\.mlp\.down_proj$")
# config.model_type -> the gguf-py architecture name, where they differ
GGUF_ARCH_NAMES = {"gemma3_text": "gemma3", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}


def gguf_tensor_name(architecture: str, n_layers: int, hf_module: str) -> str | None:
    """GGUF tensor name of an HF module's weight, e.g. ``model.layers.11.mlp.down_proj`` ->
    ``blk.11.ffn_down.weight`` (gguf-py's TensorNameMap, the table convert_hf_to_gguf uses)."""
    arch_name = GGUF_ARCH_NAMES.get(architecture, architecture)
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name), None)
    if arch is None:
        return None
    base = gguf.get_tensor_name_map(arch, n_layers).get_name(hf_module)
    return None if base is None else f"{base}.weight"


def down_proj_gguf_name(architecture: str, n_layers: int, layer: int) -> str:
    """The GGUF tensor holding layer ``layer``'s MLP down projection (``blk.<layer>.ffn_down.weight``)."""
    return gguf_tensor_name(architecture, n_layers, f"model.layers.{layer}.mlp.down_proj") or \
        f"blk.{layer}.ffn_down.weight"


def gguf_element_offset(row: int, col: int, n_in: int) -> int:
    """Element index of HF ``weight[row, col]`` in the GGUF tensor: ggml stores a (n_out, n_in)
    matrix with ne = [n_in, n_out], row-major in numpy terms, so the offset is ``row * n_in + col``
    (divide by the type's block size for the quantization block)."""
    if not (0 <= col < n_in) or row < 0:
        raise ValueError(f"({row}, {col}) is outside a matrix with {n_in} columns")
    return row * n_in + col
