"""The names shared by the C++ patch and the Python package agree.

The sidecar keys, tensor suffixes, format version and column cap are written
once in C++ (src/llama-swgguf.{h,cpp} of the patch series) and once in Python
(swgguf.formats.sidecar); the fused-product counters' order once in ggml (ggml-cpu.h,
ggml-cuda.h) and once in swgguf.runtime.fusion. This test reads the patches
as text, so it fails the moment one side changes alone.
"""

from __future__ import annotations

import re

from swgguf.formats import sidecar, sidecar_hash
from swgguf.runtime import fusion
from swgguf.runtime.pins import patch_files


def patch_text() -> str:
    files = patch_files()
    assert files, "no patches/llama.cpp/*.patch"
    return "\n".join(p.read_text() for p in files)


def c_string(text: str, name: str) -> str:
    m = re.search(rf"{name}\s*=\s*\"([^\"]+)\"", text)
    assert m, f"{name} not found in the patches"
    return m.group(1)


def c_define(text: str, name: str) -> int:
    m = re.search(rf"#define\s+{name}\s+(\d+)", text)
    assert m, f"#define {name} not found in the patches"
    return int(m.group(1))


def c_enum(text: str, prefix: str, last: str) -> list[str]:
    """The enumerators named ``prefix``* before ``prefix + last``, as lower-case suffixes."""
    block = re.search(rf"\b{prefix}\w+,.*?\b{prefix}{last}\b", text, re.S)
    assert block, f"enum {prefix}* not found in the patches"
    return [n.lower() for n in re.findall(rf"\b{prefix}(\w+),", block.group(0)) if n != last]


def test_sidecar_keys_and_suffixes_agree():
    text = patch_text()
    assert c_string(text, "SWGGUF_KEY_VERSION") == sidecar.KEY_VERSION
    assert c_string(text, "SWGGUF_KEY_TENSORS") == sidecar.KEY_TENSORS
    assert c_string(text, "SWGGUF_KEY_WEIGHT_TYPES") == sidecar.KEY_WEIGHT_TYPES
    assert c_string(text, "SWGGUF_KEY_WEIGHT_HASHES") == sidecar.KEY_WEIGHT_HASHES
    suffixes = re.search(r"SWGGUF_SUFFIX\[SWGGUF_N_PARTS\]\s*=\s*\{([^}]*)\}", text)
    assert suffixes, "SWGGUF_SUFFIX not found in the patches"
    assert tuple(re.findall(r"\"([^\"]+)\"", suffixes.group(1))) == sidecar.SUFFIXES


def c_u64(text: str, name: str) -> int:
    m = re.search(rf"{name}\s*=\s*(0x[0-9a-fA-F]+)ULL", text)
    assert m, f"{name} not found in the patches"
    return int(m.group(1), 16)


def test_lookup_weights_agree():
    """The weights that may not carry a sidecar (read by get_rows)."""
    block = re.search(r"SWGGUF_LOOKUP_WEIGHTS\[\]\s*=\s*\{([^}]*)\}", patch_text())
    assert block, "SWGGUF_LOOKUP_WEIGHTS not found in the patches"
    assert tuple(re.findall(r"\"([^\"]+)\"", block.group(1))) == sidecar.LOOKUP_WEIGHTS


def test_hash_constants_agree():
    text = patch_text()
    assert c_u64(text, "SWGGUF_HASH_M1") == sidecar_hash.HASH_M1
    assert c_u64(text, "SWGGUF_HASH_M2") == sidecar_hash.HASH_M2
    assert c_u64(text, "SWGGUF_HASH_STEP") == sidecar_hash.HASH_STEP


def test_version_and_column_cap_agree():
    text = patch_text()
    assert c_define(text, "LLAMA_SWGGUF_SIDECAR_VERSION") == sidecar.SIDECAR_VERSION
    assert c_define(text, "LLAMA_SWGGUF_SIDECAR_VERSION_UNHASHED") == sidecar.UNHASHED_VERSION
    assert c_define(text, "LLAMA_SWGGUF_MAX_COLS") == sidecar.MAX_COLS


def test_fusion_counter_order_agrees():
    text = patch_text()
    assert tuple(c_enum(text, "GGML_CPU_SWG_", "N_PATHS")) == fusion.CPU_PATHS
    assert tuple(c_enum(text, "GGML_CUDA_SWG_", "N_KINDS")) == fusion.CUDA_KINDS
