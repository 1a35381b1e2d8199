"""Where SmolLM2-135M's super activation lives: |down_proj output| of the residual
channel of each super weight, per position, on windows of WikiText-2 (PyTorch, float32,
the dequantized Q4_1 weights).

  python bench/ppl_sa_positions.py [--windows 4] [--ctx 256]

`swgguf ablate --restore-sa` restores the first position of every window; this
measures that the super activation is there and nowhere else. Writes
bench/results/sa_positions_smollm2.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swgguf.default_model import default_model_path  # noqa: E402
from swgguf.evaluate.text import load_text, windows  # noqa: E402
from swgguf.pytorch import down_proj_modules, load_model  # noqa: E402
from swgguf.runtime import vocab  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "wiki.test.tokens"
CHANNEL, LAYERS = 507, (2, 11)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--text", type=Path, default=WIKITEXT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = default_model_path()
    _, model = load_model(path)
    model.eval()
    seen: dict[int, np.ndarray] = {}
    mods = down_proj_modules(model)
    for layer in LAYERS:
        mods[layer].register_forward_hook(
            lambda m, i, o, layer=layer: seen.__setitem__(layer, o[0, :, CHANNEL].detach().numpy().copy()))
    text = load_text(args.text)
    wins = windows(vocab.tokenize(path, text.content), args.ctx, vocab.bos_token(path), args.windows)
    rows = []
    for k, w in enumerate(wins):
        with torch.no_grad():
            model(torch.tensor([w.tokens]))
        for layer in LAYERS:
            a = np.abs(seen[layer])
            rest = np.delete(a, 0)
            rows.append({"window": k, "layer": layer, "position_0": float(seen[layer][0]),
                         "max_elsewhere": float(rest.max()), "argmax_elsewhere": int(rest.argmax()) + 1,
                         "median": float(np.median(a)), "ratio_pos0_to_max_elsewhere": float(a[0] / rest.max())})
            print(rows[-1], flush=True)
    out = {"model": path.name, "channel": CHANNEL, "ctx": args.ctx, "text": text.label, "rows": rows}
    (ROOT / "bench" / "results" / "sa_positions_smollm2.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
