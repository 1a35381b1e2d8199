"""What the sidecar correction costs the CPU in instructions, which, unlike the
wall clock of a shared 2-core machine (±10-15% between runs), repeat exactly.

  python bench/runtime_instructions.py

SmolLM2-135M-Instruct Q4_K_M (the files of bench/runtime_overhead.py: K = 1, 2, 4
columns on every weight tensor but token_embd), one thread, llama-bench under
`valgrind --tool=callgrind`, counting only inside ggml_graph_compute (model
loading excluded): generation of 8 tokens and a 64-token prompt, fusion on and
off (GGML_CPU_DISABLE_FUSION=1). One thread: the count is then deterministic,
and it leaves out the barriers that fusion also saves. Writes
bench/results/runtime_instructions_cpu.json.
"""

from __future__ import annotations

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

TESTS = {"tg8": ["-p", "0", "-n", "8"], "pp64": ["-p", "64", "-n", "0"]}


def instructions(llama_bench: Path, model: Path, test: list[str], fused: bool, work: Path) -> int:
    out = work / "callgrind.out"
    env = {**os.environ, "GGML_CPU_DISABLE_FUSION": "0" if fused else "1"}
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           "--toggle-collect=ggml_graph_compute", str(llama_bench), "-m", str(model), *test,
                           "-r", "1", "--no-warmup", "-t", "1", "-o", "json"],
                          capture_output=True, text=True, env=env, check=False)
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"callgrind failed on {model.name}:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    from swgguf.runtime.build import tools_dir

    llama_bench = tools_dir() / "llama-bench"
    t0 = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files, info = runtime_overhead.cpu_models(work)["smollm2-135m"]
        for name, path in files.items():
            for fused in ((True, False) if name != "plain" else (True,)):
                row = {"file": name, "fusion": "on" if fused else "off"}
                for test, args in TESTS.items():
                    row[test] = instructions(llama_bench, path, args, fused, work)
                results.append(row)
                print(row, flush=True)
    plain = next(r for r in results if r["file"] == "plain")
    for r in results:
        r["overhead_pct"] = {t: round(100.0 * (r[t] / plain[t] - 1), 2) for t in TESTS}
    report = {
        "command": "python bench/runtime_instructions.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": runtime_overhead.machine_info("cpu"),
        "model": info,
        "tests": {t: " ".join(a) for t, a in TESTS.items()},
        "note": "instructions inside ggml_graph_compute, one thread, llama-bench under callgrind; "
                "overhead = instructions(file) / instructions(plain) - 1",
        "results": results,
        "seconds": round(time.time() - t0, 1),
    }
    out = ROOT / "bench" / "results" / "runtime_instructions_cpu.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
