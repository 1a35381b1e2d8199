"""Float GGUF references: what a quantized file is measured against.

* :func:`make_f16_reference` dequantizes any GGUF to F16 with llama.cpp's own
  quantizer (``llama_model_quantize``, ftype F16, ``allow_requantize``): every
  quantized tensor is dequantized by ggml and rounded to F16, everything else
  is copied. For the shipped SmolLM2 Q4_1 the result equals gguf-py's
  dequantization rounded to F16 exactly (tests/test_convert_reference.py).
* :func:`convert_hf` turns a Hugging Face directory into an F16/BF16 GGUF with
  ``convert_hf_to_gguf.py`` of the pinned llama.cpp (taken from the sdist the
  runtime is built from), unchanged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import gguf

from .errors import SwggufError
from .quantize import check_gguf, quantize

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                         gguf.GGMLQuantizationType.BF16})
HF_OUTTYPES = ("f16", "bf16", "f32")
_CONVERT_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/")


def quantized_tensors(path: str | Path) -> dict[str, str]:
    """Name -> type of the tensors of a GGUF that are not F32/F16/BF16."""
    check_gguf(Path(path))
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # gguf-py raises ValueError/struct.error on bad files
        raise SwggufError(f"not a readable GGUF file ({err})", path) from None
    return {t.name: t.tensor_type.name for t in reader.tensors if t.tensor_type not in FLOAT_TYPES}


def make_f16_reference(src: str | Path, dst: str | Path, nthread: int = 0) -> Path:
    """``dst``: GGUF ``src`` with every tensor dequantized to F16 by llama.cpp (atomic)."""
    return quantize(src, dst, "F16", allow_requantize=True, nthread=nthread)


def convert_script_dir() -> Path:
    """The pinned llama.cpp's conversion scripts, extracted once from the runtime's sdist."""
    from .runtime.build import cache_root, fetch_sdist
    from .runtime.pins import LLAMA_CPP_PYTHON_VERSION, SDIST_NAME

    dest = cache_root() / "convert" / LLAMA_CPP_PYTHON_VERSION
    script = dest / "convert_hf_to_gguf.py"
    if script.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    sdist = fetch_sdist(lambda msg: log.info(msg), dest / "fetch.log")
    prefix = f"{SDIST_NAME.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else None
            if rel and any(rel == p or rel.startswith(p) for p in _CONVERT_MEMBERS):
                m.name = rel
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")
    for item in tmp.iterdir():
        os.replace(item, dest / item.name)
    tmp.rmdir()
    if not script.is_file():
        raise SwggufError("the sdist holds no convert_hf_to_gguf.py", sdist)
    return dest


def convert_hf(hf_dir: str | Path, dst: str | Path, outtype: str = "f16") -> Path:
    """Convert a Hugging Face model directory to a float GGUF with llama.cpp's own script."""
    hf_dir, dst = Path(hf_dir), Path(dst)
    if not (hf_dir / "config.json").is_file():
        raise SwggufError("not a Hugging Face model directory (no config.json)", hf_dir)
    if outtype not in HF_OUTTYPES:
        raise SwggufError(f"unknown output type {outtype!r} for the HF conversion; known: {', '.join(HF_OUTTYPES)}")
    script = convert_script_dir() / "convert_hf_to_gguf.py"
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [sys.executable, str(script), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-3:]
        raise SwggufError("convert_hf_to_gguf.py failed: " + " | ".join(tail), hf_dir)
    os.replace(tmp, dst)
    return dst
