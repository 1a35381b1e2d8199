"""llama.cpp's own quantizer (``llama_model_quantize``) through llama-cpp-python.

All of llama.cpp's mixtures and fallbacks apply (e.g. Q4_K_M's Q6_K for half
of ffn_down and attn_v, Q5_0 for rows not divisible by 256), so a file made
here is the file `llama-quantize` makes from the same input and options.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import SwggufError
from .runtime.llm import _import_llama_cpp


def ftype_names() -> list[str]:
    """Every llama_ftype name the runtime knows, e.g. 'Q4_K_M', 'F16'."""
    llama_cpp = _import_llama_cpp()
    names = []
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            names.append(attr[len("LLAMA_FTYPE_MOSTLY_"):])
    return sorted(names + ["F32"])


def ftype_value(name: str) -> int:
    llama_cpp = _import_llama_cpp()
    key = name.upper()
    attr = "LLAMA_FTYPE_ALL_F32" if key == "F32" else f"LLAMA_FTYPE_MOSTLY_{key}"
    if not hasattr(llama_cpp, attr):
        raise SwggufError(f"unknown quantization type {name!r}; known: {', '.join(ftype_names())}")
    return int(getattr(llama_cpp, attr))


def quantize(
    src: str | Path,
    dst: str | Path,
    ftype: str,
    *,
    pure: bool = False,
    allow_requantize: bool = False,
    nthread: int = 0,
) -> Path:
    """Quantize GGUF ``src`` to ``dst`` as llama-quantize would; ``dst`` appears atomically."""
    llama_cpp = _import_llama_cpp()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SwggufError("no such file", src)
    if dst.exists() and dst.resolve() == src.resolve():
        raise SwggufError("output would overwrite the input", dst)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_value(ftype)
    params.pure = pure
    params.allow_requantize = allow_requantize
    params.nthread = nthread
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), params)
        if rc != 0:
            raise SwggufError(f"llama_model_quantize failed (code {rc})", src)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
