"""Stock llama.cpp files against the optimizer's plans at the same size, by the error
proxy alone (no KLD): for a model too large to score many files by KLD on this machine.

    .venv/bin/python bench/proxy_compare.py --model qwen [--types Q3_K_M,Q2_K,Q3_K_L]

For each stock type: the stock imatrix file (llama.cpp's quantizer, the calibration
imatrix), its error proxy measured on the file (gguf-py dequantization, the planned
tensors: docs/optimizer.md), and the optimizer's types-only and types + sidecar plans for
the same size, whose proxy the tables predict exactly (tests/optimize/test_convert_sized.py
checks the prediction on written files). The proxy is not KLD: bench/proxy_validation.py
measures how well it ranks moves on SmolLM2. Reuses bench/pareto_sized.py's work folder
(reference, imatrix, tables).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pareto_sized import MODELS, imatrix_file, reference, sensitivity, stock  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.formats.imatrix import load_imatrix  # noqa: E402
from swgguf.optimize import file_error, load_tables, plan, rebase  # noqa: E402
from swgguf.optimize.execute import RESERVE  # noqa: E402


def compare_type(ref: Path, imatrix: Path, tables, ftype: str, work: Path) -> dict:
    path = work / f"{ftype}-imatrix.gguf"
    seconds = stock(ref, ftype, imatrix, path)
    size = path.stat().st_size
    stock_err = file_error(ref, path, load_imatrix(imatrix), list(tables.tensors))
    out = {"stock": f"{ftype} imatrix", "size_bytes": size, "quantize_seconds": seconds, "error_proxy": stock_err}
    based = rebase(tables, ftype, path)  # token_embd (untied) as llama.cpp's ftype has it
    out["base_fixed_bytes"] = based.fixed_bytes
    for v, sidecar in (("types", False), ("types+sidecar", True)):
        p = plan(based, size - RESERVE, sidecar)  # as convert_to_size plans it
        out[v] = {"predicted_bytes": p.bytes, "error_proxy": p.error, "lower_pct": 100 * (1 - p.error / stock_err),
                  "type_counts": p.type_counts(), "sidecar_tensors": len(p.cols), "sidecar_cols": p.sidecar_cols}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="qwen")
    ap.add_argument("--types", default="Q3_K_M,Q2_K,Q3_K_L")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(f"/tmp/swgguf-bench-sized-{args.model}")
    out = ROOT / "bench" / "results" / f"proxy_compare_{args.model}.json"
    ref = reference(args.model, work)
    imatrix = imatrix_file(ref, work)
    tables = load_tables(work / "tables.json")
    result = {"command": " ".join(["python", *sys.argv]), "model": args.model, "reference": MODELS[args.model]["reference"],
              "tables": tables.source, "planned_tensors": len(tables.tensors),
              "proxy": "sum over planned tensors of E[x_j^2] ||W_j - Q_j||^2 (imatrix from swgguf/data/calibration.txt)",
              "sensitivity": sensitivity(tables), "points": []}
    for ftype in args.types.split(","):
        t0 = time.perf_counter()
        result["points"].append({**compare_type(ref, imatrix, tables, ftype, work),
                                 "seconds": time.perf_counter() - t0})
        write_json(result, out)
        p = result["points"][-1]
        print(f"{ftype}: stock {p['error_proxy']:.4g}, types {p['types']['error_proxy']:.4g}, "
              f"+sidecar {p['types+sidecar']['error_proxy']:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
