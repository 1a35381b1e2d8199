"""Thin layer over llama-cpp-python: import it, load a GGUF, get float32 logits,
and turn llama.cpp's load errors into one-line SwggufErrors.

llama.cpp reports why a model failed to load only through its log callback;
llama-cpp-python then raises a bare "Failed to load model". We install a log
callback that keeps the last error lines, so the user sees, e.g.,
``swgguf sidecar of 'blk.0.ffn_down': column index 9999 out of range [0, 512)``.
The same callback keeps the lines in which the patched runtime reports what it
does with a file's sidecars, for people and tests to read; code asks the patch's C
API instead (:func:`applied_scalar_count`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import weakref
from collections import deque
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import SwggufError
from .settings import ENV_LLAMA_LOG, ENV_SIDECAR, ContextSettings

log = logging.getLogger(__name__)

GGML_LOG_LEVEL_WARN = 3  # ggml.h enum ggml_log_level
GGML_LOG_LEVEL_ERROR = 4
GGML_TYPE_F32 = 0
PATCH_SYMBOL = "llama_swgguf_sidecar_version"      # exported by the patch
N_SCALARS_SYMBOL = "llama_model_swgguf_n_scalars"  # exported by the patch

# called with (level, line) for every line llama.cpp logs
LogSink = Callable[[int, str], None]

_recent_errors: deque[str] = deque(maxlen=16)
_swgguf_lines: deque[tuple[int, str]] = deque(maxlen=64)  # (sequence number, line)
# the loader's line saying where a file's sidecars went, one per buffer type, e.g.
# "upload: swgguf: 3 sidecars in CUDA0 (0.01 MiB)"
SIDECAR_UPLOAD = re.compile(r"upload: swgguf: (\d+) sidecars in (\S+) \(([\d.]+) MiB\)")
_n_lines = 0  # lines seen so far: tells a load's own lines from older ones
_sinks: list[LogSink] = []  # extra readers of the log (quantize's progress)
_callback = None  # keeps the ctypes callback alive
# whether each context was made to apply its file's sidecars (SWGGUF_SIDECAR != "0")
_applies_sidecars: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()


def import_llama_cpp():
    """The llama_cpp module, with swgguf's log callback installed; SwggufError when absent."""
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
    verbose = os.environ.get(ENV_LLAMA_LOG) == "1"

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        global _n_lines
        line = text.decode("utf-8", "replace")
        _n_lines += 1
        if level in (GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR):
            _recent_errors.append(line.strip())
        if "swgguf" in line:  # every line of the series names it
            _swgguf_lines.append((_n_lines, line.strip()))
        for sink in _sinks:
            sink(level, line)
        if verbose:
            log.info(line.rstrip())

    _callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


@contextmanager
def log_sink(sink: LogSink) -> Iterator[None]:
    """Also hand every llama.cpp log line to ``sink`` inside the block."""
    import_llama_cpp()
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.remove(sink)


def sidecar_uploads(log: str) -> list[tuple[int, str, float]]:
    """(sidecars, buffer type, MiB) of every upload line in a llama.cpp log (a tool's or
    a server's output, or the joined :func:`swgguf_log_lines`)."""
    return [(int(n), buft, float(mib)) for n, buft, mib in SIDECAR_UPLOAD.findall(log)]


def swgguf_log_lines() -> list[str]:
    """The runtime's recent log lines about sidecars (all of them name swgguf: the
    loader's "upload: swgguf: N sidecars in BUFFER (X MiB)", the settings read, warnings)."""
    return [line for _, line in _swgguf_lines]


def sidecar_version() -> int | None:
    """The sidecar format version of the installed runtime; None for an unpatched one."""
    llama_cpp = import_llama_cpp()
    lib = llama_cpp.llama_cpp._lib
    if not hasattr(lib, PATCH_SYMBOL):
        return None
    fn = getattr(lib, PATCH_SYMBOL)
    fn.restype = ctypes.c_int32
    fn.argtypes = []
    return int(fn())


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
    # CPU weight repacking (llama.cpp's default; --no-repack): off, the CPU runs the same
    # kernels on the same layout as a ggml-rpc-server does, which cannot repack
    repack: bool = True
    n_seq: int = 1  # sequences sharing the KV cache (HellaSwag's endings: 4, see branches.py)
    n_ubatch: int | None = None  # tokens llama.cpp computes at once; None: n_batch
    flash_attn: bool = False  # llama-cpp-python's default; llama-perplexity's is on for the CPU


