"""Thin layer over llama-cpp-python: load a GGUF, get float32 logits, and turn
llama.cpp's load errors into one-line SwggufErrors.

llama.cpp reports why a model failed to load only through its log callback;
llama-cpp-python then raises a bare "Failed to load model". We install a log
callback that keeps the last error lines, so the user sees, e.g.,
``swgguf sidecar of 'blk.0.ffn_down': column index 9999 out of range [0, 512)``.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import SwggufError

log = logging.getLogger(__name__)

GGML_LOG_LEVEL_WARN = 3  # ggml.h enum ggml_log_level
GGML_LOG_LEVEL_ERROR = 4
GGML_TYPE_F32 = 0

_recent_errors: deque[str] = deque(maxlen=16)
_swgguf_lines: deque[str] = deque(maxlen=64)
_callback = None  # keeps the ctypes callback alive


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise SwggufError(
            "llama-cpp-python is not installed: run `swgguf runtime build`", "llama_cpp"
        ) from None
    _install_log_callback(llama_cpp)
    return llama_cpp


def _install_log_callback(llama_cpp) -> None:
    global _callback
    if _callback is not None:
        return
    verbose = os.environ.get("SWGGUF_LLAMA_LOG") == "1"

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace")
        if level in (GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR):
            _recent_errors.append(line.strip())
        if "swgguf" in line:
            _swgguf_lines.append(line.strip())
        if verbose:
            log.info(line.rstrip())

    _callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def swgguf_log_lines() -> list[str]:
    """The runtime's recent log lines that mention swgguf (sidecars loaded, env read)."""
    return list(_swgguf_lines)


def _load_error(path: Path) -> str:
    """The most telling of llama.cpp's recent error lines: the loader's reason first."""
    for marker in ("error loading model:", "swgguf", "failed to"):
        for line in reversed(_recent_errors):
            if marker in line:
                return line.split("error loading model:", 1)[-1].strip()
    return "llama.cpp failed to load the model"


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 512
    n_batch: int = 512
    n_threads: int | None = None
    kv_f32: bool = False  # F32 KV cache: logits then match a float reference to ~1e-6
    n_gpu_layers: int = 0


def load(path: str | Path, options: LoadOptions = LoadOptions()):
    """A llama_cpp.Llama for ``path`` that keeps the logits of every position."""
    llama_cpp = _import_llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise SwggufError("no such file", path)
    kwargs = dict(
        n_ctx=options.n_ctx,
        n_batch=options.n_batch,
        n_ubatch=options.n_batch,
        logits_all=True,
        verbose=False,
        n_gpu_layers=options.n_gpu_layers,
    )
    if options.n_threads:
        kwargs.update(n_threads=options.n_threads, n_threads_batch=options.n_threads)
    if options.kv_f32:
        kwargs.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    _recent_errors.clear()
    try:
        return llama_cpp.Llama(str(path), **kwargs)
    except (ValueError, RuntimeError) as err:
        raise SwggufError(_load_error(path) if _recent_errors else str(err), path) from None


def logits(llm, tokens: Sequence[int]) -> np.ndarray:
    """Float32 logits (len(tokens), n_vocab) of one sequence from position 0."""
    llm.reset()
    llm.eval(list(tokens))
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


@contextmanager
def environment(**env: str | None) -> Iterator[None]:
    """Set (or unset, with None) environment variables, e.g. SWGGUF_SW_SCALE, for
    contexts created inside the block: the runtime reads them once per context."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
