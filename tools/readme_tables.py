"""Render the benchmark tables of README.md and docs/*.md from bench/results/*.json.

Those files hold blocks ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``;
this tool rewrites each block from the committed JSON, so no measured number
in them is typed by hand. ``--check`` exits 1 when a file is stale (a test
runs it).

  python tools/readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _overhead_rows(d: dict, model: dict) -> list[str]:
    """One row per (tool, fusion, file): median tok/s [min-max] and the overhead vs the plain file."""
    rows = []
    for key, tool in (("llama_bench", "llama-bench"), ("python", "llama-cpp-python")):
        for fusion in ("fused", "unfused"):
            block = model.get(f"{key}_{fusion}")
            if not block:
                continue
            for name, r in block["runs"].items():
                f = model["files"][name]
                o = block["overhead_pct"].get(name)
                cells = [f"{r[t]['median']:.0f} [{r[t]['min']:.0f}-{r[t]['max']:.0f}]" for t in ("pp", "tg")]
                over = [f"{o[t]:+.1f}%" if o else "-" for t in ("pp", "tg")]
                rows.append(f"| {tool} | {fusion} | {name} | {f['sidecar_tensors']} | "
                            f"{f['sidecar_bytes'] / 1024:.0f} | {cells[0]} | {cells[1]} | {over[0]} | {over[1]} |")
    return rows


def _pairs_line(pairs: dict) -> str:
    """bench/runtime_overhead.py --pairs: the median [quartiles] of the pairs' overheads per file and test."""
    cells = []
    for name, o in pairs["overhead_pct"].items():
        for t, v in o.items():
            q = pairs["quartiles_pct"].get(name, {}).get(t)
            cells.append(f"{name} {t} {v:+.1f}%" + (f" [{q[0]:+.1f}, {q[2]:+.1f}]" if q else ""))
    return (f"Alternating pairs (`{pairs['command']}`, one process per file, the plain file and a sidecar file in "
            f"turn, {pairs['pairs']} pairs per file; median [quartiles] of the pairs' overheads): "
            + ", ".join(cells) + ".\n")


# the benchmark's results: (device, file, required); the CUDA run is one file per model
# (one device call each: a call is limited to 10 minutes)
RUNTIME_OVERHEAD_RESULTS = (("cpu", "runtime_overhead_cpu.json", True),
                            ("cuda", "runtime_overhead_cuda.json", True),
                            ("cuda", "runtime_overhead_cuda_llama3_8b.json", False))


