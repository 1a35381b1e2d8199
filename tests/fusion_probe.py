"""Evaluate many (model, batch size) cases in one process and record the logits
and how many products ran fused: ``python tests/fusion_probe.py SPEC.json OUT.npz``.

A separate process because ggml reads GGML_CPU_DISABLE_FUSION /
GGML_CUDA_DISABLE_FUSION once per process. SPEC: {"n_gpu_layers": 0,
"cases": [{"key": str, "model": path, "n_batch": int, "n_tokens": int,
"env": {...}}]}. OUT holds one logits array per key and "fused" (a JSON
string): per key, the change of each fused-product counter during its eval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf.runtime import fusion, llm  # noqa: E402


def tokens(n: int) -> list[int]:
    """Deterministic token ids inside the tiny model's vocabulary."""
    return [3 + (7 * i) % 500 for i in range(n)]


def run_case(case: dict, n_gpu_layers: int) -> tuple[np.ndarray, dict[str, int]]:
    n_tokens = case["n_tokens"]
    options = llm.LoadOptions(n_ctx=max(64, n_tokens), n_batch=case["n_batch"], kv_f32=True,
                              n_gpu_layers=n_gpu_layers)
    with llm.environment(**case.get("env", {})):
        model = llm.load(case["model"], options)
    before = fusion.fused_products()
    out = llm.logits(model, tokens(n_tokens))
    after = fusion.fused_products()
    del model
    return out, {k: after[k] - before[k] for k in after}


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    arrays: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, int]] = {}
    for case in spec["cases"]:
        arrays[case["key"]], fused[case["key"]] = run_case(case, spec.get("n_gpu_layers", 0))
    np.savez(out_path, fused=np.array(json.dumps(fused)), **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
