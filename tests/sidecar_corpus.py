"""The shared corpus of crafted sidecar files (docs/sidecar.md, "Validity").

Each file is a tiny synthetic llama model (swgguf.synthetic), quantized to Q8_0 by
llama.cpp's own quantizer, plus sidecar tensors and keys written with
``gguf_io.copy_gguf`` (no validation on the way, so the bytes reach the readers as
anyone could write them). The runtime's loader and the Python reader must both
accept or both refuse every file, and agree with the verdict listed here
(tests/test_sidecar_corpus.py); the fuzzer (tests/fuzz) starts from these files.

    python -m tests.sidecar_corpus DIR     # write the corpus to DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from swgguf import synthetic
from swgguf.formats import gguf_io, sidecar
from swgguf.runtime.quantize import quantize

CFG = synthetic.LlamaConfig(n_vocab=32, n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=64, n_ctx=64)
BASE = "blk.0.ffn_down"  # numpy (n_out, n_in) = (32, 64), Q8_0
N_OUT, N_IN = 32, 64
V = gguf.GGUFValueType
Q8_0 = int(gguf.GGMLQuantizationType.Q8_0)
ACCEPT, REFUSE = True, False

Tensors = dict[str, np.ndarray]
Kv = dict[str, object]


def good_tensors(base: str = BASE, n_out: int = N_OUT) -> Tensors:
    return {
        base + ".swg_cols": np.array([3, 17], np.int32),
        base + ".swg_resid": np.full((n_out, 2), 0.01, np.float16),
        base + ".swg_sw_pos": np.array([[5, 17]], np.int32),
        base + ".swg_sw_val": np.array([4.0], np.float16),
    }


def good_kv(weights: dict[str, gguf.ReaderTensor], bases: tuple[str, ...] = (BASE,)) -> Kv:
    return sidecar.sidecar_keys(bases, weights)


class Corpus:
    """Writes the crafted files into one folder; ``cases`` maps name -> (path, expected verdict)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.cases: dict[str, tuple[Path, bool]] = {}
        w = synthetic.random_weights(CFG, seed=1)
        self.plain = self._quantized("plain", w)
        self.weights = {t.name: t for t in gguf_io.open_gguf(self.plain).tensors}
        self.kv = good_kv(self.weights)
        tied = {k: v for k, v in w.items() if k != "output.weight"}
        self.tied = self._quantized("tied", tied)

    def _quantized(self, name: str, w: dict[str, np.ndarray]) -> Path:
        f16 = synthetic.write_gguf(self.out / f"base-{name}-f16.gguf", CFG, w, dtype=np.float16)
        q8 = quantize(f16, self.out / f"base-{name}-q8_0.gguf", "Q8_0", pure=True)
        f16.unlink()
        return q8

    def add(self, name: str, verdict: bool, tensors: Tensors | None = None, kv: Kv | None = None,
            drop: tuple[str, ...] = (), src: Path | None = None) -> Path:
        """A crafted file: the good sidecar with ``tensors`` replacing/adding, ``drop`` removed
        and ``kv`` overriding the good keys (a value None leaves the key out)."""
        t = {**good_tensors(), **(tensors or {})}
        for n in drop:
            t.pop(n)
        k = {**self.kv, **(kv or {})}
        path = self.out / f"{len(self.cases):02d}-{name}.gguf"
        gguf_io.copy_gguf(src or self.plain, path, add=list(t.items()),
                          kv={key: v for key, v in k.items() if v is not None})
        self.cases[name] = (path, verdict)
        return path

    def derived(self, name: str, verdict: bool, make: Callable[[Path], Path]) -> None:
        """A file made from the good one by a real tool (llama-quantize)."""
        self.cases[name] = (make(self.out / f"{len(self.cases):02d}-{name}.gguf"), verdict)


