"""The patched llama.cpp runtime: the only door from swgguf to llama.cpp.

Only modules of this package import ``llama_cpp`` (llama-cpp-python built from
the pinned sdist with patches/), read the SWGGUF_* environment variables or
run llama.cpp's tools and scripts. The rest of swgguf uses the names below:

* contexts: :func:`load` (with :class:`LoadOptions` and :class:`ContextSettings`),
  :func:`logits`, :func:`continuation_logits` and :func:`branch_logits` (continuations of
  a prefix computed once), :func:`logits_with_prefix_from` (the KV-cache transfer of
  ``ablate --restore-sa``), :func:`applied_scalar_count`, :func:`greedy` (generation as
  llama-server runs it);
* tokenizer: :mod:`.vocab` (``n_vocab``, ``bos_token``, ``tokenize``, ``token_text``);
* quantizer: :func:`quantize`, :func:`canonical_ftype`, :func:`parse_tensor_type`;
* tools: :func:`compute_imatrix` (llama-imatrix), :func:`convert_hf` (convert_hf_to_gguf.py);
* the build: :mod:`.build`, :mod:`.pins`, :mod:`.info` (``swgguf runtime build|info``).
"""

from . import vocab
from .branches import branch_logits
from .generate import GeneratedToken, greedy
from .hf_convert import convert_hf
from .imatrix_tool import compute_imatrix
from .llm import (LoadOptions, applied_scalar_count, continuation_logits, environment, load, logits, sidecar_version,
                  swgguf_log_lines)
from .quantize import canonical_ftype, parse_tensor_type, quantize
from .settings import ContextSettings
from .state import logits_with_prefix_from

__all__ = [
    "vocab", "branch_logits", "GeneratedToken", "greedy", "convert_hf", "compute_imatrix", "LoadOptions",
    "applied_scalar_count", "continuation_logits", "environment", "load", "logits", "sidecar_version",
    "swgguf_log_lines", "canonical_ftype", "parse_tensor_type", "quantize", "ContextSettings",
    "logits_with_prefix_from",
]
