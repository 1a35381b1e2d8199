"""The one place that pins the llama.cpp the patches apply to."""

from __future__ import annotations

import os
from pathlib import Path

# llama-cpp-python's PyPI sdist vendors llama.cpp; patches/llama.cpp/*.patch
# apply to that vendored tree (vendor/llama.cpp), with `patch -p1`.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"


def patches_dir() -> Path:
    """patches/llama.cpp of the swgguf checkout (or $SWGGUF_PATCHES)."""
    env = os.environ.get("SWGGUF_PATCHES")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "patches" / "llama.cpp"
    return path


def patch_files() -> list[Path]:
    return sorted(patches_dir().glob("*.patch"))