def key_type_cases(c: Corpus) -> None:
    """Keys stored with a type the format does not name (issue 12, case 4)."""
    for vtype, value in ((V.UINT64, 2), (V.INT32, 2), (V.UINT8, 2), (V.BOOL, True), (V.FLOAT32, 2.0)):
        c.add(f"version-{vtype.name}", REFUSE, kv={sidecar.KEY_VERSION: (value, vtype)})
    c.add("version-3", REFUSE, kv={sidecar.KEY_VERSION: (3, V.UINT32)})
    path = c.out / f"{len(c.cases):02d}-version-without-sidecar.gguf"
    c.cases["version-without-sidecar"] = (
        gguf_io.copy_gguf(c.plain, path, kv={sidecar.KEY_VERSION: (2, V.UINT32)}), REFUSE)
    for vtype, value in ((V.INT32, Q8_0), (V.FLOAT32, float(Q8_0))):
        c.add(f"weight-types-{vtype.name}", REFUSE, kv={sidecar.KEY_WEIGHT_TYPES: ([value], vtype)})
    c.add("weight-types-STRING", REFUSE, kv={sidecar.KEY_WEIGHT_TYPES: ["Q8_0"]})
    c.add("weight-type-9999", REFUSE, kv={sidecar.KEY_WEIGHT_TYPES: ([9999], V.UINT32)})
    c.add("tensors-not-strings", REFUSE, kv={sidecar.KEY_TENSORS: ([1], V.UINT32)})
    hashes = c.kv[sidecar.KEY_WEIGHT_HASHES][0]  # type: ignore[index]
    c.add("tensors-listed-twice", REFUSE, kv={sidecar.KEY_TENSORS: [BASE, BASE],
                                              sidecar.KEY_WEIGHT_TYPES: ([Q8_0, Q8_0], V.UINT32),
                                              sidecar.KEY_WEIGHT_HASHES: (hashes * 2, V.UINT64)})
    c.add("not-listed", REFUSE, kv={sidecar.KEY_TENSORS: ["blk.0.ffn_up"]})


def hash_cases(c: Corpus) -> None:
    """Version 2 binds a sidecar to its weight's bytes (issue 12, case 3)."""
    (h,) = c.kv[sidecar.KEY_WEIGHT_HASHES][0]  # type: ignore[index]
    c.add("v1-unhashed", ACCEPT, kv={sidecar.KEY_VERSION: (1, V.UINT32), sidecar.KEY_WEIGHT_HASHES: None})
    c.add("hashes-missing", REFUSE, kv={sidecar.KEY_WEIGHT_HASHES: None})
    c.add("hashes-INT64", REFUSE, kv={sidecar.KEY_WEIGHT_HASHES: ([h - (1 << 64) if h >= 1 << 63 else h], V.INT64)})
    c.add("hashes-too-many", REFUSE, kv={sidecar.KEY_WEIGHT_HASHES: ([h, h], V.UINT64)})
    c.add("hash-mismatch", REFUSE, kv={sidecar.KEY_WEIGHT_HASHES: ([h ^ 1], V.UINT64)})
    good = c.cases["good"][0]
    # llama-quantize copies the sidecar tensors and keys unchanged: a detour through Q4_0
    # leaves ffn_down Q8_0 again, with other bytes (only the hash sees it); Q4_0 itself
    # changes the type; a same-type pass rewrites a one-scalar swg_sw_pos as 1-D ne [2]
    q4 = quantize(good, c.out / "base-q4_0.gguf", "Q4_0", pure=True, allow_requantize=True)
    c.derived("requantized-q4_0", REFUSE, lambda p: q4.rename(p))
    c.derived("requantized-back-to-q8_0", REFUSE,
              lambda p: quantize(c.cases["requantized-q4_0"][0], p, "Q8_0", pure=True, allow_requantize=True))
    c.derived("requantized-same-type", ACCEPT, lambda p: quantize(good, p, "Q8_0", pure=True, allow_requantize=True))


