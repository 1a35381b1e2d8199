"""llama.cpp's tools, built in the wheel's CMake tree: where they go and how they are installed.

The executables go to the environment's bin/ (``tools_dir()``); their shared libraries
(this llama.cpp builds each tool as a lib<tool>-impl.so, with libllama-common and
libmtmd, and links libllama/libggml*) to ``tools_lib_dir()``, which the tools find
through their RPATH (``TOOLS_RPATH``, set at build time). The libraries that the wheel
also ships are taken from the wheel, so the tools and the Python bindings load the
same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..errors import SwggufError

TOOLS = ("llama-cli", "llama-server", "llama-perplexity", "llama-quantize", "llama-imatrix", "llama-bench",
         "ggml-rpc-server")
# the tools' RPATH: executables in <env>/bin, their libraries in <env>/lib/swgguf-tools
TOOLS_RPATH = "$ORIGIN/../lib/swgguf-tools;$ORIGIN"


def tools_dir() -> Path:
    """Where --tools puts the llama.cpp binaries: the bin/ of the current environment."""
    return Path(sys.prefix) / "bin"


def tools_lib_dir() -> Path:
    """Where --tools puts the tools' shared libraries (found through TOOLS_RPATH)."""
    return Path(sys.prefix) / "lib" / "swgguf-tools"


def wheel_libraries(wheel: Path) -> dict[str, bytes]:
    """The shared libraries in the wheel's llama_cpp/lib, by file name."""
    with zipfile.ZipFile(wheel) as zf:
        return {Path(name).name: zf.read(name) for name in zf.namelist()
                if name.startswith("llama_cpp/lib/") and ".so" in name}


def install_tools(build_dir: Path, wheel: Path, log_path: Path) -> list[Path]:
    """Copy the tools built next to the wheel into tools_dir(), their libraries into
    tools_lib_dir() (those the wheel has, from the wheel), and check that each tool starts."""
    libs = sorted(p for p in build_dir.rglob("lib*.so*") if "CMakeFiles" not in p.parts)
    if not libs:
        raise SwggufError("the build produced no shared libraries for the tools", log_path)
    staged = tools_lib_dir().with_name(tools_lib_dir().name + ".new")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    in_wheel = wheel_libraries(wheel)
    for lib in libs:  # the .so -> .so.0 -> .so.0.x.y links stay links
        if lib.name in in_wheel and not lib.is_symlink():
            # the wheel's copy: the same compile, stripped when installed into the wheel
            (staged / lib.name).write_bytes(in_wheel[lib.name])
            (staged / lib.name).chmod(0o755)
        else:
            shutil.copy2(lib, staged / lib.name, follow_symlinks=False)
    shutil.rmtree(tools_lib_dir(), ignore_errors=True)
    os.replace(staged, tools_lib_dir())
    tools_dir().mkdir(parents=True, exist_ok=True)
    out = []
    for tool in TOOLS:
        src = build_dir / "bin" / tool
        if not src.is_file():
            raise SwggufError(f"the build produced no {tool}", log_path)
        tmp = tools_dir() / f".{tool}.tmp"
        shutil.copy2(src, tmp)
        os.replace(tmp, tools_dir() / tool)
        check_tool_starts(tools_dir() / tool, log_path)
        out.append(tools_dir() / tool)
    return out


def check_tool_starts(tool: Path, log_path: Path) -> None:
    """The loader finds the tool's libraries (not every tool knows --version; none gets that far without them)."""
    proc = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=120)
    if proc.returncode == 127 or "error while loading shared libraries" in proc.stderr:
        raise SwggufError(f"{tool.name} does not start: {proc.stderr.strip()[-300:]}", log_path)


def tools_marker_path() -> Path:
    return tools_dir() / ".swgguf-tools.json"


def tools_up_to_date(key: str) -> bool:
    try:
        marker = json.loads(tools_marker_path().read_text())
    except (OSError, ValueError):
        return False
    return marker.get("key") == key and all((tools_dir() / t).is_file() for t in TOOLS)
