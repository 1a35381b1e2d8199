"""Peak resident memory and time of `swgguf detect`, normal vs --low-mem.

  .venv/bin/python bench/detect_memory.py [--synthetic-1b] [--out bench/results/detect_memory.json]

Each measurement runs `swgguf detect` in a fresh child process and reads the
child's ru_maxrss (peak RSS: anonymous memory plus touched file pages; swgguf
reads tensors with pread, so the model file itself is not mapped). Models:

* SmolLM2-135M-Instruct Q4_1 GGUF (the bundled reference model), detection only
  and detection + verification on the default text;
* with --synthetic-1b, a random llama of ~1B parameters saved as fp16
  safetensors in a temporary folder (16 layers, width 2048): the scale where
  --low-mem matters (fp32 weights ~4 GB in normal mode).

The result JSON records the command line that produced it and every child's command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
         "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
         "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measure(argv: list[str]) -> dict:
    """Run ``argv`` under a wrapper process whose only child it is, so RUSAGE_CHILDREN is that run's peak."""
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True)
    rc, seconds, maxrss_kb = out.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {rc}")
    return {"command": argv, "seconds": round(float(seconds), 2), "peak_rss_mb": round(int(maxrss_kb) / 1024, 1)}


def make_synthetic_1b(folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model.save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic-1b", action="store_true", help="also measure a random ~1B fp16 llama")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "detect_memory.json")
    args = parser.parse_args()

    from swgguf.default_model import default_model_path
    from swgguf.formats.files import write_json

    swgguf = [sys.executable, "-m", "swgguf.cli", "detect"]
    common = ["--threads", str(args.threads)]
    smol = str(default_model_path())
    runs = []
    for verify in (False, True):
        for low_mem in (False, True):
            argv = [*swgguf, smol, *common, *([] if verify else ["--no-verify"]), *(["--low-mem"] if low_mem else [])]
            r = measure(argv)
            r.update(model="SmolLM2-135M-Instruct Q4_1 GGUF", low_mem=low_mem, verify=verify)
            print(json.dumps(r), flush=True)
            runs.append(r)
    if args.synthetic_1b:
        with tempfile.TemporaryDirectory(prefix="swgguf-bench-") as tmp:
            folder = make_synthetic_1b(Path(tmp) / "llama-1b")
            size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            for low_mem in (False, True):
                # a random model has no tokenizer, so it runs detection on fixed token ids
                # (detect_ids below) instead of through the CLI
                r = measure([sys.executable, str(Path(__file__).resolve()), "--_detect-ids", str(folder),
                             *(["--_low-mem"] if low_mem else []), "--threads", str(args.threads)])
                r.update(model=f"random llama ~1B fp16 safetensors ({size / 2**30:.2f} GiB)", low_mem=low_mem,
                         verify=False)
                print(json.dumps(r), flush=True)
                runs.append(r)
    result = {
        "benchmark": "swgguf detect peak RSS, normal vs --low-mem",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out)
    print(f"wrote {args.out}")
    return 0


def detect_ids(folder: str, low_mem: bool, threads: int) -> int:
    """Detection on a tokenizer-less model (the random 1B): the prompt is fixed token ids."""
    import torch

    from swgguf.detection import detect_super_weights
    from swgguf.pytorch import load_model

    torch.set_num_threads(threads)
    _, model = load_model(folder, low_mem=low_mem)
    result = detect_super_weights(model, torch.arange(100, 110))
    print(f"{len(result.candidates)} candidates, {result.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    if "--_detect-ids" in sys.argv:
        i = sys.argv.index("--_detect-ids")
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
        sys.exit(detect_ids(sys.argv[i + 1], "--_low-mem" in sys.argv, threads))
    sys.exit(main())
