"""llama.cpp's own quantizer (``llama_model_quantize``) through llama-cpp-python.

All of llama.cpp's mixtures and fallbacks apply (e.g. Q4_K_M's Q6_K for half
of ffn_down and attn_v, Q5_0 for rows not divisible by 256), so a file made
here is the file `llama-quantize` makes from the same input and options:
the importance matrix, tensor type overrides and the ``quantize.imatrix.*``
keys are passed exactly as tools/quantize/quantize.cpp passes them
(tests/test_convert_identity.py compares the bytes).

Everything is validated in Python before the native call, so a bad option is
a one-line SwggufError quoting the bad value, never a C++ abort.
"""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import SwggufError
from .imatrix import Imatrix
from .runtime import llm
from .runtime.llm import _import_llama_cpp

# llama-quantize's aliases (tools/quantize/quantize.cpp QUANT_OPTIONS)
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# the keys llama-quantize records when it is given an imatrix
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"
_KV_STR_MAX = 127  # llama_model_kv_override.val_str is char[128]
GGUF_MAGIC = b"GGUF"

# called with (index, total, tensor name) as llama.cpp starts on each tensor
TensorProgress = Callable[[int, int, str], None]
_PROGRESS_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def ftype_names() -> list[str]:
    """Every llama_ftype name the runtime knows, e.g. 'Q4_K_M', 'F16'."""
    llama_cpp = _import_llama_cpp()
    names = []
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            names.append(attr[len("LLAMA_FTYPE_MOSTLY_"):])
    return sorted(names + ["F32"])


def canonical_ftype(name: str) -> str:
    """'q4_k' -> 'Q4_K_M' (llama-quantize's aliases); unknown names raise SwggufError."""
    key = FTYPE_ALIASES.get(name.upper(), name.upper())
    ftype_value(key)
    return key


def ftype_value(name: str) -> int:
    llama_cpp = _import_llama_cpp()
    key = FTYPE_ALIASES.get(name.upper(), name.upper())
    attr = "LLAMA_FTYPE_ALL_F32" if key == "F32" else f"LLAMA_FTYPE_MOSTLY_{key}"
    if not hasattr(llama_cpp, attr):
        raise SwggufError(f"unknown quantization type {name!r}; known: {', '.join(ftype_names())}")
    return int(getattr(llama_cpp, attr))


def ggml_type_names() -> list[str]:
    llama_cpp = _import_llama_cpp()
    return sorted(a[len("GGML_TYPE_"):] for a in dir(llama_cpp) if a.startswith("GGML_TYPE_") and a != "GGML_TYPE_COUNT")


def ggml_type_value(name: str) -> int:
    """'q8_0' -> GGML_TYPE_Q8_0, case-insensitive as llama-quantize's parse_ggml_type."""
    llama_cpp = _import_llama_cpp()
    attr = f"GGML_TYPE_{name.upper()}"
    if name.upper() == "COUNT" or not hasattr(llama_cpp, attr):
        raise SwggufError(f"unknown tensor type {name!r}; known: {', '.join(ggml_type_names())}")
    return int(getattr(llama_cpp, attr))


def parse_tensor_type(spec: str) -> tuple[str, str]:
    """``'attn_v=q8_0'`` -> ('attn_v', 'q8_0'), validated like llama-quantize's --tensor-type."""
    pattern, sep, type_name = spec.partition("=")
    if not sep or not pattern or not type_name:
        raise SwggufError(f"tensor type override {spec!r} is not PATTERN=TYPE (e.g. attn_v=q8_0)")
    pattern = pattern.lower()  # llama-quantize lower-cases the pattern too
    try:
        re.compile(pattern)
    except re.error as err:
        raise SwggufError(f"tensor type override {spec!r}: bad regular expression ({err})") from None
    ggml_type_value(type_name)
    return pattern, type_name


def check_gguf(path: Path) -> None:
    """Refuse, before any native code sees it, a path that is not a GGUF file."""
    if not path.exists():
        raise SwggufError("no such file", path)
    if not path.is_file():
        raise SwggufError("not a file", path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SwggufError(f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})", path)


