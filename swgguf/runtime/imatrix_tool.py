"""An importance matrix from text, computed by the runtime's own ``llama-imatrix``
(built with ``swgguf runtime build --tools``), so the statistics are llama.cpp's.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from ..errors import SwggufError
from ..formats.imatrix import Imatrix, load_imatrix
from .tools import tools_dir

log = logging.getLogger(__name__)

IMATRIX_TOOL = "llama-imatrix"


def imatrix_tool() -> Path:
    tool = tools_dir() / IMATRIX_TOOL
    if not tool.is_file():
        raise SwggufError(f"{IMATRIX_TOOL} is not installed: run `swgguf runtime build --tools`", tool)
    return tool


def compute_imatrix(model: str | Path, text: str | Path, out: str | Path, *, n_ctx: int = 512,
                    chunks: int | None = None, threads: int | None = None) -> Imatrix:
    """Run llama-imatrix on ``text`` with float model ``model``; write ``out`` (GGUF).

    The text must hold at least 2 * n_ctx tokens (llama-imatrix's own rule)."""
    model, text, out = Path(model), Path(text), Path(out)
    if not text.is_file():
        raise SwggufError("no such calibration text file", text)
    cmd = [str(imatrix_tool()), "-m", str(model), "-f", str(text), "-o", str(out), "-c", str(n_ctx),
           "-b", str(n_ctx), "--no-ppl", "-ofreq", "1000000", "--output-format", "gguf"]
    if chunks:
        cmd += ["--chunks", str(chunks)]
    if threads:
        cmd += ["-t", str(threads), "-tb", str(threads)]
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "LLAMA_ARG_NO_WARMUP": "1"})
    if proc.returncode != 0 or not out.is_file():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-3:]
        raise SwggufError(f"{IMATRIX_TOOL} failed (exit {proc.returncode}): " + " | ".join(tail), text)
    return load_imatrix(out)
