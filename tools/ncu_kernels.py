"""GPU time per kernel of a llama-bench run under Nsight Compute, for the files of
bench/runtime_overhead.py: where the sidecar's extra time goes on the GPU.

  python tools/ncu_kernels.py --llama-bench BUILD/bin/llama-bench --out OUT.json [--models synth-1.1b] [--tg-tokens 8]
      [--tests tg,pp512] [--runs plain,sidecar2,sidecar2-unfused]

For the plain file and the K = 2 file (fusion on and off), `ncu` times every
kernel of `llama-bench -p 0 -n N` (generation only, CUDA graphs off so that each
launch is seen) and of `-p 512 -n 0`, with its registers per thread, achieved
occupancy and DRAM bytes read; the kernels are summed by name. ncu serialises
launches, so the totals are pure kernel time, without launch gaps.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import runtime_overhead  # noqa: E402
from swgguf.formats.files import write_text  # noqa: E402

RUNS = {"plain": ("plain", True), "sidecar2": ("sidecar2", True), "sidecar2-unfused": ("sidecar2", False)}
# per kernel: its GPU time, and what says why a kernel got slower: registers per thread
# (a fused epilogue can cost occupancy), achieved occupancy, bytes read from DRAM
METRICS = {"gpu__time_duration.sum": "us", "launch__registers_per_thread": "regs",
           "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy_pct", "dram__bytes_read.sum": "dram_mb"}


def tests(tg_tokens: int) -> dict[str, list[str]]:
    return {f"tg{tg_tokens}": ["-p", "0", "-n", str(tg_tokens)], "pp512": ["-p", "512", "-n", "0"]}


def short_name(kernel: str) -> str:
    """`void mul_mat_vec_q<(ggml_type)12, 1, ...>(...)` -> `mul_mat_vec_q<12, 1, ...>` (template args kept)."""
    name = re.sub(r"^void\s+", "", kernel)
    name = re.sub(r"\(ggml_type\)", "", name)
    return name.split("(")[0] if "<" not in name else name[: name.rfind(">") + 1]


def kernel_times(llama_bench: str, model: Path, test: list[str], fused: bool, work: Path) -> dict[str, dict]:
    log = work / "ncu.csv"
    env = {**os.environ, "GGML_CUDA_DISABLE_FUSION": "0" if fused else "1", "GGML_CUDA_DISABLE_GRAPHS": "1"}
    proc = subprocess.run(["ncu", "--csv", "--log-file", str(log), "--clock-control", "none",
                           "--metrics", ",".join(METRICS),
                           llama_bench, "-m", str(model), *test, "-r", "1", "--no-warmup", "-ngl", "99"],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ncu failed on {model.name}:\n{proc.stderr[-2000:]}")
    text = log.read_text()
    rows = csv.DictReader(io.StringIO(text[text.index('"ID"'):]))
    per_launch: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = METRICS.get(row["Metric Name"])
        if key is None:
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row["Metric Unit"]
        if key == "us":
            value *= {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
                          "second": 1e6, "s": 1e6}[unit]
        elif key == "dram_mb":
            value *= {"byte": 1e-6, "B": 1e-6, "Kbyte": 1e-3, "KB": 1e-3, "Mbyte": 1.0, "MB": 1.0,
                          "Gbyte": 1e3, "GB": 1e3}.get(unit, float("nan"))
        per_launch.setdefault((row["ID"], short_name(row["Kernel Name"])), {})[key] = value
    out: dict[str, dict] = defaultdict(lambda: {"launches": 0, "us": 0.0, "dram_mb": 0.0, "regs": 0, "occ": []})
    for (_, name), m in per_launch.items():
        k = out[name]
        k["launches"] += 1
        k["us"] += m.get("us", 0.0)
        k["dram_mb"] += m.get("dram_mb", 0.0)
        k["regs"] = max(k["regs"], int(m.get("regs", 0)))
        if "occupancy_pct" in m:
            k["occ"].append(m["occupancy_pct"])
    return {n: {"launches": k["launches"], "us": k["us"], "dram_mb": k["dram_mb"], "regs": k["regs"],
                "occupancy_pct": sum(k["occ"]) / len(k["occ"]) if k["occ"] else None} for n, k in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--models", default="synth-1.1b", help="comma-separated, of " + ", ".join(runtime_overhead.GPU_MODELS))
    ap.add_argument("--tg-tokens", default="8", help="generated tokens per model (comma-separated, one per model)")
    ap.add_argument("--tests", default="tg,pp512", help="comma-separated, of tg, pp512 (a test runs when its name "
                                                         "starts with one of them: tg8)")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated, of " + ", ".join(RUNS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    wanted_tests, runs = args.tests.split(","), [RUNS[r] for r in args.runs.split(",")]
    models = args.models.split(",")
    tg_tokens = [int(n) for n in args.tg_tokens.split(",")]
    tg_tokens += tg_tokens[-1:] * (len(models) - len(tg_tokens))
    report = {"command": "python tools/ncu_kernels.py --llama-bench <build>/bin/llama-bench "
                         f"--models {args.models} --tg-tokens {args.tg_tokens} --tests {args.tests} "
                         f"--runs {args.runs} --out {args.out.name}",
              "machine": runtime_overhead.machine_info("cuda"),
              "note": "ncu --clock-control none --metrics " + ",".join(METRICS) + "; GGML_CUDA_DISABLE_GRAPHS=1; "
                      "kernels summed by name (template arguments kept); launches serialised by ncu, so totals "
                      "are kernel time without launch gaps",
              "models": {}}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for model, n_tg in zip(models, tg_tokens):
            plain = runtime_overhead.layered_q4km(runtime_overhead.GPU_MODELS[model], work, model)
            files = runtime_overhead.with_sidecars(plain, model, None, cols=(2,))
            results = []
            report["models"][model] = {"config": runtime_overhead.GPU_MODELS[model].__dict__, "results": results}
            for test_name, test in tests(n_tg).items():
                if not test_name.startswith(tuple(wanted_tests)):
                    continue
                for name, fused in runs:
                    kernels = kernel_times(args.llama_bench, files[name], test, fused, work)
                    total = sum(k["us"] for k in kernels.values())
                    results.append({"test": test_name, "file": name, "fusion": "on" if fused else "off",
                                    "total_us": round(total, 1),
                                    "kernels": {n: {"launches": k["launches"], "us": round(k["us"], 1),
                                                    "us_per_launch": round(k["us"] / k["launches"], 2),
                                                    "regs": k["regs"],
                                                    "occupancy_pct": None if k["occupancy_pct"] is None
                                                    else round(k["occupancy_pct"], 1),
                                                    "dram_mb": round(k["dram_mb"], 2)}
                                                for n, k in sorted(kernels.items(), key=lambda kv: -kv[1]["us"])}})
                    print(f"{model} {test_name} {name} fusion={'on' if fused else 'off'}: "
                          f"{total / 1e3:.3f} ms of kernels", flush=True)
                    write_text(json.dumps(report, indent=1) + "\n", args.out)  # what is done survives a time limit
            for f in files.values():
                f.unlink()


if __name__ == "__main__":
    main()
