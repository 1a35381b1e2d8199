"""Run swgguf.runtime.probe in a child process, on the installed (patched) library
or on another one (``lib_dir``: e.g. the unpatched build_stock_library())."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_probe(model: str | Path, out: str | Path, tokens: str, lib_dir: str | Path | None = None,
              ) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # lib_dir None: the library this process's bindings load too
    if lib_dir is not None:  # (LLAMA_CPP_LIB_PATH where it is set, as on the GPU machine)
        env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    return subprocess.run([sys.executable, "-m", "swgguf.runtime.probe", str(model), "--tokens", tokens,
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
