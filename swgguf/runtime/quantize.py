"""llama.cpp's own quantizer (``llama_model_quantize``) through llama-cpp-python.

All of llama.cpp's mixtures and fallbacks apply (e.g. Q4_K_M's Q6_K for half
of ffn_down and attn_v, Q5_0 for rows not divisible by 256), so a file made
here is the file `llama-quantize` makes from the same input and options:
the importance matrix, tensor type overrides and the ``quantize.imatrix.*``
keys are passed exactly as tools/quantize/quantize.cpp passes them
(tests/convert/test_convert_tiny.py and test_convert_smollm2.py compare the
bytes with the llama-quantize binary's).

Everything is validated in Python before the native call, so a bad option is
a one-line SwggufError quoting the bad value, never a C++ abort.
"""

from __future__ import annotations

import ctypes
import re
from functools import cache
from pathlib import Path
from typing import Sequence

from ..errors import SwggufError
from ..formats.files import atomic_output, check_outputs
from ..formats.gguf_io import check_gguf
from ..formats.imatrix import Imatrix
from ..progress import Progress, no_progress
from .forked import run_forked
from .fusion import loaded_library
from .llm import GGML_LOG_LEVEL_ERROR, import_llama_cpp, log_sink

# llama-quantize's aliases (tools/quantize/quantize.cpp QUANT_OPTIONS)
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# the keys llama-quantize records when it is given an imatrix
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"
KV_STR_MAX = 127  # llama_model_kv_override.val_str is char[128]
STAGE = "quantizing"  # the progress stage: reported tensor by tensor as llama.cpp starts each
_PROGRESS_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def ftype_names() -> list[str]:
    """Every llama_ftype name the runtime knows, e.g. 'Q4_K_M', 'F16'."""
    llama_cpp = import_llama_cpp()
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
    llama_cpp = import_llama_cpp()
    key = FTYPE_ALIASES.get(name.upper(), name.upper())
    attr = "LLAMA_FTYPE_ALL_F32" if key == "F32" else f"LLAMA_FTYPE_MOSTLY_{key}"
    if not hasattr(llama_cpp, attr):
        raise SwggufError(f"unknown quantization type {name!r}; known: {', '.join(ftype_names())}")
    return int(getattr(llama_cpp, attr))


def ggml_type_names() -> list[str]:
    llama_cpp = import_llama_cpp()
    return sorted(a[len("GGML_TYPE_"):] for a in dir(llama_cpp) if a.startswith("GGML_TYPE_") and a != "GGML_TYPE_COUNT")


def ggml_type_value(name: str) -> int:
    """'q8_0' -> GGML_TYPE_Q8_0, case-insensitive as llama-quantize's parse_ggml_type."""
    llama_cpp = import_llama_cpp()
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
            arr[i].value.val_str = value.encode()[:KV_STR_MAX]
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
    progress: Progress = no_progress,
) -> Path:
    """Quantize GGUF ``src`` to ``dst`` as llama-quantize would; ``dst`` appears atomically.

    ``imatrix`` is passed as llama-quantize passes its ``--imatrix`` file
    (``imatrix_file`` is the name recorded in ``quantize.imatrix.file``);
    ``tensor_types`` are ``--tensor-type PATTERN=TYPE`` pairs, in order.
    Progress: stage "quantizing", tensor by tensor.
    """
    llama_cpp = import_llama_cpp()
    src, dst = Path(src), Path(dst)
    check_gguf(src)
    check_outputs([("the output", dst)], [src])
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
    keep: list = []  # ctypes arrays that must outlive the native call
    tensor_types = [parse_tensor_type(f"{p}={t}") for p, t in tensor_types]
    if tensor_types:
        params.tt_overrides = _tt_overrides(llama_cpp, tensor_types, keep)
    if imatrix is not None and imatrix.values:
        imatrix.validate()
        params.imatrix = _imatrix_array(llama_cpp, imatrix, keep)
        params.kv_overrides = _kv_overrides(llama_cpp, imatrix, imatrix_file or imatrix.source, keep)
    _build_iq_grids()
    with atomic_output(dst) as tmp:
        _run_native(llama_cpp, src, tmp, params, progress)
    return dst


# The IQ types' lookup grids are built on first use, with OpenMP (ggml_quantize_init). GNU
# OpenMP does not survive a fork once the parent has used it (an in-process evaluation or
# imatrix before the quantization): the forked quantizer then waits forever for threads
# that are not there. Built in this process first, the child inherits them ready.
IQ_GRID_TYPES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")


@cache  # once per process: ggml keeps the grids
def _build_iq_grids() -> None:
    init = ctypes.CDLL(str(loaded_library("libggml-base.so"))).ggml_quantize_init
    init.argtypes, init.restype = [ctypes.c_int], None
    for name in IQ_GRID_TYPES:
        init(ggml_type_value(name))


def _run_native(llama_cpp, src: Path, tmp: Path, params, progress: Progress) -> None:
    """``llama_model_quantize`` in a child process (runtime/forked.py: so that Ctrl-C
    stops it), its log read here for per-tensor progress and for the reason of a failure."""
    errors: list[str] = []

    def read(message: object) -> None:
        level, line = message
        if level == GGML_LOG_LEVEL_ERROR and line.strip():
            errors.append(line.strip())
        match = _PROGRESS_LINE.match(line.lstrip())
        if match:
            progress(STAGE, int(match.group(1)), int(match.group(2)), match.group(3))

    def native(send) -> int:
        with log_sink(lambda level, line: send((level, line))):
            return llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)

    rc = run_forked(native, read)
    if rc is None:
        raise SwggufError(f"llama_model_quantize crashed{': ' + errors[-1] if errors else ''}", src)
    if rc != 0:
        reason = next((e for e in reversed(errors) if "failed to quantize" in e), errors[-1] if errors else "")
        reason = reason.split("failed to quantize:", 1)[-1].strip()
        raise SwggufError(f"llama_model_quantize failed: {reason or f'code {rc}'}", src)
