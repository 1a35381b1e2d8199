"""Mean KL divergence of quantized models against a reference, on text windows.

Small on purpose (convert's tests and benchmarks need it; `swgguf ppl` is
the full tool). All candidate models are loaded at once and evaluated window
by window, so the reference's logits never need to be stored.

Conventions (as llama-perplexity --kl-divergence): windows of ``n_ctx``
tokens cut one after the other from the tokenized text, the first token of a
window replaced by BOS when the vocabulary adds one; unlike llama-perplexity
every position of a window is scored, not only its second half. The standard
error treats tokens as independent, as llama-perplexity does, so it is a
lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import SwggufError
from .runtime import llm


@dataclass(frozen=True)
class KldResult:
    mean: float  # mean KL(ref || model) per token, nats
    stderr: float
    ppl: float  # perplexity of the model on the scored tokens
    top1: float  # fraction of tokens where the model's argmax equals the reference's
    n_tokens: int

    def as_dict(self) -> dict:
        return {"mean_kld": self.mean, "kld_stderr": self.stderr, "ppl": self.ppl, "top1_agree": self.top1,
                "n_tokens": self.n_tokens}


def tokenize(model: str | Path, text: str) -> list[int]:
    """Token ids of ``text`` by the model's tokenizer, without BOS."""
    llama_cpp = llm._import_llama_cpp()
    handle = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    return list(handle.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def windows(tokens: Sequence[int], n_ctx: int, n_windows: int, bos: int | None) -> list[list[int]]:
    """``n_windows`` consecutive windows of ``n_ctx`` tokens, each starting with ``bos`` if given."""
    if len(tokens) < n_ctx * n_windows:
        raise SwggufError(f"the text has {len(tokens)} tokens, {n_ctx * n_windows} needed "
                          f"for {n_windows} windows of {n_ctx}")
    out = []
    for i in range(n_windows):
        w = list(tokens[i * n_ctx: (i + 1) * n_ctx])
        if bos is not None:
            w[0] = bos
        out.append(w)
    return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare(reference: str | Path, models: Sequence[str | Path], wins: Sequence[Sequence[int]],
            *, n_threads: int | None = None, progress: Callable[[int, int], None] | None = None
            ) -> list[KldResult]:
    """KL(reference || model) for each of ``models`` over the token windows ``wins``."""
    n_ctx = max(len(w) for w in wins)
    opts = llm.LoadOptions(n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads)
    ref = llm.load(reference, opts)
    handles = [llm.load(m, opts) for m in models]
    klds: list[list[np.ndarray]] = [[] for _ in models]
    nll: list[list[np.ndarray]] = [[] for _ in models]
    agree: list[list[np.ndarray]] = [[] for _ in models]
    for i, w in enumerate(wins):
        lp_ref = _log_softmax(llm.logits(ref, w))[:-1]  # position t predicts token t+1
        p_ref = np.exp(lp_ref)
        targets = np.asarray(w[1:])
        for j, h in enumerate(handles):
            lp = _log_softmax(llm.logits(h, w))[:-1]
            klds[j].append((p_ref * (lp_ref - lp)).sum(axis=-1))
            nll[j].append(-lp[np.arange(len(targets)), targets])
            agree[j].append(lp.argmax(axis=-1) == lp_ref.argmax(axis=-1))
        if progress is not None:
            progress(i + 1, len(wins))
    out = []
    for j in range(len(models)):
        k = np.concatenate(klds[j])
        out.append(KldResult(float(k.mean()), float(k.std(ddof=1) / np.sqrt(k.size)),
                             float(np.exp(np.concatenate(nll[j]).mean())),
                             float(np.concatenate(agree[j]).mean()), int(k.size)))
    return out


def text_windows(model: str | Path, text_path: str | Path, n_ctx: int, n_windows: int,
                 start: float = 0.0) -> list[list[int]]:
    """Windows from the part of a text file after fraction ``start`` of its characters."""
    raw = Path(text_path).read_text(encoding="utf-8")
    cut = int(len(raw) * start)
    if cut:
        cut = raw.find("\n", cut) + 1
    # tokenize only what is needed (about 4 characters per token, with margin)
    raw = raw[cut: cut + n_ctx * n_windows * 8]
    llama_cpp = llm._import_llama_cpp()
    handle = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    tokens = handle.tokenize(raw.encode("utf-8"), add_bos=False, special=False)
    bos = handle.token_bos() if handle._model.add_bos_token() else None
    return windows(tokens, n_ctx, n_windows, bos if bos is not None and bos >= 0 else None)