def runtime_overhead() -> str:
    lines = []
    for device, name, required in RUNTIME_OVERHEAD_RESULTS:
        d = _load(name)
        if d is None:
            if required:
                lines.append(f"*{device.upper()}: not measured yet (`python bench/runtime_overhead.py --device {device}`).*\n")
            continue
        machine = d["machine"].get("gpu") or d["machine"].get("cpu", "")
        lines.append(f"**{device.upper()}** ({machine}, {d['machine']['cpus']} cores): `{d['command']}`; "
                     f"median [min-max] of {d['reps']} runs per process"
                     + (f", {d['rounds']} rounds" if d.get("rounds", 1) > 1 else "")
                     + (f". {d['build_note']}" if d.get("build_note") else "") + "\n")
        for model in d["models"].values():
            lines.append(f"{model['model']['name']}, {model['model']['type']}:\n")
            lines.append(f"| tool | fusion | file | tensors | sidecar KiB | pp{d['n_prompt']} tok/s | "
                         f"tg{d['n_gen']} tok/s | pp overhead | tg overhead |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            lines += _overhead_rows(d, model)
            lines.append("")
            if model.get("llama_bench_pairs"):
                lines.append(_pairs_line(model["llama_bench_pairs"]))
        t = d["targets_pct"]
        lines.append(f"Targets (fused, every tensor protected): ≤ {t['pp_pct']:g}% (pp) and ≤ {t['tg_pct']:g}% (tg) "
                     "slower than the plain file.\n")
    return "\n".join(lines)


def runtime_instructions() -> str:
    d = _load("runtime_instructions_cpu.json")
    if d is None:
        return "*not measured yet (`python bench/runtime_instructions.py`).*"
    tests = list(d["tests"])
    lines = [f"`{d['command']}` ({d['machine'].get('cpu', '')}; {d['note']})\n",
             "| file | fusion | " + " | ".join(f"{t} instructions | {t} overhead" for t in tests) + " |",
             "|---|---|" + "---|---|" * len(tests)]
    for r in d["results"]:
        cells = " | ".join(f"{r[t] / 1e6:.0f} M | {r['overhead_pct'][t]:+.1f}%" for t in tests)
        lines.append(f"| {r['file']} | {r['fusion']} | {cells} |")
    return "\n".join(lines)


def detect_memory() -> str:
    d = _load("detect_memory.json")
    if d is None:
        return "*not measured yet (`python bench/detect_memory.py`).*"
    lines = [f"`{d['command']}` ({d['machine']['cpus']} cores)\n",
             "| model | verify | mode | seconds | peak RSS MB |", "|---|---|---|---|---|"]
    for r in d["runs"]:
        lines.append(f"| {r['model']} | {'yes' if r.get('verify') else 'no'} | "
                     f"{'--low-mem' if r['low_mem'] else 'normal'} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def setup_time() -> str:
    d = _load("setup_time.json")
    if d is None:
        return "*not measured yet (`python bench/setup_time.py`).*"
    lines = [f"`{d['command']}` ({d['cpu_cores']} cores, {d['date']}; {d['note']})\n",
             "| commit | deps (wall) | runtime build (wall) | total wall | total CPU (user + sys) |",
             "|---|---|---|---|---|"]
    for r in d["runs"]:
        wall, cpu = r["wall_s"], r["total_cpu_s"]
        lines.append(f"| {r['commit']} | {wall['deps'] / 60:.1f} min | {wall['runtime'] / 60:.1f} min | "
                     f"{r['total_wall_s'] / 60:.1f} min | {cpu / 60:.1f} min |")
    return "\n".join(lines)


def sidecar_hash() -> str:
    d = _load("sidecar_hash.json")
    if d is None:
        return "*not measured yet (`python bench/sidecar_hash.py`).*"
    lines = [f"`{d['command']}` ({d['machine'].get('cpu', '')}, {d['machine']['cpus']} cores, shared; "
             "seconds, median [min-max])\n",
             "| model | protected weights | hashed MiB | runtime load v1 | runtime load v2 | hash cost at load "
             "| Python read v1 | Python read v2 | swg64 in NumPy |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict) -> str:
        return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"

    for name, m in d["models"].items():
        lines.append(f"| {name} | {m['protected_weights']} | {_mib(m['hashed_bytes'])} | {cell(m['load_v1'])} | "
                     f"{cell(m['load_v2'])} | {m['runtime_hash_cost_s']:+.2f} s | {cell(m['read_v1'])} | "
                     f"{cell(m['read_v2'])} | {m['swg64_mb_per_s']:.0f} MB/s |")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def pareto() -> str:
    d = _load("pareto_smollm2.json")
    if d is None:
        return "*not measured yet (`python bench/pareto.py`).*"
    runs = d["runs"]
    vs = {v["file"]: v for v in d.get("versus_stock", [])}
    lines = [f"`{d['command']}` ({d['cpus']} cores); mean KLD vs F16 on {d['eval_text']}, {d['chunks']} x "
             f"{d['ctx']} tokens; imatrix from {d['calibration']}; sidecar budget `{d['sidecar_budget']}`.\n",
             "| type | stock MiB | stock KLD | + imatrix KLD | swgguf MiB | swgguf KLD | swgguf + imatrix KLD | "
             "vs same type + imatrix | next stock file up (imatrix) | its MiB | its KLD | swgguf + imatrix vs it |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    types = list(dict.fromkeys(r["type"] for r in runs.values()))
    for t in types:
        get = lambda v: runs.get(f"{t} {v}")  # noqa: E731
        plain, im, sw, swim = get("plain"), get("imatrix"), get("sw"), get("sw+imatrix")
        if not all((plain, im, sw, swim)):
            continue
        v = vs.get(swim["name"], {})
        best = v.get("next_stock_imatrix_up") or {}
        same = v.get("same_type_imatrix") or {}
        lines.append(
            f"| {t} | {_mib(plain['size_bytes'])} | {plain['kld_mean']:.4f} | {im['kld_mean']:.4f} | "
            f"{_mib(swim['size_bytes'])} | {sw['kld_mean']:.4f} | {swim['kld_mean']:.4f} | "
            f"{-same.get('kld_lower_pct', float('nan')):+.0f}% | {best.get('file', '-')} | "
            + (f"{_mib(best['size_bytes'])} | {best['kld_mean']:.4f} | {-best['kld_lower_pct']:+.0f}% |" if best
               else "- | - | - |"))
    lines.append("\n![size vs KLD](bench/results/pareto_smollm2.png)\n")
    lines += ["Conversion time on the same input (seconds; `swgguf convert` vs `llama_model_quantize` alone):\n",
              "| type | llama_model_quantize | convert | convert + imatrix | convert --protect-sw | "
              "convert --protect-sw + imatrix |", "|---|---|---|---|---|---|"]
    for t in types:
        row = [runs.get(f"{t} {v}") for v in ("plain", "imatrix", "sw", "sw+imatrix")]
        if not all(row):
            continue
        fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
        lines.append(f"| {t} | {fmt(row[0]['quantize_only_seconds'])} | "
                     + " | ".join(fmt(r["convert_seconds"]) for r in row) + " |")
    return "\n".join(lines)


def _pm(p: dict, base: float) -> str:
    """A paired difference in percent of the stock file's mean: '-34% ± 1.5%'."""
    return f"{100 * p['diff_mean'] / base:+.1f}% ± {100 * p['diff_stderr'] / base:.1f}%"


def _sized_rows(d: dict, key: str = "points") -> list[str]:
    runs = d["runs"]
    rows = []
    for pt in d.get(key, []):
        ftype = pt["stock"].split()[0]
        plain = runs.get(f"{ftype} plain", {})
        stock_plain = f"{plain['kld_mean']:.4f}" if plain else "-"
        head = f"| {ftype} | {_mib(pt['size_bytes'])} | {stock_plain} | {pt['kld_mean']:.4f} |"
        if ftype in d.get("no_room", {}):
            rows.append(f"{head} - | no room: the same file as stock | - | - | - | no |")
            continue
        t, s = pt.get("types"), pt.get("types+sidecar")
        if not (t and s):
            continue
        g = pt["gain_nats"]
        split = f"{-100 * g['types'] / pt['kld_mean']:+.1f}% / " + (
            "no column bought" if s.get("same_as_types") else f"{-100 * g['sidecar'] / pt['kld_mean']:+.1f}%")
        rows.append(f"{head} {_mib(t['size_bytes'])} | {t['kld_mean']:.4f} "
                    f"({_pm(t['vs_stock_imatrix'], pt['kld_mean'])}) | {_mib(s['size_bytes'])} | {s['kld_mean']:.4f} "
                    f"({_pm(s['vs_stock_imatrix'], pt['kld_mean'])}) | {split} | "
                    f"{'yes' if pt['target_30pct_met'] else 'no'} |")
    return rows


def _restriction(d: dict) -> str:
    below = d.get("restricted_below")
    if not below:
        return ("The optimizer could use every type of its ladder, also those at or above the reference's own "
                "precision (where requantizing nearly reproduces the reference: part of such gains is the "
                "reference's artefact).")
    kept = d.get("kept_stock_tensors", {})
    return (f"The optimizer used only types below {below}, the reference's own precision, and kept as in the stock "
            f"file the tensors that it has at {below} or above ("
            + ", ".join(f"{pt['stock'].split()[0]}: {kept.get(pt['stock'].split()[0], 0)}"
                        for pt in d.get("points", [])) + " tensors): requantized at that precision they nearly "
            "reproduce the reference, so both files profit from its grid on the same tensors. \"no room\": the "
            "stock file already has every other tensor at its cheapest type below that precision.")


def pareto_sized() -> str:
    """`swgguf convert --target-size` against stock llama.cpp, both models."""
    out = []
    for model, title in (("smollm2", "SmolLM2-135M-Instruct"), ("qwen", "Qwen2.5-Coder-1.5B-Instruct")):
        d = _load(f"pareto_sized_{model}.json")
        if d is None:
            out.append(f"**{title}**: *not measured yet (`python bench/pareto_sized.py --model {model}`).*\n")
            continue
        out += [f"**{title}** — `{d['command']}` ({d['cpus']} cores); reference: {d['reference']}; mean KLD vs "
                f"F16 on {d['eval_text']}, {d['chunks']} x {d['ctx']} tokens; imatrix from {d['calibration']}. "
                "In brackets: the paired per-token difference from the stock imatrix file, ± its standard "
                "error; \"KLD change by types / by sidecar\": stock -> types only, then types only -> types + "
                f"sidecar, in % of the stock KLD. {_restriction(d)}\n",
                "| type | stock imatrix MiB | stock KLD | stock + imatrix KLD | swgguf types MiB | swgguf types KLD | "
                "swgguf types+sidecar MiB | swgguf types+sidecar KLD | KLD change by types / by sidecar | >= 30% lower |",
                "|---|---|---|---|---|---|---|---|---|---|", *_sized_rows(d), ""]
        if d.get("points_plain_proxy"):
            out += ["The same sizes planned on the plain error proxy (`--sensitivity none`), for comparison:\n",
                    "| type | stock imatrix MiB | stock KLD | stock + imatrix KLD | plain proxy types MiB | "
                    "plain proxy types KLD | plain proxy types+sidecar MiB | plain proxy types+sidecar KLD | "
                    "KLD change by types / by sidecar | >= 30% lower |", "|---|---|---|---|---|---|---|---|---|---|",
                    *_sized_rows(d, "points_plain_proxy"), ""]
        asked = d.get("types") or (d["command"].split("--types ")[1].split()[0].split(",")
                                   if "--types " in d["command"] else [])
        if len(asked) > len(d.get("points", [])):
            done = {p["stock"].split()[0] for p in d.get("points", [])}
            out.append(f"*The run measured {len(done)} of the {len(asked)} sizes it was asked for; "
                       f"not measured (CPU time): {', '.join(t for t in asked if t not in done)}.*\n")
        if (RESULTS / f"pareto_sized_{model}.png").is_file():
            out.append(f"![size vs KLD, {title}](bench/results/pareto_sized_{model}.png)\n")
    return "\n".join(out)


def pareto_sized_files() -> str:
    """Every file of bench/pareto_sized.py with PPL, top-1 agreement and the KLD tail."""
    out = []
    for model, title in (("smollm2", "SmolLM2-135M-Instruct"), ("qwen", "Qwen2.5-Coder-1.5B-Instruct")):
        d = _load(f"pareto_sized_{model}.json")
        if d is None:
            continue
        out += [f"**{title}** (reference PPL {d['reference_ppl']:.3f}; `{d['command']}`)\n",
                "| file | MiB | PPL | top-1 same as F16 | mean KLD | KLD p99 | sidecar columns (tensors) |",
                "|---|---|---|---|---|---|---|"]
        for name, r in d["runs"].items():
            plan = r.get("plan") or {}
            cols = f"{plan['sidecar_cols']} ({plan['sidecar_tensors']})" if plan.get("sidecar_cols") else "-"
            out.append(f"| {name} | {_mib(r['size_bytes'])} | {r['ppl']:.3f} | {100 * r['top1']:.1f}% | "
                       f"{r['kld_mean']:.4f} | {r['kld_p99']:.3f} | {cols} |")
        out.append("")
    return "\n".join(out) or "*not measured yet (`python bench/pareto_sized.py`).*"


def sensitivity_factors() -> str:
    """The measured KLD per unit of error proxy, per tensor group (bench/pareto_sized.py)."""
    out = []
    for model, title in (("smollm2", "SmolLM2-135M-Instruct"), ("qwen", "Qwen2.5-Coder-1.5B-Instruct")):
        d = _load(f"pareto_sized_{model}.json")
        if not d or "sensitivity_factors" not in d:
            continue
        f = d["sensitivity_factors"]
        secs = d.get("sensitivity_seconds")
        out += [f"**{title}** (`{d['command']}`"
                + (f"; measured in {secs:.0f} s" if secs else "") + "): each group at its cheapest option in a "
                "Q8_0 file, KLD added over the Q8_0 file (paired, ± s.e.) on 2 x 512 tokens of "
                "swgguf/data/calibration.txt.\n",
                "| group (layers) | tensors | proxy | KLD added | nats per unit of proxy | x the smallest |",
                "|---|---|---|---|---|---|"]
        low = min(v["nats_per_unit"] for v in f.values())
        for g, v in sorted(f.items(), key=lambda kv: -kv[1]["nats_per_unit"]):
            a, b = v["layers"]
            out.append(f"| {g.split('@')[0]} ({a}-{b}) | {v['tensors']} | {v['proxy']:.4g} | {v['kld_added']:.4f} ± "
                       f"{v['kld_added_stderr']:.4f} | {v['nats_per_unit']:.3g} | {v['nats_per_unit'] / low:.0f} |")
        out.append("")
    return "\n".join(out) or "*not measured yet (`python bench/pareto_sized.py`).*"


def _sensitivity_rows(sens: dict) -> list[str]:
    rows = ["| tensor kind | tensors | first type step: error removed per byte | first sidecar column: per byte | "
            "tensors where the column buys more |", "|---|---|---|---|---|"]
    for kind, v in sens.items():
        rows.append(f"| {kind} | {v['tensors']} | {v['type_step_per_byte']:.3g} | {v['first_column_per_byte']:.3g} | "
                    f"{v['column_beats_step']} |")
    return rows


def qwen_slice() -> str:
    """The optimizer's tables on four layers of Qwen2.5-Coder-1.5B (bench/qwen_slice.py)."""
    d = _load("qwen_slice.json")
    if d is None:
        return "*not measured yet (`python bench/qwen_slice.py`).*"
    st = d["stock_Q3_K_M"]
    out = [f"`{d['command']}`: {d['model']}; reference {d['reference']}; {d['tables']}. Tables "
           f"{d['tables_seconds']:.0f} s, one llama_model_quantize of the slice (Q3_K_M + imatrix) "
           f"{d['quantize_Q3_K_M_seconds']:.0f} s (2 shared cores).\n", *_sensitivity_rows(d["sensitivity"]), "",
           f"Plans by error proxy, against the slice's stock Q3_K_M + imatrix ({_mib(st['bytes'])} MiB, proxy "
           f"{st['error_proxy']:.4g}):\n",
           "| target vs stock Q3_K_M | types only: proxy | vs stock | types + sidecar: proxy | vs stock | "
           "sidecar columns (tensors) |", "|---|---|---|---|---|---|"]
    for r in d["plans"]:
        t, s = r["types"], r["types+sidecar"]
        out.append(f"| {100 * r['target_vs_stock_Q3_K_M']:+.0f}% | {t['error_proxy']:.4g} | "
                   f"{100 * (t['error_proxy'] / st['error_proxy'] - 1):+.0f}% | {s['error_proxy']:.4g} | "
                   f"{100 * (s['error_proxy'] / st['error_proxy'] - 1):+.0f}% | {s['sidecar_cols']} "
                   f"({s['sidecar_tensors']}) |")
    return "\n".join(out)


def column_weight() -> str:
    """Plans with columns weighted w x at the stock Q2_K + imatrix size (bench/column_weight.py)."""
    d = _load("column_weight_smollm2.json")
    if d is None or not d["runs"]:
        return "*not measured yet (`python bench/column_weight.py 3 10`).*"
    st = d["stock"]
    out = [f"`{d['command']}`: SmolLM2-135M, at the size of the stock Q2_K + imatrix file ({_mib(st['size_bytes'])} "
           f"MiB, KLD {st['kld_mean']:.4f}); {d['chunks']} x 512 tokens of {d['eval_text']}.\n",
           "| column weight | MiB | sidecar columns (tensors) | error proxy | KLD | vs stock (paired) |",
           "|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r['column_weight']:g} | {_mib(r['size_bytes'])} | {r['sidecar_cols']} ({r['sidecar_tensors']}) | "
                   f"{r['error_proxy']:.4g} | {r['kld_mean']:.4f} | {_pm(r['vs_stock'], st['kld_mean'])} |")
    return "\n".join(out)


def proxy_validation() -> str:
    """The error proxy's rank agreement with measured KLD (docs/optimizer.md)."""
    out = []
    for model in ("smollm2", "qwen"):
        v = _load(f"proxy_validation_{model}.json")
        if not v or v.get("spearman") is None:
            continue
        out += [f"`{v['command']}`: {model}, base plan (every planned tensor at its cheapest type) KLD "
                f"{v['base_kld']:.4f} on {v['eval_text']}, {v['chunks']} x 512 tokens. **Spearman rank "
                f"correlation between predicted and measured error removed: {v['spearman']:.2f}** over "
                f"{len(v['probes'])} one-tensor moves"
                + (f"; **{v['spearman_kld_weighted']:.2f}** with each prediction weighed by its group's measured KLD "
                   f"per unit (`{v['rescore_command']}`)" if "spearman_kld_weighted" in v else "") + ".\n",
                "| tensor | move | proxy removed | KLD removed (paired, ± s.e.) |", "|---|---|---|---|"]
        out += [f"| {p['tensor']} | {p['move']} | {p['proxy_removed']:.3g} | {p['kld_removed']['diff_mean']:+.5f} "
                f"± {p['kld_removed']['diff_stderr']:.5f} |" for p in v["probes"]]
        out.append("")
    return "\n".join(out) or "*not measured yet (`python bench/proxy_validation.py`).*"


def usage() -> str:
    d = _load("usage_smollm2.json")
    if d is None:
        return "*not recorded yet (`python tools/usage_transcript.py`).*"
    lines = [f"Recorded by `{d['command']}` ({d['cpus']} cores).\n"]
    for e in d["entries"]:
        lines += [f"**{e['title']}** ({e['seconds']:.0f} s)\n", "```", "$ swgguf " + " ".join(e["argv"]),
                  e["output"].rstrip(), "```\n"]
    return "\n".join(lines)


def convert_sweep() -> str:
    d = _load("convert_sweep.json")
    if d is None:
        return "*not measured yet (`python bench/convert_sweep.py`).*"
    lines = [f"`{d['command']}`; {d['windows']} windows of {d['ctx']} tokens; KLD: {d['kld']}.\n",
             "| type | imatrix | variant | file MiB | sidecar KiB | tensors | columns | mean KLD ± err | "
             "vs plain | PPL | top-1 % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    plain = {}
    for name, r in d["runs"].items():
        group, variant = name.split(" / ")
        if variant == "plain":
            plain[group] = r["mean_kld"]
    for name, r in d["runs"].items():
        group, variant = name.split(" / ")
        ftype, im = group.split(" ", 1)
        base = plain.get(group)
        pct = 100 * (r["mean_kld"] / base - 1) if base and variant != "plain" else None
        change = "-" if pct is None else f"{pct:+.1f}%" if abs(pct) < 1 else f"{pct:+.0f}%"
        lines.append(f"| {ftype} | {'yes' if im == 'imatrix' else 'no'} | {variant} | {_mib(r['file_bytes'])} | "
                     f"{r['sidecar_bytes'] / 1024:.0f} | {r['protected_tensors']} | {r['columns']} | "
                     f"{r['mean_kld']:.4f} ± {r['kld_stderr']:.4f} | {change} | {r['ppl']:.2f} | "
                     f"{100 * r['top1_agree']:.1f} |")
    return "\n".join(lines)


def demo() -> str:
    d = _load("demo_smollm2.json")
    if d is None:
        return "*not recorded yet (`swgguf demo`, then copy its results.json here).*"
    rows = {r["name"]: r for r in d["results"]}
    lines = [f"`{d['command']}` on {d['cpus']} cores: {d['total_seconds']:.0f} s in all "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in d['seconds'].items())}); text: {d['text']}, "
             f"{d['chunks']} windows of {d['ctx']} tokens.\n",
             "| file | MiB | sidecar KiB | PPL | mean KLD vs F16 | vs plain |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        plain = rows.get(name.replace("-sw.gguf", ".gguf")) if name.endswith("-sw.gguf") else None
        change = f"{100 * (r['kld_mean'] / plain['kld_mean'] - 1):+.0f}%" if plain else "-"
        kld = f"{r['kld_mean']:.4f} ± {r['kld_stderr']:.4f}" if r["kld_mean"] is not None else "(reference)"
        lines.append(f"| {name} | {_mib(r['size_bytes'])} | {(r['sidecar_bytes'] or 0) / 1024:.0f} | "
                     f"{r['ppl']:.2f} ± {r['ppl_stderr']:.2f} | {kld} | {change} |")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    if abs(n) < 2**10:
        return f"{n:.0f} B"
    return f"{n / 2**20:.2f} MiB" if abs(n) >= 2**20 else f"{n / 2**10:.1f} KiB"


def rpc_traffic() -> str:
    d = _load("rpc_traffic_smollm2.json")
    if d is None:
        return "*Not measured yet (`python bench/rpc_traffic.py`).*"
    s, n_next = d["summary"], d["gen_tokens"] - 1
    phases = [("load", "load", 1), ("prompt", f"prompt ({d['prompt_tokens']} tokens, one batch)", 1),
              ("first_token", "first generated token", 1), ("next_tokens", f"each next token (mean of {n_next})", n_next)]
    lines = [f"`{d['command']}` ({d['date']}): {d['model']} {d['ftype']}, {d['rpc_servers']} ggml-rpc-servers on "
             "127.0.0.1, every layer offloaded; bytes on the wire, client to servers (sent) and back (received), "
             "summed over the servers; the protected file against the same file without its sidecar.", "",
             "| phase | sent, plain | sent, protected | extra sent, by request | received, plain | received, protected |",
             "|---|---|---|---|---|---|"]
    for key, label, n in phases:
        p = s[key]
        extra = ", ".join(f"{c} {'+' if v >= 0 else '-'}{_bytes(abs(v) / n)}"
                          for c, v in p["extra_requests"].items()) or "none"
        lines.append(f"| {label} | {_bytes(p['plain']['sent'] / n)} | {_bytes(p['protected']['sent'] / n)} | {extra} | "
                     f"{_bytes(p['plain']['received'] / n)} | {_bytes(p['protected']['received'] / n)} |")
    side = d["runs"]["protected"]["sidecars"]
    lines += ["", "Sidecars on the servers (the loader's log): " + ", ".join(
        f"{n} in {buf} ({mib:.2f} MiB)" for n, buf, mib in side) + "; in the file: "
        f"{_bytes(d['file_bytes']['protected'] - d['file_bytes']['plain'])} (the size difference)."]
    return "\n".join(lines)


def _acc(r: dict) -> str:
    return f"{100 * r['accuracy']:.1f} ± {100 * r['stderr']:.1f}"


def _paired(v: dict | None) -> str:
    return "-" if v is None else f"{100 * v['diff']:+.1f} ± {100 * v['stderr']:.1f}"


def _hellaswag_files(d: dict) -> list[str]:
    """Each file's accuracy, against F16 (paired) and as llama-perplexity scores it."""
    tool = d.get("llama_perplexity", {})
    lines = ["| file | MiB | sidecar KiB | accuracy % | vs F16 (paired) | same choice as F16 | llama-perplexity | "
             "llama-perplexity -ub 32 |", "|---|---|---|---|---|---|---|---|"]
    for name, r in d["files"].items():
        t = tool.get(name, {})
        cells = [f"{100 * t[k]['accuracy']:.1f} ({t[k]['tasks_differing_from_swgguf']} tasks differ)" if k in t
                 else "-" for k in ("default", "ubatch_32")]
        same = f"{100 * r['vs_ref']['agree']:.1f}%" if r["vs_ref"] else "(reference)"
        lines.append(f"| {name} | {_mib(r['size_bytes'])} | {r['sidecar_bytes'] / 1024:.0f} | {_acc(r)} | "
                     f"{_paired(r['vs_ref'])} | {same} | {cells[0]} | {cells[1]} |")
    return lines


def _hellaswag_ablation(a: dict) -> list[str]:
    lines = [f"\nSuper-weight ablation of the F16 file ({'; '.join(a['super_weights'])}), same tasks:\n",
             "| variant | accuracy % | vs original (paired) | same choice as original |", "|---|---|---|---|",
             f"| original | {_acc(a['original'])} | | |"]
    names = {0.0: "super weights pruned (α = 0)"}
    for r in a["rows"]:
        label = "pruned + super activation restored (α = 0 +SA)" if r["restore_sa"] else \
            names.get(r["scale"], f"scaled (α = {r['scale']:g})")
        lines.append(f"| {label} | {_acc(r)} | {_paired(r['vs_original'])} | "
                     f"{100 * r['vs_original']['agree']:.1f}% |")
    return lines


def hellaswag() -> str:
    """HellaSwag accuracy per file and per ablation variant (bench/hellaswag.py)."""
    d = _load("hellaswag.json")
    if d is None or "files" not in d:
        return "*not measured yet (`python bench/hellaswag.py`).*"
    t = d["tasks"]
    cmds = "; ".join(f"`{c}`" for c in dict.fromkeys(v["command"] for v in d["steps"].values()))
    lines = [f"{cmds} ({d['cpus']} cores): the first {t['n_tasks']} of the {t['of']} tasks of {t['source']}; "
             "accuracy ± binomial standard error, paired differences ± the standard error of the per-task "
             "difference.\n"]
    lines += _hellaswag_files(d)
    if "ablation" in d:
        lines += _hellaswag_ablation(d["ablation"])
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "demo": demo,
    "convert_sweep": convert_sweep,
    "runtime_overhead": runtime_overhead,
    "runtime_instructions": runtime_instructions,
    "detect_memory": detect_memory,
    "pareto": pareto,
    "pareto_sized": pareto_sized,
    "pareto_sized_files": pareto_sized_files,
    "sensitivity_factors": sensitivity_factors,
    "proxy_validation": proxy_validation,
    "qwen_slice": qwen_slice,
    "column_weight": column_weight,
    "usage": usage,
    "sidecar_hash": sidecar_hash,
    "setup_time": setup_time,
    "rpc_traffic": rpc_traffic,
    "hellaswag": hellaswag,
}


def render(readme: str) -> str:
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        readme = pattern.sub(lambda m: m.group(1) + fn().rstrip() + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a document is not up to date")
    args = parser.parse_args()
    stale = []
    for doc in DOCUMENTS:
        old = doc.read_text()
        new = render(old)
        if new == old:
            continue
        stale.append(doc.relative_to(ROOT))
        if not args.check:
            tmp = doc.with_suffix(".md.tmp")
            tmp.write_text(new)
            tmp.replace(doc)
    if args.check and stale:
        print(f"stale tables in {', '.join(map(str, stale))}: run python tools/readme_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