def load(path: str | Path, options: LoadOptions = LoadOptions(), settings: ContextSettings | None = None):
    """A llama_cpp.Llama for ``path`` that keeps the logits of every position.

    With ``settings``, its context applies the sidecars as they say (every SWGGUF_*
    variable they do not set is unset while it is made); without, the process
    environment decides."""
    llama_cpp = import_llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise SwggufError("no such file", path)
    kwargs = dict(
        n_ctx=options.n_ctx,
        n_batch=options.n_batch,
        n_ubatch=options.n_ubatch or options.n_batch,
        logits_all=True,
        verbose=False,
        n_gpu_layers=options.n_gpu_layers,
        flash_attn=options.flash_attn,
    )
    if options.n_threads:
        kwargs.update(n_threads=options.n_threads, n_threads_batch=options.n_threads)
    if options.kv_f32:
        kwargs.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    _recent_errors.clear()
    try:
        with environment(**(settings.environment() if settings is not None else {})), \
                _model_params(llama_cpp, **({} if options.repack else {"use_extra_bufts": False})):
            applies = os.environ.get(ENV_SIDECAR, "1") != "0"
            llama = llama_cpp.Llama(str(path), **kwargs)
            if options.n_seq > 1:
                _share_kv_cache(llama, options.n_seq)
    except (ValueError, RuntimeError) as err:
        raise SwggufError(_load_error(path) if _recent_errors else str(err), path) from None
    _applies_sidecars[llama] = applies
    return llama


@contextmanager
def _model_params(llama_cpp, **fields: object) -> Iterator[None]:
    """Set llama_model_params fields that llama-cpp-python 0.3.36's Llama has no argument
    for (use_extra_bufts), for the models loaded inside the block: Llama starts from
    llama_model_default_params(), so the defaults it gets are changed, then restored."""
    if not fields:
        yield
        return
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def params():
        p = default()
        for name, value in fields.items():
            setattr(p, name, value)
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def _share_kv_cache(llama, n_seq: int) -> None:
    """Give ``llama`` a context of ``n_seq`` sequences in one KV cache (as llama-perplexity
    --hellaswag makes it). llama-cpp-python's Llama has no argument for it, so the context
    it made is replaced by one made from the same parameters with n_seq_max set; this runs
    inside load()'s environment block, so the runtime reads the same SWGGUF_* settings."""
    from llama_cpp import _internals

    params = type(llama.context_params).from_buffer_copy(llama.context_params)
    params.n_seq_max = n_seq
    params.kv_unified = True
    old = llama._ctx
    llama._ctx = llama._stack.enter_context(
        closing(_internals.LlamaContext(model=llama._model, params=params, verbose=False)))
    old.close()


def applied_scalar_count(llama) -> int:
    """How many super-weight scalars the runtime applies in ``llama``'s context (0 when
    it ignores the file's sidecars). SwggufError when the runtime is not the patched one.

    The model's count comes from the patch's C API (llama_model_swgguf_n_scalars); whether
    the context applies them, from the SWGGUF_SIDECAR setting it was made with."""
    lib = import_llama_cpp().llama_cpp._lib
    if not hasattr(lib, N_SCALARS_SYMBOL):
        raise SwggufError(f"the runtime has no {N_SCALARS_SYMBOL}: is the patched runtime installed? "
                          "(`swgguf runtime build`)")
    fn = getattr(lib, N_SCALARS_SYMBOL)
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_void_p]
    return int(fn(llama.model)) if _applies_sidecars.get(llama, True) else 0


def logits(llm, tokens: Sequence[int]) -> np.ndarray:
    """Float32 logits (len(tokens), n_vocab) of one sequence from position 0."""
    llm.reset()
    llm.eval(list(tokens))
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def continuation_logits(llm, n_keep: int, tokens: Sequence[int]) -> np.ndarray:
    """Float32 logits (len(tokens), n_vocab) of ``tokens`` evaluated after the first
    ``n_keep`` positions already in ``llm``'s context (from :func:`logits` or an earlier
    call), which are kept; whatever followed them is dropped from the KV cache. HellaSwag's
    four endings share their context this way: it is computed once."""
    if not 0 < n_keep <= llm.n_tokens:
        raise SwggufError(f"cannot continue after {n_keep} positions: the context holds {llm.n_tokens}")
    if n_keep + len(tokens) > llm.n_ctx():
        raise SwggufError(f"{n_keep + len(tokens)} tokens do not fit the context of {llm.n_ctx()}")
    llm.n_tokens = n_keep  # eval() drops the KV cache from n_tokens on before it decodes
    llm.eval(list(tokens))
    return np.array(llm.scores[n_keep: n_keep + len(tokens)], dtype=np.float32)


@contextmanager
def environment(**env: str | None) -> Iterator[None]:
    """Set (or unset, with None) environment variables, e.g. SWGGUF_SW_SCALE, for
    contexts created inside the block: the runtime reads them once per context."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        _set_environment(env)
        yield
    finally:
        _set_environment(saved)


def _set_environment(env: dict[str, str | None]) -> None:
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
