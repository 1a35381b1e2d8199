"""The optimizer's measurements on a slice of Qwen2.5-Coder-1.5B: four of its 28 layers
(0, 9, 18, 27; every weight tensor of each), as a 4-layer qwen2 GGUF without
token_embd/output, with the calibration imatrix's entries of those layers.

    .venv/bin/python bench/qwen_slice.py [--layers 0,9,18,27]

Why a slice: on this 2-core machine, shared and loaded, one llama.cpp quantization of
the whole 1.5B model with an imatrix took 24 minutes, and KLD scoring runs at a few
tokens per second, so the full tables (five quantizations) and a KLD Pareto of a dozen
files did not fit the session (docs/optimizer.md). Per-tensor quantization makes the
slice's tensors exactly the full model's at each type, so the tables of the slice are
the full tables restricted to those layers: they answer, by the error proxy, whether on
a model with real k-quants everywhere a sidecar column or a higher type buys more
error per byte, per tensor kind and depth, and what the planner does with a budget.
Writes bench/results/qwen_slice.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

from pareto_sized import sensitivity  # noqa: E402
from qwen_model import qwen_model  # noqa: E402
from swgguf.formats import gguf_io  # noqa: E402
from swgguf.formats.files import atomic_output, write_json  # noqa: E402
from swgguf.formats.imatrix import load_imatrix, save_imatrix  # noqa: E402
from swgguf.optimize import file_error, measure_tables, plan, smallest_bytes  # noqa: E402
from swgguf.runtime import quantize  # noqa: E402


def renamed(name: str, layers: list[int]) -> str | None:
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    if not m or int(m.group(1)) not in layers:
        return None
    return f"blk.{layers.index(int(m.group(1)))}.{m.group(2)}"


def slice_model(f16: Path, layers: list[int], dst: Path) -> Path:
    """The layers' tensors of ``f16`` as a len(layers)-layer model with the same keys."""
    reader = gguf_io.open_gguf(f16)
    arch = gguf_io.field_value(reader, gguf_io.KEY_ARCHITECTURE)
    kept = [(renamed(t.name, layers), t) for t in reader.tensors]
    kept = [(n, t) for n, t in kept if n is not None]
    with atomic_output(dst) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch)
        gguf_io.copy_keys(reader, writer, skip={f"{arch}.block_count"})
        writer.add_uint32(f"{arch}.block_count", len(layers))
        for n, t in kept:
            writer.add_tensor_info(n, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, t in kept:
            writer.write_tensor_data(t.data)
        writer.close()
    return dst


def slice_imatrix(src: Path, layers: list[int], dst: Path) -> Path:
    im = load_imatrix(src)
    sums = {renamed(n, layers): v for n, v in im.values.items() if renamed(n, layers)}
    return save_imatrix(dst, sums, {n: np.array([1.0]) for n in sums}, im.datasets, im.chunk_count, im.chunk_size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="0,9,18,27")
    ap.add_argument("--work", type=Path, default=Path("/tmp/swgguf-bench-qwen-slice"))
    ap.add_argument("--imatrix", type=Path, default=Path("/tmp/swgguf-bench-sized-qwen/calib-imatrix.gguf"),
                    help="llama-imatrix of the full F16 model on swgguf/data/calibration.txt (-c 512)")
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    _, f16 = qwen_model()
    model = args.work / "slice-f16.gguf"
    if not model.is_file():
        slice_model(f16, layers, model)
    imatrix = slice_imatrix(args.imatrix, layers, args.work / "slice-imatrix.gguf")
    stats = load_imatrix(imatrix)
    t0 = time.perf_counter()
    quantize(model, args.work / "q3km.gguf", "Q3_K_M", imatrix=stats, imatrix_file=imatrix.name)
    quantize_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = measure_tables(model, stats, args.work, base_ftype="Q3_K_M", quant_imatrix=stats,
                            imatrix_file=imatrix.name)
    tables_seconds = time.perf_counter() - t0
    stock = args.work / "q3km.gguf"
    result = {"command": " ".join(["python", *sys.argv]), "model": "Qwen2.5-Coder-1.5B-Instruct, layers " + args.layers,
              "reference": "its Q4_K_M dequantized to F16 (a Q4_K grid: errors at Q4_K and above are understated)",
              "tables": tables.source, "quantize_Q3_K_M_seconds": quantize_seconds, "tables_seconds": tables_seconds,
              "sensitivity": sensitivity(tables), "plans": []}
    stock_types = {t.name: t.tensor_type.name for t in gguf_io.open_gguf(stock).tensors if t.name in tables.tensors}
    result["stock_Q3_K_M"] = {"bytes": stock.stat().st_size, "types": stock_types,
                              "error_proxy": file_error(model, stock, stats, list(tables.tensors))}
    for extra in (0.0, 0.02, 0.05, 0.10, 0.20):
        target = int(stock.stat().st_size * (1 + extra))
        row = {"target_vs_stock_Q3_K_M": extra}
        for v, sidecar in (("types", False), ("types+sidecar", True)):
            p = plan(tables, max(target, smallest_bytes(tables)), sidecar)
            row[v] = {"bytes": p.bytes, "error_proxy": p.error, "type_counts": p.type_counts(),
                      "sidecar_cols": p.sidecar_cols, "sidecar_tensors": len(p.cols)}
        result["plans"].append(row)
    write_json(result, ROOT / "bench" / "results" / "qwen_slice.json")
    print(result["sensitivity"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
