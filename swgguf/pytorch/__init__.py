"""Models as float32 PyTorch modules on the CPU, for ``swgguf detect``: weight
sources (:mod:`.sources`: HF safetensors or any GGUF), the model built from one
(:mod:`.model`, with ``low_mem`` layer streaming) and HF <-> GGUF names
(:mod:`.names`)."""

from .model import build_model, decoder_layers, down_proj_modules, load_model, skeleton
from .names import down_proj_gguf_name, gguf_element_offset, gguf_tensor_name
from .sources import GgufSource, HfSource, WeightSource, open_source, supported_gguf_architectures

__all__ = [
    "build_model", "decoder_layers", "down_proj_modules", "load_model", "skeleton", "down_proj_gguf_name",
    "gguf_element_offset", "gguf_tensor_name", "GgufSource", "HfSource", "WeightSource", "open_source",
    "supported_gguf_architectures",
]
