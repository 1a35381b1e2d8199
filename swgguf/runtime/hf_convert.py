"""A Hugging Face directory to a float GGUF with llama.cpp's own
``convert_hf_to_gguf.py``, of the pinned llama.cpp (taken, unchanged, from the
sdist the runtime is built from), so a converted model is exactly what
llama.cpp's users get.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from ..errors import SwggufError
from ..formats.files import atomic_output
from .build import cache_root, fetch_sdist
from .pins import LLAMA_CPP_PYTHON_VERSION, SDIST_NAME

log = logging.getLogger(__name__)

HF_OUTTYPES = ("f16", "bf16", "f32")
SCRIPT = "convert_hf_to_gguf.py"
_CONVERT_MEMBERS = (SCRIPT, "conversion/", "gguf-py/", "models/")  # what the script imports


def convert_script_dir() -> Path:
    """The pinned llama.cpp's conversion scripts, extracted once from the runtime's sdist."""
    dest = cache_root() / "convert" / LLAMA_CPP_PYTHON_VERSION
    script = dest / SCRIPT
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
        raise SwggufError(f"the sdist holds no {SCRIPT}", sdist)
    return dest


def convert_hf(hf_dir: str | Path, dst: str | Path, outtype: str = "f16") -> Path:
    """Convert a Hugging Face model directory to a float GGUF (written atomically)."""
    hf_dir, dst = Path(hf_dir), Path(dst)
    if not (hf_dir / "config.json").is_file():
        raise SwggufError("not a Hugging Face model directory (no config.json)", hf_dir)
    if outtype not in HF_OUTTYPES:
        raise SwggufError(f"unknown output type {outtype!r} for the HF conversion; known: {', '.join(HF_OUTTYPES)}")
    script = convert_script_dir() / SCRIPT
    with atomic_output(dst) as tmp:
        cmd = [sys.executable, str(script), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or tmp.stat().st_size == 0:
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-3:]
            raise SwggufError(f"{SCRIPT} failed: " + " | ".join(tail), hf_dir)
    return dst
