"""GPU time per kernel of a llama-bench run under Nsight Compute, for the files of
bench/runtime_overhead.py: where the sidecar's extra time goes on the GPU.

  python tools/ncu_kernels.py --llama-bench BUILD/bin/llama-bench --out OUT.json [--model synth-1.1b]

For the plain file and the K = 2 file (fusion on and off), `ncu --metrics
gpu__time_duration.sum` times every kernel of `llama-bench -p 0 -n 8` (generation
only, CUDA graphs off so that each launch is seen) and of `-p 512 -n 0`; the
kernels are summed by name. ncu serialises launches, so the totals are pure
kernel time, without launch gaps.
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

TESTS = {"tg8": ["-p", "0", "-n", "8"], "pp512": ["-p", "512", "-n", "0"]}
RUNS = (("plain", True), ("sidecar2", True), ("sidecar2", False))


def short_name(kernel: str) -> str:
    """`void mul_mat_vec_q<(ggml_type)12, 1, ...>(...)` -> `mul_mat_vec_q<12, 1, ...>` (template args kept)."""
    name = re.sub(r"^void\s+", "", kernel)
    name = re.sub(r"\(ggml_type\)", "", name)
    return name.split("(")[0] if "<" not in name else name[: name.rfind(">") + 1]


def kernel_times(llama_bench: str, model: Path, test: list[str], fused: bool, work: Path) -> dict[str, dict]:
    log = work / "ncu.csv"
    env = {**os.environ, "GGML_CUDA_DISABLE_FUSION": "0" if fused else "1", "GGML_CUDA_DISABLE_GRAPHS": "1"}
    proc = subprocess.run(["ncu", "--csv", "--log-file", str(log), "--metrics", "gpu__time_duration.sum",
                           llama_bench, "-m", str(model), *test, "-r", "1", "--no-warmup", "-ngl", "99"],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ncu failed on {model.name}:\n{proc.stderr[-2000:]}")
    text = log.read_text()
    rows = csv.DictReader(io.StringIO(text[text.index('"ID"'):]))
    out: dict[str, dict] = defaultdict(lambda: {"launches": 0, "us": 0.0})
    for row in rows:
        if row["Metric Name"] != "gpu__time_duration.sum":
            continue
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}[row["Metric Unit"]]
        k = out[short_name(row["Kernel Name"])]
        k["launches"] += 1
        k["us"] += float(row["Metric Value"].replace(",", "")) * scale
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", default="synth-1.1b", choices=sorted(runtime_overhead.GPU_MODELS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        files, info = runtime_overhead.gpu_models(work, [args.model])[args.model]
        results = []
        for test_name, test in TESTS.items():
            for name, fused in RUNS:
                kernels = kernel_times(args.llama_bench, files[name], test, fused, work)
                total = sum(k["us"] for k in kernels.values())
                results.append({"test": test_name, "file": name, "fusion": "on" if fused else "off",
                                "total_us": round(total, 1),
                                "kernels": {n: {"launches": k["launches"], "us": round(k["us"], 1)}
                                            for n, k in sorted(kernels.items(), key=lambda kv: -kv[1]["us"])}})
                print(f"{test_name} {name} fusion={'on' if fused else 'off'}: {total / 1e3:.2f} ms of kernels")
    args.out.write_text(json.dumps({"command": "python tools/ncu_kernels.py --llama-bench <build>/bin/llama-bench "
                                               f"--model {args.model} --out {args.out.name}",
                                    "model": info, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
