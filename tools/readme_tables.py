"""Render the README's benchmark tables from bench/results/*.json.

The README holds blocks ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``;
this tool rewrites each block from the committed JSON, so no number in the
README is typed by hand. ``--check`` exits 1 when the README is stale (a test
runs it).

  python tools/readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def runtime_overhead() -> str:
    lines = []
    for device in ("cpu", "cuda"):
        d = _load(f"runtime_overhead_{device}.json")
        if d is None:
            lines.append(f"*{device.upper()}: not measured yet (`python bench/runtime_overhead.py --device {device}`).*\n")
            continue
        machine = d["machine"].get("gpu") or d["machine"].get("cpu", "")
        model = d["model"]["name"] + (f" ({d['model']['params'] / 1e9:.2f} B params)" if "params" in d["model"] else "")
        lines.append(f"{device.upper()}: {model}, {d['model']['type']}, {machine}; "
                     f"median of {d['reps']}; `{d['command']}`\n")
        lines.append(f"| build | file | sidecar cols/tensor | tensors | sidecar KiB | pp{d['n_prompt']} tok/s | "
                     f"tg{d['n_gen']} tok/s | pp overhead | tg overhead |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in d["results"]:
            o = d["overhead_pct"].get(r["file"]) if r["build"] == "patched" else None
            lines.append(f"| {r['build']} | {r['file']} | {r['sidecar_cols']} | {r['sidecar_tensors']} | "
                         f"{r['sidecar_bytes'] / 1024:.0f} | {r['pp_tps']:.0f} | {r['tg_tps']:.1f} | "
                         + (f"{o['pp_pct']:+.1f}% | {o['tg_pct']:+.1f}% |" if o else "- | - |"))
        t = d["targets_pct"]
        lines.append(f"\nTargets: ≤ {t['pp_pct']:g}% (pp) and ≤ {t['tg_pct']:g}% (tg) slower than the plain file.\n")
    return "\n".join(lines)


def detect_memory() -> str:
    d = _load("detect_memory.json")
    if d is None:
        return "*not measured yet (`python bench/detect_memory.py`).*"
    lines = [f"`{d['command']}` ({d['machine']['cpus']} cores)\n",
             "| model | verify | mode | seconds | peak RSS MB |", "|---|---|---|---|---|"]
    for r in d["runs"]:
        lines.append(f"| {r['model']} | {'yes' if r.get('verify') else 'no'} | "
                     f"{'--low-mem' if r['low_mem'] else 'normal'} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "runtime_overhead": runtime_overhead,
    "detect_memory": detect_memory,
}


def render(readme: str) -> str:
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        readme = pattern.sub(lambda m: m.group(1) + fn().rstrip() + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date")
    args = parser.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md tables are stale: run python tools/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
