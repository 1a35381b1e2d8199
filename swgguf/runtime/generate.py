"""Greedy generation in this process, token by token as llama.cpp's own servers run it.

llama-server and llama-cli evaluate the prompt as one batch, then each new token
alone, take the most likely token (temperature 0) and report log-probabilities as
the log of a softmax over all logits (tools/server ``get_token_probabilities``).
:func:`greedy` does the same with a context from :func:`swgguf.runtime.load`, so a
file served by the patched tools can be checked against swgguf's own path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .llm import import_llama_cpp


@dataclass(frozen=True)
class GeneratedToken:
    """One greedy step: the token taken, its log-probability and the ``n_top`` most
    likely tokens with theirs (most likely first; the first is ``token``)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of one row of logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def greedy(llm, prompt: Sequence[int], n_predict: int, n_top: int = 1) -> list[GeneratedToken]:
    """Up to ``n_predict`` greedy tokens after ``prompt`` (token ids, BOS included if the
    model wants one); it stops after an end-of-generation token, as the servers do."""
    llama_cpp = import_llama_cpp()
    vocab = llm._model.vocab  # llama-cpp-python keeps the vocabulary handle there
    llm.reset()
    llm.eval(list(prompt))
    out: list[GeneratedToken] = []
    while len(out) < n_predict:
        lp = log_softmax(llm.scores[llm.n_tokens - 1])
        order = np.argsort(-lp, kind="stable")[: max(n_top, 1)]
        token = int(order[0])
        out.append(GeneratedToken(token, float(lp[token]), tuple((int(t), float(lp[t])) for t in order)))
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) == n_predict:
            break
        llm.eval([token])
    return out
