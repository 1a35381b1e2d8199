"""Test support: the settings every serving test runs the model with, and what swgguf's
own path (llama-cpp-python, in the test process) generates for the prompt they send."""

from __future__ import annotations

from dataclasses import dataclass

from swgguf import runtime
from swgguf.formats.gguf_io import field_value, open_gguf
from swgguf.formats.sidecar import KEY_TENSORS
from swgguf.runtime import vocab

# the same settings for every process that runs the model: one thread (a 2-core CI
# machine), flash attention off (llama-cpp-python's default), one context size
THREADS = 1
N_CTX = 256
PROMPT = "Once upon a time, there was a little girl who"  # plain and protected part at the 2nd token
N_PREDICT = 8
N_TOP = 5


@dataclass(frozen=True)
class Greedy:
    prompt: list[int]  # BOS included, as llama-server tokenizes a text prompt
    tokens: list[runtime.GeneratedToken]
    text: str

    @property
    def ids(self) -> list[int]:
        return [t.token for t in self.tokens]


def in_process_greedy(path, prompt: str = PROMPT, n_predict: int = N_PREDICT) -> Greedy:
    llm = runtime.load(path, runtime.LoadOptions(n_ctx=N_CTX, n_threads=THREADS))
    try:
        ids = vocab.tokenize(path, prompt, add_bos=True)
        tokens = runtime.greedy(llm, ids, n_predict, n_top=N_TOP)
        text = llm.detokenize([t.token for t in tokens]).decode("utf-8", "replace")
    finally:
        llm.close()
    return Greedy(ids, tokens, text)




def sidecar_bases(path) -> list[str]:
    """The weights a file protects, from its sidecar key (without reading the tensors)."""
    return list(field_value(open_gguf(path), KEY_TENSORS) or [])
