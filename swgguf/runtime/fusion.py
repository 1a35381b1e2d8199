"""What the patched ggml backends say about fused sidecar corrections.

The patch fuses each protected product with its correction (ggml-cpu:
``ggml_cpu_try_fuse_ops``, ggml-cuda: ``ggml_cuda_try_fuse``) and counts, per
process, how many products ran fused and on which kernel path. Tests and
benchmarks read the counts to know that the fused path ran, rather than
inferring it from timings or log lines. ``GGML_CPU_DISABLE_FUSION=1`` /
``GGML_CUDA_DISABLE_FUSION=1`` switch fusion off; the graph then runs the
correction as three standard nodes.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

from ..errors import SwggufError

# ggml-cpu.h enum ggml_cpu_swg_path, ggml-cuda.h enum ggml_cuda_swg_kind (patches/llama.cpp)
CPU_PATHS = ("generic", "sgemm", "repack", "tiled")
CUDA_KINDS = ("mmvq", "mmvf", "glu", "batched", "batched_glu")


def library_dir() -> Path:
    """Where llama-cpp-python loads libllama and the ggml libraries from."""
    env = os.environ.get("LLAMA_CPP_LIB_PATH")
    if env:
        return Path(env)
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def loaded_library(lib_name: str) -> Path:
    """The copy of ``lib_name`` this process has mapped. A wheel cannot hold symbolic
    links, so llama-cpp-python's lib/ holds libggml-cpu.so, .so.0 and .so.0.x.y as three
    files; libllama loads one of them (its SONAME), and only that one counts."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = Path(line.split()[-1])
                if path.name.startswith(lib_name) and path.is_file():
                    return path
    except OSError:
        pass
    return library_dir() / lib_name


@lru_cache(maxsize=None)
def _counter(lib_name: str, symbol: str):
    path = loaded_library(lib_name)
    if not path.is_file():
        return None
    try:
        fn = getattr(ctypes.CDLL(str(path)), symbol)
    except (OSError, AttributeError):
        raise SwggufError(f"{lib_name} has no {symbol}: the runtime predates fusion, run `swgguf runtime build`",
                          path) from None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def fused_products() -> dict[str, int]:
    """Products run fused so far in this process, e.g. {'cpu.repack': 30, 'cuda.mmvq': 0, ...}.

    CUDA keys appear only when the runtime has a CUDA backend. Load a model
    (which loads the libraries) before the first call: the counters are read from
    the copies libllama loaded.
    """
    out: dict[str, int] = {}
    for prefix, lib, symbol, names in (("cpu", "libggml-cpu.so", "ggml_cpu_swg_fused_products", CPU_PATHS),
                                       ("cuda", "libggml-cuda.so", "ggml_backend_cuda_swg_fused_products", CUDA_KINDS)):
        fn = _counter(lib, symbol)
        if fn is None:
            if prefix == "cpu":
                raise SwggufError("no libggml-cpu.so next to libllama", library_dir())
            continue
        out.update({f"{prefix}.{name}": fn(i) for i, name in enumerate(names)})
    return out
