"""llama.cpp's RPC backend for swgguf's contexts: ggml-rpc-server devices on other hosts.

``llama-server --rpc HOST:PORT,...`` registers one backend device per device of each
``ggml-rpc-server`` (common/arg.cpp ``add_rpc_devices``); a model loaded afterwards
with layers offloaded (``-ngl``) splits them over those devices, in proportion to
their free memory. llama-cpp-python has no such argument, so :func:`connect` does what
``add_rpc_devices`` does, through the RPC library's C API
(``ggml_backend_rpc_add_server``, then ``ggml_backend_register``).

The registration lasts as long as the process: every model loaded later with
``LoadOptions(n_gpu_layers > 0)`` uses the remote devices, and fails once their
servers are gone. Connect in a process of its own (``python -m swgguf.runtime.probe
--rpc``) unless that is what you want.

The patched loader puts each sidecar on the device of its weight (docs/runtime.md),
so a protected file splits like a plain one; the sidecar's tensors are sent to their
device once, at load.
"""

from __future__ import annotations

import ctypes
import socket
from typing import Sequence

from ..errors import SwggufError
from .fusion import library_dir, loaded_library
from .llm import import_llama_cpp

RPC_LIBRARY = "libggml-rpc.so"  # built with -DGGML_RPC=ON
GGML_LIBRARY = "libggml.so"  # the backend registry
BASE_LIBRARY = "libggml-base.so"  # devices and their names
CONNECT_TIMEOUT_S = 10.0

_connected: dict[str, list[str]] = {}  # endpoint -> its device names, registered once per process


def _function(lib_name: str, symbol: str, restype, argtypes):
    path = loaded_library(lib_name)
    if not path.is_file():
        raise SwggufError(f"the runtime has no {lib_name}: rebuild it with the RPC backend "
                          "(`swgguf runtime build`)", library_dir())
    try:
        fn = getattr(ctypes.CDLL(str(path)), symbol)
    except AttributeError:
        raise SwggufError(f"{lib_name} has no {symbol}", path) from None
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def parse_endpoints(text: str) -> list[str]:
    """``"host:port,host:port"`` (llama.cpp's ``--rpc`` syntax) -> endpoints."""
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    for e in endpoints:
        host, _, port = e.rpartition(":")
        if not host or not port.isdigit():
            raise SwggufError(f"RPC endpoint {e!r} is not HOST:PORT")
    if not endpoints:
        raise SwggufError("no RPC endpoint given")
    return endpoints


def connect(endpoints: Sequence[str]) -> list[str]:
    """Register the devices of the ggml-rpc-servers at ``endpoints`` (``"host:port"``)
    for this process, once per endpoint; returns their device names (``RPC0``, ``RPC1``,
    ... in this process's order; llama.cpp names their buffers ``RPC<i>[host:port]``, i
    the device's index on its server). An endpoint where nothing
    listens is a SwggufError; llama.cpp aborts the process on one that answers wrongly."""
    import_llama_cpp()  # maps libggml and its backends first: the copies we call must be those
    add_server = _function(RPC_LIBRARY, "ggml_backend_rpc_add_server", ctypes.c_void_p, [ctypes.c_char_p])
    register = _function(GGML_LIBRARY, "ggml_backend_register", None, [ctypes.c_void_p])
    dev_count = _function(BASE_LIBRARY, "ggml_backend_reg_dev_count", ctypes.c_size_t, [ctypes.c_void_p])
    dev_get = _function(BASE_LIBRARY, "ggml_backend_reg_dev_get", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t])
    dev_name = _function(BASE_LIBRARY, "ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p])
    for endpoint in endpoints:
        if endpoint in _connected:
            continue
        _check_listening(endpoint)
        reg = add_server(endpoint.encode())
        if not reg:
            raise SwggufError("the ggml-rpc-server there has no device", endpoint)
        register(reg)
        _connected[endpoint] = [dev_name(dev_get(reg, i)).decode() for i in range(dev_count(reg))]
    return [name for e in endpoints for name in _connected[e]]


def _check_listening(endpoint: str) -> None:
    """llama.cpp aborts the process when it cannot connect: find out first."""
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise SwggufError(f"no ggml-rpc-server answers ({err.strerror or err})", endpoint) from None
