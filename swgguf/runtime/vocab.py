"""A model's tokenizer, through llama.cpp: the tokens the runtime itself will see.

One vocabulary-only llama.cpp handle per file, cached for the process (loading
one reads only the GGUF's metadata).
"""

from __future__ import annotations

import atexit
from pathlib import Path

from ..errors import SwggufError
from ..formats.gguf_io import check_tokenizer
from .llm import import_llama_cpp

_vocabs: dict[str, object] = {}
_with_tokenizer: set[str] = set()  # files whose GGUF metadata holds a tokenizer


def _vocab(model: str | Path) -> object:
    """The vocabulary-only handle of ``model``, cached per resolved path."""
    key = str(Path(model).resolve())
    if key in _vocabs:
        return _vocabs[key]
    llama_cpp = import_llama_cpp()
    if not Path(key).is_file():
        raise SwggufError("no such file", key)
    try:
        handle = llama_cpp.Llama(key, vocab_only=True, verbose=False)
    except (ValueError, RuntimeError) as err:
        raise SwggufError(f"llama.cpp cannot read the vocabulary ({err})", key) from None
    if not _vocabs:
        atexit.register(_close_vocabs)
    _vocabs[key] = handle
    return handle


def _tokenizer(model: str | Path) -> object:
    """The handle of ``model`` for reading or writing text: a GGUF without a tokenizer
    is refused here, in Python, because llama.cpp aborts the process on it
    (llama-vocab.cpp, LLAMA_VOCAB_TYPE_NONE)."""
    key = str(Path(model).resolve())
    if key not in _with_tokenizer:
        check_tokenizer(model)
        _with_tokenizer.add(key)
    return _vocab(key)


def _close_vocabs() -> None:
    # freed while llama_cpp's module globals still exist: at interpreter teardown
    # Llama.__del__ would call into a half-destroyed module and print tracebacks
    while _vocabs:
        _vocabs.popitem()[1].close()


def n_vocab(model: str | Path) -> int:
    return int(_vocab(model).n_vocab())


def bos_token(model: str | Path) -> int | None:
    """The BOS id where the model's vocabulary adds one to a sequence, else None."""
    handle = _tokenizer(model)
    bos = handle.token_bos()
    return int(bos) if handle._model.add_bos_token() and bos is not None and bos >= 0 else None


def tokenize(model: str | Path, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of ``text`` by the model's own tokenizer (special tokens not parsed)."""
    handle = _tokenizer(model)
    try:
        return list(handle.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))
    except (ValueError, RuntimeError) as err:
        raise SwggufError(f"cannot tokenize the text ({err})", model) from None


def token_text(model: str | Path, token: int) -> str:
    return _tokenizer(model).detokenize([token]).decode("utf-8", "replace")