def publish(tmp: str | Path, dst: Path) -> None:
    """Rename a finished temporary file to ``dst`` with the permissions a plain
    ``open()`` would give (mkstemp makes files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)


@dataclass
class _NativeArgs:
    """ctypes arrays that must outlive the native call."""

    keep: list


def _imatrix_array(llama_cpp, imatrix: Imatrix, keep: list):
    entries = sorted(imatrix.values.items())
    arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    for i, (name, values) in enumerate(entries):
        buf = (ctypes.c_float * values.size).from_buffer_copy(values.astype("<f4").tobytes())
        name_b = name.encode()
        keep += [buf, name_b]
        arr[i].name = name_b
        arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
        arr[i].size = values.size
    arr[len(entries)].name = None  # terminator
    keep.append(arr)
    return arr


def _kv_overrides(llama_cpp, imatrix: Imatrix, imatrix_file: str, keep: list):
    """The keys llama-quantize adds for an imatrix, in its order."""
    items: list[tuple[str, int, object]] = [(KEY_IMATRIX_FILE, llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, imatrix_file)]
    if imatrix.datasets:
        items.append((KEY_IMATRIX_DATASET, llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, imatrix.datasets[0]))
    items.append((KEY_IMATRIX_N_ENTRIES, llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, len(imatrix.values)))
    if imatrix.chunk_count > 0:
        items.append((KEY_IMATRIX_N_CHUNKS, llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, imatrix.chunk_count))
    arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
    for i, (key, tag, value) in enumerate(items):
        arr[i].key = key.encode()
        arr[i].tag = tag
        if isinstance(value, str):
            arr[i].value.val_str = value.encode()[:_KV_STR_MAX]
        else:
            arr[i].value.val_i64 = int(value)
    arr[len(items)].key = b""  # terminator
    keep.append(arr)
    return arr


def _tt_overrides(llama_cpp, tensor_types: Sequence[tuple[str, str]], keep: list):
    arr = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
    for i, (pattern, type_name) in enumerate(tensor_types):
        pattern_b = pattern.encode()
        keep.append(pattern_b)
        arr[i].pattern = pattern_b
        arr[i].type = ggml_type_value(type_name)
    arr[len(tensor_types)].pattern = None
    arr[len(tensor_types)].type = llama_cpp.GGML_TYPE_COUNT
    keep.append(arr)
    return arr


def quantize(
    src: str | Path,
    dst: str | Path,
    ftype: str,
    *,
    pure: bool = False,
    allow_requantize: bool = False,
    nthread: int = 0,
    imatrix: Imatrix | None = None,
    imatrix_file: str | None = None,
    tensor_types: Sequence[tuple[str, str]] = (),
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    leave_output_tensor: bool = False,
    progress: TensorProgress | None = None,
) -> Path:
    """Quantize GGUF ``src`` to ``dst`` as llama-quantize would; ``dst`` appears atomically.

    ``imatrix`` is passed as llama-quantize passes its ``--imatrix`` file
    (``imatrix_file`` is the name recorded in ``quantize.imatrix.file``);
    ``tensor_types`` are ``--tensor-type PATTERN=TYPE`` pairs, in order.
    """
    llama_cpp = _import_llama_cpp()
    src, dst = Path(src), Path(dst)
    check_gguf(src)
    if dst.exists() and dst.resolve() == src.resolve():
        raise SwggufError("output would overwrite the input", dst)
    if not dst.parent.is_dir():
        raise SwggufError("the output directory does not exist", dst.parent)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_value(ftype)
    params.pure = pure
    params.allow_requantize = allow_requantize
    params.nthread = nthread
    params.quantize_output_tensor = not leave_output_tensor
    if output_tensor_type is not None:
        params.output_tensor_type = ggml_type_value(output_tensor_type)
    if token_embedding_type is not None:
        params.token_embedding_type = ggml_type_value(token_embedding_type)
    keep: list = []
    tensor_types = [parse_tensor_type(f"{p}={t}") for p, t in tensor_types]
    if tensor_types:
        params.tt_overrides = _tt_overrides(llama_cpp, tensor_types, keep)
    if imatrix is not None and imatrix.values:
        imatrix.validate()
        params.imatrix = _imatrix_array(llama_cpp, imatrix, keep)
        params.kv_overrides = _kv_overrides(llama_cpp, imatrix, imatrix_file or imatrix.source, keep)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        with _native_log(llama_cpp, progress) as errors:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), params)
        if rc != 0:
            reason = next((e for e in reversed(errors) if "failed to quantize" in e), errors[-1] if errors else "")
            reason = reason.split("failed to quantize:", 1)[-1].strip()
            raise SwggufError(f"llama_model_quantize failed: {reason or f'code {rc}'}", src)
        publish(tmp, dst)
    except OSError as err:
        raise SwggufError(f"cannot write ({err.strerror or err})", dst) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


class _native_log:
    """During the native call, read llama.cpp's log for per-tensor progress and errors,
    then give the log back to the runtime's callback."""

    GGML_LOG_LEVEL_ERROR = 4

    def __init__(self, llama_cpp, progress: TensorProgress | None) -> None:
        self.llama_cpp = llama_cpp
        self.progress = progress
        self.errors: list[str] = []
        self._partial = ""

    def __enter__(self) -> list[str]:
        @self.llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data) -> None:
            line = text.decode("utf-8", "replace")
            if level == self.GGML_LOG_LEVEL_ERROR and line.strip():
                self.errors.append(line.strip())
            match = _PROGRESS_LINE.match(line.lstrip())
            if match and self.progress is not None:
                self.progress(int(match.group(1)), int(match.group(2)), match.group(3))

        self._callback = callback
        self.llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        return self.errors

    def __exit__(self, *exc) -> None:
        self.llama_cpp.llama_log_set(llm._callback, ctypes.c_void_p(0))
