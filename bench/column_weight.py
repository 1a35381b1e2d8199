"""Does the planner undervalue sidecar columns? SmolLM2, at the size of the stock Q2_K +
imatrix file: plans whose greedy counts each column w times its proxy term, scored by
KLD against the stock file (paired, same tokens).

    .venv/bin/python bench/column_weight.py 1 3 10

Reuses bench/pareto_sized.py's SmolLM2 work folder (reference, imatrix, tables, stock
Q2_K + imatrix file, reference logits of 4 x 512 tokens). Writes
bench/results/column_weight_smollm2.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from paired_kld import paired, reference_logits, score  # noqa: E402
from pareto_sized import CTX, EVAL_START, WIKITEXT  # noqa: E402
from swgguf.conversion import ConvertOptions, QuantOptions  # noqa: E402
from swgguf.evaluate.text import text_from, text_windows  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.optimize import load_tables, plan, rebase, trajectory, write_plan  # noqa: E402
from swgguf.optimize.execute import RESERVE  # noqa: E402

WORK = Path("/tmp/swgguf-bench-sized-smollm2")
CHUNKS = 4


def main() -> int:
    weights = [float(a) for a in sys.argv[1:]] or [1.0, 3.0, 10.0]
    ref, im, stock = WORK / "ref-f16.gguf", WORK / "calib-imatrix.gguf", WORK / "Q2_K-imatrix.gguf"
    tables = rebase(load_tables(WORK / "tables.json"), "Q2_K", stock)
    target = stock.stat().st_size
    text = text_from(WIKITEXT, EVAL_START, CTX * CHUNKS * 8, f"{WIKITEXT.name} from {EVAL_START:.0%} of its characters")
    wins = text_windows(ref, text, CTX, CHUNKS, False)
    rows, _ = reference_logits(ref, wins, WORK / f"ref-logits-{CHUNKS}", CTX)
    base = score(stock, wins, rows, CTX).kld
    result = {"command": " ".join(["python", *sys.argv]), "eval_text": text.label, "chunks": CHUNKS,
              "stock": {"file": "Q2_K imatrix", "size_bytes": target, "kld_mean": float(base.mean())}, "runs": []}
    for w in weights:
        p = plan(tables, target - RESERVE, True, trajectory(tables, True, w))
        p.budget = target
        out = WORK / f"Q2_K-colw{w:g}.gguf"
        if not out.is_file():
            write_plan(ref, out, p, ConvertOptions(QuantOptions(ftype="Q2_K", imatrix=im), None))
        k = score(out, wins, rows, CTX).kld
        result["runs"].append({"column_weight": w, "size_bytes": out.stat().st_size, "type_counts": p.type_counts(),
                               "sidecar_cols": p.sidecar_cols, "sidecar_tensors": len(p.cols),
                               "error_proxy": p.error, "kld_mean": float(k.mean()), "vs_stock": paired(k, base)})
        write_json(result, ROOT / "bench" / "results" / "column_weight_smollm2.json")
        print(w, float(k.mean()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
