"""``llama-perplexity --hellaswag`` (the runtime's own tool, built with ``swgguf runtime
build --tools``): the reference that ``swgguf ppl --hellaswag`` is checked against.

The tool prints, after each task, the accuracy so far (``i<TAB>acc%<TAB>[lo%, hi%]``);
the difference between two consecutive lines says whether that task was right. It
takes the tasks in a random order of its own (:func:`swgguf.evaluate.hellaswag.llama_perplexity_order`
replays it), so the flags come back in the tool's order.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from ..errors import SwggufError
from .build import tools_dir

log = logging.getLogger(__name__)

PERPLEXITY_TOOL = "llama-perplexity"
_RUNNING = re.compile(r"^(\d+)\t([\d.]+)%\t\[", re.M)  # hellaswag_score's per-task line


def perplexity_tool() -> Path:
    tool = tools_dir() / PERPLEXITY_TOOL
    if not tool.is_file():
        raise SwggufError(f"{PERPLEXITY_TOOL} is not installed: run `swgguf runtime build --tools`", tool)
    return tool


def llama_perplexity_hellaswag(model: str | Path, task_file: str | Path, n_tasks: int, *,
                               threads: int | None = None, flash_attn: str | None = None,
                               ubatch: int | None = None) -> list[bool]:
    """Whether llama-perplexity got each task right, in the order it took them, for
    ``n_tasks`` tasks of ``task_file`` (a plain file in its layout, 6 lines per task).
    ``flash_attn``: its ``-fa`` (on, off, auto; None: its default, auto, on for the CPU);
    ``ubatch``: its ``-ub`` (None: its default, 512). The tool decodes many tasks' four
    sequences in one batch, and llama.cpp miscomputes attention in a ubatch of several
    sequences above 32 tokens (ggml-org/llama.cpp issue 24962; docs/hellaswag.md):
    ``ubatch=32`` gives the scores of every sequence evaluated alone."""
    model, task_file = Path(model), Path(task_file)
    if not task_file.is_file():
        raise SwggufError("no such HellaSwag task file", task_file)
    cmd = [str(perplexity_tool()), "-m", str(model), "-f", str(task_file), "--hellaswag",
           "--hellaswag-tasks", str(n_tasks)]
    if threads:
        cmd += ["-t", str(threads), "-tb", str(threads)]
    if flash_attn is not None:
        cmd += ["-fa", flash_attn]
    if ubatch is not None:
        cmd += ["-ub", str(ubatch)]
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rows = [(int(i), float(pct)) for i, pct in _RUNNING.findall(proc.stdout + "\n" + proc.stderr)]
    if proc.returncode != 0 or len(rows) != n_tasks:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-3:]
        raise SwggufError(f"{PERPLEXITY_TOOL} --hellaswag failed (exit {proc.returncode}, {len(rows)} of "
                          f"{n_tasks} tasks): " + " | ".join(tail), model)
    # the running accuracy has 8 decimals: the count of right answers is exact after rounding
    counts = [0] + [round(pct / 100 * i) for i, pct in rows]
    return [b > a for a, b in zip(counts, counts[1:])]