def shape_cases(c: Corpus) -> None:
    """Dimension conventions (ne, trailing 1s) and which weights may carry a sidecar."""
    c.add("sw-pos-1d", ACCEPT, {BASE + ".swg_sw_pos": np.array([5, 17], np.int32)})
    c.add("resid-3d-trailing-1", ACCEPT, {BASE + ".swg_resid": np.full((1, N_OUT, 2), 0.01, np.float16)})
    c.add("cols-2d-trailing-1", ACCEPT, {BASE + ".swg_cols": np.array([[3, 17]], np.int32)})
    c.add("resid-transposed", REFUSE, {BASE + ".swg_resid": np.zeros((2, N_OUT), np.float16)})
    c.add("sw-pos-empty", REFUSE, {BASE + ".swg_sw_pos": np.zeros((0, 2), np.int32),
                                   BASE + ".swg_sw_val": np.zeros((0,), np.float16)})
    norm = "output_norm"
    c.add("on-1d-output-norm", REFUSE, {f"{norm}.swg_cols": np.array([3], np.int32),
                                        f"{norm}.swg_resid": np.zeros((1, 1), np.float16)},
          drop=(BASE + ".swg_cols", BASE + ".swg_resid", BASE + ".swg_sw_pos", BASE + ".swg_sw_val"),
          kv=good_kv(c.weights, (norm,)))
    tensors = {k.replace(BASE, "token_embd"): v for k, v in good_tensors("token_embd", CFG.n_vocab).items()}
    only_embd = tuple(good_tensors())
    c.add("on-token-embd", REFUSE, tensors, drop=only_embd, kv=good_kv(c.weights, ("token_embd",)))
    tied = {t.name: t for t in gguf_io.open_gguf(c.tied).tensors}
    c.add("on-tied-token-embd", REFUSE, tensors, drop=only_embd, src=c.tied, kv=good_kv(tied, ("token_embd",)))


def value_cases(c: Corpus) -> None:
    """The classic content checks."""
    c.add("column-out-of-range", REFUSE, {BASE + ".swg_cols": np.array([3, N_IN], np.int32)})
    c.add("column-negative", REFUSE, {BASE + ".swg_cols": np.array([-1, 17], np.int32)})
    c.add("columns-not-increasing", REFUSE, {BASE + ".swg_cols": np.array([17, 3], np.int32)})
    c.add("cols-wrong-type", REFUSE, {BASE + ".swg_cols": np.array([3, 17], np.float32)})
    c.add("resid-f32", REFUSE, {BASE + ".swg_resid": np.zeros((N_OUT, 2), np.float32)})
    c.add("resid-non-finite", REFUSE, {BASE + ".swg_resid": np.full((N_OUT, 2), np.inf, np.float16)})
    c.add("sw-val-nan", REFUSE, {BASE + ".swg_sw_val": np.array([np.nan], np.float16)})
    c.add("sw-pos-without-val", REFUSE, drop=(BASE + ".swg_sw_val",))
    c.add("resid-without-cols", REFUSE, drop=(BASE + ".swg_cols",))
    c.add("sw-row-out-of-range", REFUSE, {BASE + ".swg_sw_pos": np.array([[N_OUT, 17]], np.int32)})
    c.add("sw-column-not-protected", REFUSE, {BASE + ".swg_sw_pos": np.array([[5, 4]], np.int32)})
    c.add("sw-position-twice", REFUSE, {BASE + ".swg_sw_pos": np.array([[5, 17], [5, 17]], np.int32),
                                        BASE + ".swg_sw_val": np.array([4.0, 4.0], np.float16)})
    c.add("weight-missing", REFUSE, {"blk.7.ffn_down.swg_cols": np.array([1], np.int32),
                                     "blk.7.ffn_down.swg_resid": np.zeros((N_OUT, 1), np.float16)},
          kv={sidecar.KEY_TENSORS: [BASE, "blk.7.ffn_down"],
              sidecar.KEY_WEIGHT_TYPES: ([Q8_0, Q8_0], V.UINT32),
              sidecar.KEY_WEIGHT_HASHES: (c.kv[sidecar.KEY_WEIGHT_HASHES][0] * 2, V.UINT64)})  # type: ignore[index]


def write_corpus(out: Path) -> dict[str, tuple[Path, bool]]:
    """Write every crafted file into ``out``; name -> (path, the verdict both readers must give)."""
    out.mkdir(parents=True, exist_ok=True)
    c = Corpus(out)
    c.add("good", ACCEPT)
    key_type_cases(c)
    hash_cases(c)
    shape_cases(c)
    value_cases(c)
    return c.cases


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.sidecar_corpus")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for name, (path, verdict) in write_corpus(args.out).items():
        print(f"{'accept' if verdict else 'refuse'}  {path.name}")
    for base in args.out.glob("base-*.gguf"):
        base.unlink()


if __name__ == "__main__":
    main()
