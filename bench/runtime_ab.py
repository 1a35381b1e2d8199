"""Generation cost of a sidecar on two or more builds of the patched runtime, side by
side: the way to tell whether a change to the fused paths moved the wall clock on a
shared machine whose speed drifts between runs.

  python bench/runtime_ab.py --build before=DIR --build after=DIR [--rounds 24] [--cols 2]

DIR: a folder with llama-bench and the libraries it loads (a CMake build's bin/ of the
patched tree: `tools/llama_tree.sh init`, then `cmake --build ... --target llama-bench`),
configured as `swgguf runtime build` configures it (-DBUILD_SHARED_LIBS=ON and the options
that `python -c "from swgguf.runtime.build import COMMON_CMAKE, cpu_cmake_flags;
print(*COMMON_CMAKE, *cpu_cmake_flags())"` prints). Not -march=native: on a CPU with AMX
that puts some weights in ggml's AMX buffer, whose products run the correction unfused
(a 2-core Xeon read +6% for both builds of a pair that read +2-3% configured as shipped).
SmolLM2-135M-Instruct Q4_K_M and the same file with a K-column sidecar on every weight
tensor, as in bench/runtime_overhead.py. Per round, each build (their order alternating)
runs the plain file and the sidecar file (their order alternating) in one-file
llama-bench processes (-p 0 -n N_GEN -r REPS -t THREADS); a round's overhead on a build is
1 - tg(sidecar) / tg(plain) of those two adjacent processes. Reports per build the median
and quartiles of the rounds' overheads. Writes JSON with the command line to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from runtime_overhead import ROOT, cpu_models, llama_bench, machine_info, overhead_pct, portable

from swgguf.formats.files import write_json


def generation_speed(bin_dir: Path, model: Path, args) -> float:
    """tokens/s of one llama-bench process of ``bin_dir`` on ``model`` (generation only, fused)."""
    build = argparse.Namespace(llama_bench=bin_dir / "llama-bench", device="cpu", n_gen=args.n_gen,
                               threads=args.threads)
    tests, _ = llama_bench(build, [model], 0, args.reps, True)
    return tests[0]["avg_ts"]


def interleaved_rounds(builds: dict[str, Path], plain: Path, sidecar: Path, args) -> dict[str, list[float]]:
    overheads: dict[str, list[float]] = {name: [] for name in builds}
    for r in range(args.rounds):
        names = list(builds) if r % 2 == 0 else list(reversed(builds))
        for name in names:
            files = [plain, sidecar] if r % 2 == 0 else [sidecar, plain]
            speed = {f: generation_speed(builds[name], f, args) for f in files}
            overheads[name].append(overhead_pct(speed[sidecar], speed[plain]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:+.2f}%" for n, v in overheads.items()),
              flush=True)
    return overheads


def summary(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4)
    return {"median_pct": round(statistics.median(values), 2), "quartiles_pct": [round(q[0], 2), round(q[2], 2)],
            "mean_pct": round(statistics.mean(values), 2), "rounds_pct": values}


def portable_arg(arg: str) -> str:
    """An argument without this machine's paths, NAME=DIR included."""
    name, sep, value = arg.partition("=")
    return f"{name}={portable(value)}" if sep and value.startswith("/") else portable(arg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="append", required=True, metavar="NAME=DIR",
                        help="a build to compare: its name and its llama-bench folder (two or more)")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--cols", type=int, default=2, help="sidecar columns K")
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3, help="runs per llama-bench process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "runtime_ab_cpu.json")
    args = parser.parse_args()
    if bad := [b for b in args.build if "=" not in b]:
        raise SystemExit(f"--build {bad[0]}: expected NAME=DIR")
    builds = {name: Path(d) for name, d in (b.split("=", 1) for b in args.build)}
    for name, d in builds.items():
        if not (d / "llama-bench").is_file():
            raise SystemExit(f"--build {name}={d}: no llama-bench in that folder")
    if len(builds) < 2 or args.rounds < 2:
        raise SystemExit("runtime_ab: give two or more --build and --rounds >= 2")

    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        (files, info), = cpu_models(Path(tmp), (args.cols,)).values()
        overheads = interleaved_rounds(builds, files["plain"], files[f"sidecar{args.cols}"], args)
    report = {
        "command": " ".join(["python", "bench/runtime_ab.py", *map(portable_arg, sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info("cpu"),
        "model": info, "cols": args.cols, "n_gen": args.n_gen, "reps": args.reps, "threads": args.threads,
        "rounds": args.rounds, "builds": {name: summary(v) for name, v in overheads.items()},
        "note": "per round and build: 1 - tg(sidecar) / tg(plain) of two adjacent one-file llama-bench processes; "
                "positive = slower.",
        "seconds": round(time.time() - t0, 1),
    }
    write_json(report, args.out)
    print(json.dumps({n: {k: v for k, v in s.items() if k != "rounds_pct"} for n, s in report["builds"].items()}))


if __name__ == "__main__":
    main()
