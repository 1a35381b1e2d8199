"""Several continuations of one prefix in a single ``llama_decode``: HellaSwag's four
endings after their shared context, as ``llama-perplexity --hellaswag`` batches them.

The prefix is sequence 0 of a context made with ``LoadOptions(n_seq=4)`` (evaluated by
:func:`swgguf.runtime.logits` or :func:`swgguf.runtime.logits_with_prefix_from`); its KV
cells are shared with sequences 1..n-1 (``llama_memory_seq_cp``, no copy of the data)
and each continuation goes into the same batch in its own sequence.

The pinned llama.cpp (patched or not) computes attention wrongly in a ubatch of several
sequences above a size (ggml-org/llama.cpp issue 24962): measured on SmolLM2, at 56
tokens without flash attention (logits up to 0.86 away from the same continuation
evaluated alone) and above 64 with it (mean log-probabilities up to 0.036 away). So the batched path
needs a context with flash attention and ubatches of at most :data:`MAX_UBATCH` tokens
(llama.cpp then splits the batch itself); other contexts get one decode per
continuation. tests/evaluate/test_hellaswag.py checks the batched scores against
those of every ending evaluated alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SwggufError
from .llm import continuation_logits, import_llama_cpp

MAX_UBATCH = 32  # below the sizes at which llama.cpp's multi-sequence attention goes wrong


def batches_sequences(llm) -> int:
    """How many continuations ``llm``'s context evaluates in one decode: its sequences
    where it has flash attention and small ubatches, else 1 (one decode each)."""
    llama_cpp = import_llama_cpp()
    params = llm.context_params
    if params.flash_attn_type != llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED or params.n_ubatch > MAX_UBATCH:
        return 1
    return int(llama_cpp.llama_n_seq_max(llm._ctx.ctx))


def branch_logits(llm, n_keep: int, continuations: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Float32 logits (len(c), n_vocab) of each continuation ``c`` evaluated after the first
    ``n_keep`` positions of ``llm``'s sequence, which are kept; afterwards the context
    holds those positions only. One decode when the context batches that many sequences
    (:func:`batches_sequences`) and they fit its batch, else one decode per continuation."""
    llama_cpp = import_llama_cpp()
    ctx = llm._ctx.ctx
    total = sum(len(c) for c in continuations)
    if total == 0 or len(continuations) > batches_sequences(llm) or total > llm.n_batch \
            or n_keep + total > llm.n_ctx():
        return [continuation_logits(llm, n_keep, c) for c in continuations]
    if not 0 < n_keep <= llm.n_tokens:
        raise SwggufError(f"cannot continue after {n_keep} positions: the context holds {llm.n_tokens}")
    mem = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(mem, 0, n_keep, -1)
    for s in range(1, len(continuations)):
        llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
        llama_cpp.llama_memory_seq_cp(mem, 0, s, -1, -1)
    _fill(llm._batch.batch, n_keep, continuations)
    try:
        llm._ctx.decode(llm._batch)
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(total, llm.n_vocab())).copy()
    except RuntimeError as err:
        raise SwggufError(f"llama.cpp could not evaluate the continuations ({err})") from None
    finally:
        for s in range(len(continuations)):  # back to the prefix alone
            llama_cpp.llama_memory_seq_rm(mem, s, n_keep if s == 0 else -1, -1)
        llm.n_tokens = n_keep
    return np.split(rows, np.cumsum([len(c) for c in continuations])[:-1])


def _fill(batch, n_keep: int, continuations: Sequence[Sequence[int]]) -> None:
    """Continuation s at positions n_keep.. of sequence s, logits for every token."""
    i = 0
    for s, tokens in enumerate(continuations):
        for j, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, n_keep + j, 1, True
            batch.seq_id[i][0] = s
            i += 1
    batch.n_tokens = i
