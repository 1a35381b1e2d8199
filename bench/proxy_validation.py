"""Does the optimizer's error proxy rank moves as KLD does? One move at a time from a
base plan, predicted by the tables and measured by KLD against the F16 reference.

    .venv/bin/python bench/proxy_validation.py [--model smollm2] [--chunks 4] [--n 12]

The base is the cheapest plan (every planned tensor at the ladder's lowest type, no
sidecar; Q2_K with the calibration imatrix). Each probe changes one tensor: its type
raised to the next option in the tables (llama.cpp's --tensor-type), or 16 sidecar
columns added. Predicted: the proxy error it removes (tables); measured: the mean KLD it
removes against the base file, paired on the same tokens. Reported: both per probe and
the Spearman rank correlation over the probes. Reuses pareto_sized.py's work folder
(reference, imatrix, tables, reference logits).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from paired_kld import paired, reference_logits, score  # noqa: E402
from pareto_sized import CTX, EVAL_START, WIKITEXT, imatrix_file, reference, tables_for  # noqa: E402
from swgguf.conversion import ConvertOptions, QuantOptions  # noqa: E402
from swgguf.evaluate.text import text_from, text_windows  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.optimize import Plan, write_plan  # noqa: E402
from swgguf.optimize.planner import error_of  # noqa: E402

COLS = 16


def probes(tables, n: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(tensor, type, columns) per probe: n type raises and n // 3 column additions, over
    tensors spread across kinds and depths."""
    names = sorted(tables.tensors)
    picked = [names[i] for i in rng.choice(len(names), size=min(n + n // 3, len(names)), replace=False)]
    out = []
    for i, name in enumerate(picked):
        opts = tables.tensors[name].options
        if i < n and len(opts) > 1:
            out.append((name, opts[1].requested, 0))
        elif opts[0].col_gains.size:
            out.append((name, opts[0].requested, min(COLS, opts[0].col_gains.size)))
    return out


def base_plan(tables) -> Plan:
    types = {n: t.options[0].requested for n, t in tables.tensors.items()}
    written = {n: t.options[0].written for n, t in tables.tensors.items()}
    return Plan(tables.base_ftype, types, written, {}, 0, error_of(tables, types), sidecar=True)


def probe_plan(tables, base: Plan, name: str, qtype: str, cols: int) -> Plan:
    types = {**base.types, name: qtype}
    written = {**base.written, name: tables.option(name, qtype).written}
    colmap = {name: cols} if cols else {}
    return Plan(base.base_ftype, types, written, colmap, 0, error_of(tables, types, colmap))


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rescore(out: Path, factors_file: Path) -> int:
    """The recorded probes' predictions weighed by the measured KLD per unit of proxy of their
    tensor's group (swgguf.optimize.sensitivity): Spearman against the same measurements."""
    import json

    from swgguf.optimize import factor_of, load_factors

    result = json.loads(out.read_text())
    factors = load_factors(factors_file)
    for p in result["probes"]:
        p["kld_weighted_removed"] = p["proxy_removed"] * factor_of(p["tensor"], factors)
    pred = [p["kld_weighted_removed"] for p in result["probes"]]
    result["spearman_kld_weighted"] = spearman(pred, [p["kld_removed"]["diff_mean"] for p in result["probes"]])
    result["rescore_command"] = " ".join(["python", "bench/proxy_validation.py", "--model", result["model"],
                                          "--rescore", "WORK/sensitivity.json"])
    write_json(result, out)
    print(f"Spearman: plain proxy {result['spearman']:.2f}, KLD-weighed {result['spearman_kld_weighted']:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=("smollm2", "qwen"))
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--n", type=int, default=12, help="type raises (and n // 3 column additions)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--rescore", type=Path, metavar="SENSITIVITY_JSON",
                    help="only add the rank correlation of the KLD-weighed proxy (the factors bench/pareto_sized.py "
                         "measured, same tables) to the recorded probes")
    args = ap.parse_args()
    work = args.work or Path(f"/tmp/swgguf-bench-sized-{args.model}")
    work.mkdir(parents=True, exist_ok=True)
    out = ROOT / "bench" / "results" / f"proxy_validation_{args.model}.json"
    if args.rescore:
        return rescore(out, args.rescore)
    ref = reference(args.model, work)
    imatrix = imatrix_file(ref, work)
    result: dict = {"command": " ".join(["python", *sys.argv]), "model": args.model, "chunks": args.chunks}
    tables = tables_for(ref, imatrix, work, result)
    text = text_from(WIKITEXT, EVAL_START, CTX * args.chunks * 8, f"{WIKITEXT.name} from {EVAL_START:.0%}")
    wins = text_windows(ref, text, CTX, args.chunks, False)
    rows, _ = reference_logits(ref, wins, work / f"ref-logits-{args.chunks}", CTX)
    opts = ConvertOptions(QuantOptions(ftype=tables.base_ftype, imatrix=imatrix), None)
    base = base_plan(tables)
    base_file = work / "probe-base.gguf"
    if not base_file.is_file():
        write_plan(ref, base_file, base, opts)
    base_kld = score(base_file, wins, rows, CTX).kld
    result.update(eval_text=text.label, base_kld=float(base_kld.mean()), base_error_proxy=base.error, probes=[])
    for name, qtype, cols in probes(tables, args.n, np.random.default_rng(0)):
        p = probe_plan(tables, base, name, qtype, cols)
        path = work / "probe.gguf"
        write_plan(ref, path, p, opts)
        kld = score(path, wins, rows, CTX).kld
        result["probes"].append({"tensor": name, "move": f"{cols} columns" if cols else f"-> {qtype}",
                                 "proxy_removed": base.error - p.error,
                                 "kld_removed": paired(base_kld, kld)})
        path.unlink()
        pred = [r["proxy_removed"] for r in result["probes"]]
        meas = [r["kld_removed"]["diff_mean"] for r in result["probes"]]
        result["spearman"] = spearman(pred, meas) if len(pred) > 2 else None
        write_json(result, out)
        print(f"{name} {result['probes'][-1]['move']}: proxy {pred[-1]:.4g}, KLD {meas[-1]:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
