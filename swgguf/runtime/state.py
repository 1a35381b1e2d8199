"""Moving a sequence's computed state (KV cache and logits) between two contexts.

``swgguf ablate --restore-sa`` computes the first positions of a window with
one model and the rest with another; llama.cpp's sequence-state API
(``llama_state_seq_get_data`` / ``set_data``) carries the KV cache across, and
llama-cpp-python's bookkeeping of the target (tokens seen, their logits) is
brought in line by hand, which is why this lives in the runtime.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

from ..errors import SwggufError
from .llm import import_llama_cpp


def logits_with_prefix_from(source, target, tokens: Sequence[int], n_prefix: int) -> np.ndarray:
    """Float32 logits (len(tokens), n_vocab) of ``tokens`` computed by ``target``, except
    that the first ``n_prefix`` positions are computed by ``source`` (both llama_cpp.Llama
    of the same architecture and context size): their KV cache and logits are copied
    into ``target``, which then evaluates the rest attending to them."""
    llama_cpp = import_llama_cpp()
    k = n_prefix
    source.reset()
    source.eval(list(tokens[:k]))
    size = llama_cpp.llama_state_seq_get_size(source._ctx.ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    got = llama_cpp.llama_state_seq_get_data(source._ctx.ctx, buf, size, 0)
    target.reset()
    target._ctx.kv_cache_seq_rm(-1, 0, -1)
    if got == 0 or llama_cpp.llama_state_seq_set_data(target._ctx.ctx, buf, got, 0) == 0:
        raise SwggufError("could not copy the KV cache between contexts")
    target.n_tokens = k
    target.input_ids[:k] = tokens[:k]
    target.scores[:k] = source.scores[:k]
    target.eval(list(tokens[k:]))
    return np.array(target.scores[: len(tokens)], dtype=np.float32)
