"""What runtime is installed: patched or not, which patches, which backends."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import SwggufError
from .build import installed_marker, patch_hash
from .tools import TOOLS, tools_dir
from .llm import import_llama_cpp, sidecar_version


@dataclass
class RuntimeInfo:
    installed: bool
    patched: bool = False
    llama_cpp_python: str | None = None
    sidecar_version: int | None = None
    patch_sha256: str | None = None
    patch_up_to_date: bool = False  # the installed build's patches are the checkout's
    variant: str | None = None
    backends: list[str] = field(default_factory=list)
    tools_dir: str | None = None
    tools: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _backends(llama_cpp) -> list[str]:
    """Backends compiled in, from llama.cpp's system info ("CPU : ... | CUDA : ...")."""
    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    names = ["cpu"]
    for name in ("CUDA", "Metal", "Vulkan", "HIP", "SYCL"):
        if f"{name} :" in info or f"{name}:" in info:
            names.append(name.lower())
    if llama_cpp.llama_supports_gpu_offload() and len(names) == 1:
        names.append("gpu")
    return names


def runtime_info() -> RuntimeInfo:
    try:
        llama_cpp = import_llama_cpp()
    except SwggufError:
        return RuntimeInfo(installed=False)
    info = RuntimeInfo(installed=True, llama_cpp_python=llama_cpp.__version__)
    info.sidecar_version = sidecar_version()
    info.patched = info.sidecar_version is not None
    marker = installed_marker() or {}
    info.patch_sha256 = marker.get("patch_sha256")
    info.variant = marker.get("variant")
    try:
        info.patch_up_to_date = info.patch_sha256 == patch_hash()
    except Exception:  # no checkout patches: cannot tell
        info.patch_up_to_date = False
    info.backends = _backends(llama_cpp)
    info.tools_dir = str(tools_dir())
    info.tools = [t for t in TOOLS if (tools_dir() / t).is_file()]
    return info
