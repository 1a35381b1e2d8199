"""The super-weight paper's experiments on a GGUF file, in llama.cpp.

  swgguf ablate FILE [--manifest m.json] [--text FILE] [--scale 0,0.5,1,1.5,2,3]
                [--restore-sa] [--stopwords N] [--json out.json] [--plot out.png]

* prune: perplexity with the super weights zeroed vs the original;
* scale sweep: perplexity and KL(original || scaled) for each alpha, where each
  super weight w becomes alpha * w;
* restore SA (``--restore-sa``): super weights zeroed everywhere but the first
  position of each window computed with them, which puts the super activation
  back where it lives (the paper's "Prune SW, +SA" row);
* stop words (``--stopwords N``): mean next-token probability of the text's most
  common tokens over N prompts, with and without the super weights.

Scaling goes through the runtime's ``SWGGUF_SW_SCALE``, which applies every
super-weight scalar of a file's sidecar as alpha * w. A file whose sidecar does
not carry the super weights (or that has none) gets a temporary copy with a
sidecar of just those scalars (residual zero, value = what the file holds), so
alpha = 1 is the file exactly. Details and measurements: docs/ablate.md.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import math
import os
import re
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import gguf
import numpy as np

from . import __version__, textdata
from .errors import SwggufError
from .ppl import (Evaluator, KldStats, ModelSpec, PplStats, Progress, check_inputs,
                  make_progress, publish, run_windows, text_windows, write_json_atomic)
from .runtime import llm
from .sidecar import (KEY_TENSORS, KEY_VERSION, KEY_WEIGHT_TYPES, SIDECAR_VERSION, WEIGHT_SUFFIX, Sidecar,
                      copy_gguf, sidecar_base, sidecars_from_reader)
from .textdata import Text, Window

DEFAULT_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_CHUNKS = 32
N_STOPWORDS = 10  # the most common tokens of the text
PROMPT_MIN = 16  # a prompt is a prefix of a window at least this long...
PROMPT_STEP = 8  # ...ending every PROMPT_STEP tokens
SA_POSITIONS = 1  # positions of each window computed with the super weights under --restore-sa
_SCALARS_LOG = re.compile(r"swgguf: (\d+) sidecars \((\d+) super-weight scalars\).*-> (applied|ignored)")


# --- which super weights, and a file that can scale them -----------------------------------


@dataclass(frozen=True)
class SuperWeightSite:
    tensor: str  # GGUF weight name, e.g. blk.11.ffn_down.weight
    row: int
    col: int
    value: float  # what the file applies at (row, col): dequantized weight + sidecar residual
    value_manifest: float | None = None
    source: str = "sidecar"  # "sidecar", "manifest" or "manifest candidates"

    @property
    def base(self) -> str:
        return self.tensor[: -len(WEIGHT_SUFFIX)]


def _reader(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise SwggufError("no such file", path) from None
    except Exception as err:  # gguf-py raises ValueError/struct.error on bad files
        raise SwggufError(f"not a readable GGUF file ({err})", path) from None


def _applied_value(t, sidecar: Sidecar | None, row: int, col: int) -> float:
    """The weight the runtime uses at (row, col): dequantized row (one row only: cheap
    for large tensors) plus the sidecar's residual where that column is protected."""
    w = float(gguf.quants.dequantize(np.asarray(t.data)[row: row + 1], t.tensor_type).reshape(-1)[col])
    if sidecar is not None:
        k = np.searchsorted(sidecar.cols, col)
        if k < sidecar.n_cols and sidecar.cols[k] == col:
            w += float(sidecar.resid[row, k])
    return w


def find_super_weights(path: str | Path, manifest=None) -> list[SuperWeightSite]:
    """The super weights of ``path``: from ``manifest`` (a swgguf.manifest.Manifest) if
    given, else the super-weight scalars of the file's sidecars."""
    path = Path(path)
    reader = _reader(path)
    sidecars = sidecars_from_reader(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    if manifest is None:
        sites = [SuperWeightSite(base + WEIGHT_SUFFIX, int(r), int(c), _applied_value(
            tensors[base + WEIGHT_SUFFIX], sc, int(r), int(c)), source="sidecar")
            for base, sc in sidecars.items() for r, c in sc.sw_pos]
        if not sites:
            raise SwggufError("no super weights known for this file: it has no sidecar with super-weight "
                              "scalars and no --manifest was given; run `swgguf detect FILE --out manifest.json` "
                              "(on it or on its source model) first and pass --manifest manifest.json", path)
        return sites
    chosen, source = manifest.super_weights, "manifest"
    if not chosen:
        chosen, source = manifest.candidates, "manifest candidates"
    if not chosen:
        raise SwggufError("the manifest lists no super weight (nor candidate): nothing to ablate; "
                          "run `swgguf detect` again", path)
    out = []
    for sw in chosen:
        t = tensors.get(sw.tensor)
        if t is None:
            raise SwggufError(f"the manifest's super weight is in '{sw.tensor}', which this file does not "
                              "have: the manifest is for another model", path)
        n_out, n_in = (int(d) for d in reversed(t.shape))
        if not (0 <= sw.row < n_out and 0 <= sw.col < n_in):
            raise SwggufError(f"the manifest's super weight [{sw.row}, {sw.col}] is outside '{sw.tensor}' "
                              f"({n_out} x {n_in}): the manifest is for another model", path)
        value = _applied_value(t, sidecars.get(sw.tensor[: -len(WEIGHT_SUFFIX)]), sw.row, sw.col)
        out.append(SuperWeightSite(sw.tensor, sw.row, sw.col, value, float(sw.value), source))
    return out


def carries_scalars(path: str | Path, sites: Sequence[SuperWeightSite]) -> bool:
    """Whether the file's sidecars hold a super-weight scalar at every site (and no other)."""
    sidecars = sidecars_from_reader(_reader(Path(path)), path)
    have = {(b, int(r), int(c)) for b, sc in sidecars.items() for r, c in sc.sw_pos}
    return have == {(s.base, s.row, s.col) for s in sites}


def with_scalars(sidecar: Sidecar | None, shape: tuple[int, int], sites: Sequence[SuperWeightSite]) -> Sidecar:
    """``sidecar`` (or an empty one) with super-weight scalars at ``sites`` and nothing else
    changed: a new column's residual is zero, each scalar's value is what the file applies,
    so at SWGGUF_SW_SCALE=1 the runtime computes exactly what it computed before."""
    base = sites[0].base
    old_cols = sidecar.cols if sidecar is not None else np.zeros(0, np.int32)
    cols = np.union1d(old_cols, [s.col for s in sites]).astype(np.int32)
    resid = np.zeros((shape[0], cols.size), np.float16)
    if sidecar is not None:
        resid[:, np.searchsorted(cols, old_cols)] = sidecar.resid
    # keep only the sites' scalars: SWGGUF_SW_SCALE scales all scalars of a file
    return Sidecar(base=base, shape=shape, cols=cols, resid=resid,
                   sw_pos=np.array([[s.row, s.col] for s in sites], np.int32).reshape(-1, 2),
                   sw_val=np.array([s.value for s in sites], np.float16))


def write_scalar_copy(src: str | Path, dst: str | Path, sites: Sequence[SuperWeightSite]) -> Path:
    """Copy of ``src`` whose sidecars carry exactly ``sites`` as super-weight scalars."""
    src = Path(src)
    reader = _reader(src)
    existing = sidecars_from_reader(reader, src)
    tensors = {t.name: t for t in reader.tensors}
    by_base: dict[str, list[SuperWeightSite]] = {}
    for s in sites:
        by_base.setdefault(s.base, []).append(s)
    changed: dict[str, Sidecar] = {}
    for base, sc in existing.items():  # scalars elsewhere would be scaled too: drop them
        if sc.n_scalars and base not in by_base:
            changed[base] = Sidecar(base, sc.shape, sc.cols, sc.resid)
    for base, group in by_base.items():
        t = tensors[base + WEIGHT_SUFFIX]
        shape = tuple(int(d) for d in reversed(t.shape))
        changed[base] = with_scalars(existing.get(base), shape, group)  # type: ignore[arg-type]
    for sc in changed.values():
        sc.validate()
    final = {**existing, **changed}
    filtered = copy.copy(reader)  # the same file, without the sidecar tensors being replaced
    filtered.tensors = [t for t in reader.tensors if sidecar_base(t.name) not in changed]
    kv = {KEY_VERSION: (SIDECAR_VERSION, gguf.GGUFValueType.UINT32),
          KEY_TENSORS: list(final),
          KEY_WEIGHT_TYPES: ([int(tensors[b + WEIGHT_SUFFIX].tensor_type) for b in final],
                             gguf.GGUFValueType.UINT32)}
    extra = [t for sc in changed.values() for t in sc.tensors()]
    return copy_gguf(filtered, dst, extra, kv)


def pruned_leftover(driver: str | Path, sites: Sequence[SuperWeightSite]) -> float:
    """Largest |w| left at alpha = 0: the runtime subtracts the float16 scalar stored in
    the driver's sidecar from the weight it applies."""
    sidecars = sidecars_from_reader(_reader(Path(driver)), driver)
    left = 0.0
    for s in sites:
        sc = sidecars[s.base]
        k = next(i for i, (r, c) in enumerate(sc.sw_pos) if (int(r), int(c)) == (s.row, s.col))
        left = max(left, abs(s.value - float(sc.sw_val[k])))
    return left


# --- evaluators ------------------------------------------------------------------------------


def _check_scalars(ev: Evaluator, expected: int) -> None:
    """The runtime's own log line says how many scalars it applies; trust nothing less."""
    for line in reversed(llm.swgguf_log_lines()):
        m = _SCALARS_LOG.search(line)
        if m:
            if int(m.group(2)) == expected and m.group(3) == "applied":
                return
            raise SwggufError(f"the runtime reports {m.group(2)} super-weight scalars ({m.group(3)}), "
                              f"{expected} expected", ev.spec.path)
    raise SwggufError("the runtime did not report its sidecars: is the patched runtime installed? "
                      "(`swgguf runtime build`)", ev.spec.path)


def scaled(driver: Path, alpha: float, options: llm.LoadOptions, n_scalars: int) -> Evaluator:
    ev = Evaluator(ModelSpec(driver, f"α={alpha:g}", {"SWGGUF_SW_SCALE": repr(float(alpha))}), options)
    _check_scalars(ev, n_scalars)
    return ev


class RestoreSA(Evaluator):
    """Super weights zeroed, except that the first ``n_prefix`` positions of every window
    are computed by the original model: their KV cache (and logits) is copied into the
    pruned context, which then evaluates the rest. The super activation lives at the
    first position (docs/ablate.md), so this restores it and nothing else: every other
    position's own computation runs without the super weights."""

    def __init__(self, pruned: Evaluator, original: Evaluator, n_prefix: int = SA_POSITIONS) -> None:
        self.spec = ModelSpec(pruned.spec.path, "α=0 +SA", pruned.spec.env)
        self.llama, self.original = pruned.llama, original.llama
        self._owned = (pruned, original)
        self.n_prefix = n_prefix
        self.seconds, self.tokens = 0.0, 0

    def _logits(self, tokens: Sequence[int]) -> np.ndarray:
        llama_cpp = llm._import_llama_cpp()
        k = self.n_prefix
        src, dst = self.original, self.llama
        src.reset()
        src.eval(list(tokens[:k]))
        size = llama_cpp.llama_state_seq_get_size(src._ctx.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        got = llama_cpp.llama_state_seq_get_data(src._ctx.ctx, buf, size, 0)
        dst.reset()
        dst._ctx.kv_cache_seq_rm(-1, 0, -1)
        if got == 0 or llama_cpp.llama_state_seq_set_data(dst._ctx.ctx, buf, got, 0) == 0:
            raise SwggufError("could not copy the KV cache between contexts", self.spec.path)
        dst.n_tokens = k
        dst.input_ids[:k] = tokens[:k]
        dst.scores[:k] = src.scores[:k]
        dst.eval(list(tokens[k:]))
        return np.array(dst.scores[: len(tokens)], dtype=np.float32)

    def close(self) -> None:
        for e in self._owned:
            e.close()


# --- experiments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalePoint:
    scale: float
    ppl: PplStats
    kld: KldStats


@dataclass(frozen=True)
class RestoreResult:
    ppl: PplStats
    kld: KldStats
    recovered: float  # share of the loss increase of pruning that restoring the SA takes back
    positions: int


@dataclass(frozen=True)
class StopwordRow:
    token: int
    text: str
    count: int  # occurrences among the text's scored tokens
    p_original: float
    p_pruned: float

    @property
    def factor(self) -> float:
        return self.p_pruned / self.p_original if self.p_original > 0 else float("inf")


@dataclass
class Ablation:
    file: str
    driver: str  # "file" (its sidecar carries the scalars) or "temporary copy"
    sites: list[SuperWeightSite]
    text: Text
    ctx: int
    n_windows: int
    original: PplStats
    scale: list[ScalePoint]
    restore_sa: RestoreResult | None = None
    stopwords: list[StopwordRow] | None = None
    n_prompts: int = 0
    leftover: float = 0.0

    def point(self, alpha: float) -> ScalePoint:
        return next(p for p in self.scale if p.scale == alpha)

    @property
    def prune_ratio(self) -> float:
        return self.point(0.0).ppl.ppl / self.original.ppl

    def as_dict(self) -> dict:
        pruned = self.point(0.0)
        d = {
            "swgguf_version": __version__,
            "file": self.file, "driver": self.driver,
            "super_weights": [asdict(s) for s in self.sites],
            "pruned_leftover": self.leftover,
            "text": {"source": self.text.label, "sha256": self.text.sha256},
            "ctx": self.ctx, "windows": self.n_windows, "n_tokens": self.original.n_tokens,
            "original": {"ppl": self.original.ppl, "ppl_stderr": self.original.stderr},
            "prune": {"ppl": pruned.ppl.ppl, "ppl_stderr": pruned.ppl.stderr, "ratio": self.prune_ratio,
                      "kld": pruned.kld.mean},
            "scale": [{"scale": p.scale, "ppl": p.ppl.ppl, "ppl_stderr": p.ppl.stderr, "kld": p.kld.mean,
                       "kld_stderr": p.kld.stderr, "kld_p99": p.kld.p99, "top1": p.kld.top1}
                      for p in self.scale],
            "restore_sa": None, "stopwords": None,
        }
        if self.restore_sa is not None:
            r = self.restore_sa
            d["restore_sa"] = {"ppl": r.ppl.ppl, "ppl_stderr": r.ppl.stderr, "kld": r.kld.mean,
                               "recovered": r.recovered, "positions_restored": r.positions,
                               "definition": "recovered = (NLL_pruned - NLL_+SA) / (NLL_pruned - NLL_original)"}
        if self.stopwords is not None:
            d["stopwords"] = {"n_prompts": self.n_prompts, "tokens": [
                {"token": s.token, "text": s.text, "count": s.count, "p_original": s.p_original,
                 "p_pruned": s.p_pruned, "factor": s.factor} for s in self.stopwords]}
        return d


def shown(token_text: str) -> str:
    """A token as text, its spaces and line breaks visible: ' the' -> '␣the'."""
    return token_text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def prompt_positions(window_len: int) -> list[int]:
    """Last positions of the prompts cut from one window (prefixes of PROMPT_MIN.. tokens)."""
    return list(range(PROMPT_MIN - 1, window_len - 1, PROMPT_STEP))


def common_tokens(wins: Sequence[Window], k: int = N_STOPWORDS) -> list[tuple[int, int]]:
    """The ``k`` most common scored tokens of ``wins``: (token, count)."""
    counts = Counter(t for w in wins for t in w.targets)
    return counts.most_common(k)


def _probabilities(logits: np.ndarray, rows: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """p(token | prompt) (len(rows), len(tokens)) from float32 logits, float64 softmax."""
    x = logits[list(rows)].astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return np.exp(x[:, list(tokens)] - lse)


def stopword_probabilities(original: Evaluator, pruned: Evaluator, wins: Sequence[Window], n_prompts: int,
                           tokens: Sequence[int], progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean next-token probability of ``tokens`` over ``n_prompts`` prompts for both models."""
    per_window = len(prompt_positions(len(wins[0].tokens)))
    if per_window == 0:
        raise SwggufError(f"--ctx is too short for stop-word prompts (at least {PROMPT_MIN + 1} tokens)")
    need = math.ceil(n_prompts / per_window)
    if need > len(wins):
        raise SwggufError(f"{n_prompts} prompts need {need} windows of the text, it has {len(wins)}: "
                          "use a longer text or fewer --stopwords prompts")
    sums = np.zeros((2, len(tokens)))
    left = n_prompts
    for i, w in enumerate(wins[:need]):
        rows = prompt_positions(len(w.tokens))[:left]
        for j, ev in enumerate((original, pruned)):
            sums[j] += _probabilities(ev.logits(w.tokens), rows, tokens).sum(axis=0)
            if progress:
                progress(2 * i + j + 1, 2 * need, f"stop words {ev.name}")
        left -= len(rows)
    return sums[0] / n_prompts, sums[1] / n_prompts, n_prompts


def ablate(path: str | Path, manifest=None, text: Text | None = None, ctx: int = 512,
           chunks: int | None = DEFAULT_CHUNKS, scales: Sequence[float] = DEFAULT_SCALES,
           restore_sa: bool = False, stopwords: int | None = None, n_threads: int | None = None,
           workdir: str | Path | None = None, progress: Progress | None = None) -> Ablation:
    """Run the experiments on ``path``; alpha = 0 (pruning) is always among the scales."""
    path = Path(path)
    check_inputs([ModelSpec(path)])
    if stopwords is not None and stopwords < 1:
        raise SwggufError(f"--stopwords must be at least 1 prompt, got {stopwords}")
    scales = sorted({float(a) for a in scales} | {0.0})
    if not all(math.isfinite(a) for a in scales):
        raise SwggufError(f"--scale values must be finite numbers, got {scales}")
    text = text or textdata.embedded_corpus()
    sites = find_super_weights(path, manifest)
    wins = text_windows(path, text, ctx, chunks, llama_compat=False)
    options = llm.LoadOptions(n_ctx=ctx, n_batch=ctx, n_threads=n_threads)
    with ExitStack() as stack:
        driver, how = path, "file"
        if not carries_scalars(path, sites):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swgguf-ablate-", dir=workdir)))
            driver, how = write_scalar_copy(path, tmp / path.name, sites), "temporary copy"
        original = Evaluator(ModelSpec(path, "original"), options)
        stack.callback(original.close)
        models = [scaled(driver, a, options, len(sites)) for a in scales]
        for m in models:
            stack.callback(m.close)
        evaluators: list[Evaluator] = list(models)
        if restore_sa:
            restorer = RestoreSA(scaled(driver, 0.0, options, len(sites)),
                                 Evaluator(ModelSpec(path, "original (SA prefix)"), options))
            stack.callback(restorer.close)
            evaluators.append(restorer)
        ppls, klds, ref_ppl = run_windows(evaluators, wins, original, progress)
        points = [ScalePoint(a, p, k) for a, p, k in zip(scales, ppls, klds)]
        result = Ablation(str(path), how, sites, text, ctx, len(wins), ref_ppl, points,
                          leftover=pruned_leftover(driver, sites))
        if restore_sa:
            pruned = result.point(0.0).ppl
            p, k = ppls[-1], klds[-1]
            gap = pruned.nll - ref_ppl.nll
            result.restore_sa = RestoreResult(p, k, (pruned.nll - p.nll) / gap if gap else float("nan"),
                                              SA_POSITIONS)
        if stopwords:
            common = common_tokens(wins)
            ids = [t for t, _ in common]
            all_wins = text_windows(path, text, ctx, None, llama_compat=False)
            p_orig, p_pruned, n = stopword_probabilities(original, models[scales.index(0.0)], all_wins,
                                                         stopwords, ids, progress)
            result.stopwords = [StopwordRow(t, textdata.token_text(path, t), c, float(a), float(b))
                                for (t, c), a, b in zip(common, p_orig, p_pruned)]
            result.n_prompts = n
    return result


# --- plot ------------------------------------------------------------------------------------------


def plot(result: Ablation, out: str | Path) -> Path:
    """PNG: perplexity and KLD against alpha; stop-word probabilities with and without."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if not out.parent.is_dir():
        raise SwggufError("the output directory does not exist", out.parent)
    panels = 2 if result.stopwords else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    a = [p.scale for p in result.scale]
    ax.errorbar(a, [p.ppl.ppl for p in result.scale], yerr=[p.ppl.stderr for p in result.scale],
                marker="o", color="C0", label="perplexity")
    ax.axhline(result.original.ppl, color="C0", ls=":", lw=1, label="original")
    if result.restore_sa:
        ax.scatter([0.0], [result.restore_sa.ppl.ppl], marker="*", s=120, color="C3", zorder=3,
                   label="α=0 +SA")
    ax.set_yscale("log")
    ax.set_xlabel("super-weight scale α")
    ax.set_ylabel("perplexity")
    ax2 = ax.twinx()
    ax2.plot(a, [p.kld.mean for p in result.scale], marker="s", color="C1", label="KLD vs original")
    ax2.set_ylabel("mean KL(original || scaled), nats")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper center")
    ax.set_title(f"{Path(result.file).name}: super-weight scale")
    if result.stopwords:
        bx = axes[0][1]
        rows = result.stopwords
        x = np.arange(len(rows))
        bx.bar(x - 0.2, [r.p_original for r in rows], 0.4, label="original")
        bx.bar(x + 0.2, [r.p_pruned for r in rows], 0.4, label="super weights zeroed")
        for i, r in enumerate(rows):
            bx.annotate(f"×{r.factor:.1f}", (i + 0.2, r.p_pruned), ha="center", va="bottom", fontsize=7)
        bx.set_xticks(x, [shown(r.text) for r in rows], rotation=45, fontsize=8)
        bx.set_ylabel(f"mean next-token probability ({result.n_prompts} prompts)")
        bx.set_title("stop words")
        bx.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        publish(tmp, out)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out


# --- CLI -------------------------------------------------------------------------------------------


def _scales(spec: str) -> list[float]:
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {spec!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {spec!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage block of the docstring
    parser.add_argument("file", type=Path, metavar="FILE", help="GGUF file")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="super-weight manifest from `swgguf detect` (default: the file's sidecar scalars)")
    parser.add_argument("--text", type=Path, default=None, help="UTF-8 text file; default: the embedded corpus")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS,
                        help=f"windows evaluated per model (default {DEFAULT_CHUNKS})")
    parser.add_argument("--scale", type=_scales, default=list(DEFAULT_SCALES), metavar="A,B,...",
                        help="super-weight scales α (default 0,0.5,1,1.5,2,3; 0 is always run)")
    parser.add_argument("--restore-sa", action="store_true",
                        help="also: super weights zeroed but the super activation restored")
    parser.add_argument("--stopwords", type=int, default=None, metavar="N",
                        help="also: stop-word probabilities over N prompts (the paper used 500)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results as JSON")
    parser.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write a plot")


def _tables(result: Ablation):
    from rich.table import Table

    sites = Table(title="super weights")
    for col in ("tensor", "row", "col", "value in file", "manifest value", "from"):
        sites.add_column(col, justify="left" if col in ("tensor", "from") else "right")
    for s in result.sites:
        sites.add_row(s.tensor, str(s.row), str(s.col), f"{s.value:.4f}",
                      "-" if s.value_manifest is None else f"{s.value_manifest:.4f}", s.source)
    n = result.original.n_tokens
    sweep = Table(title=f"scale sweep: {n} tokens ({result.n_windows} windows of {result.ctx}), {result.text.label}")
    for col in ("α", "PPL", "× original", "KLD mean", "KLD p99", "top-1"):
        sweep.add_column(col, justify="right")
    sweep.add_row("original", f"{result.original.ppl:.3f} ± {result.original.stderr:.3f}", "1.00", "", "", "")
    rows = [(f"{p.scale:g}", p.ppl, p.kld) for p in result.scale]
    if result.restore_sa:
        rows.append(("0 +SA", result.restore_sa.ppl, result.restore_sa.kld))
    for label, p, k in rows:
        sweep.add_row(label, f"{p.ppl:.3f} ± {p.stderr:.3f}", f"{p.ppl / result.original.ppl:.2f}",
                      f"{k.mean:.5f} ± {k.stderr:.5f}", f"{k.p99:.4f}", f"{100 * k.top1:.1f}%")
    tables = [sites, sweep]
    if result.stopwords:
        stop = Table(title=f"stop words: mean next-token probability over {result.n_prompts} prompts")
        for col in ("token", "count", "original", "SW zeroed", "factor"):
            stop.add_column(col, justify="left" if col == "token" else "right")
        for s in result.stopwords:
            stop.add_row(shown(s.text), str(s.count), f"{s.p_original:.4f}", f"{s.p_pruned:.4f}", f"×{s.factor:.2f}")
        tables.append(stop)
    return tables


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    manifest = None
    if args.manifest is not None:
        from .manifest import load_manifest

        manifest = load_manifest(args.manifest)
    text = textdata.load_text(args.text)
    err = Console(stderr=True)
    with make_progress(err) as bar:
        task = bar.add_task("ablate", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"ablate {label}")

        result = ablate(args.file, manifest, text, ctx=args.ctx, chunks=args.chunks, scales=args.scale,
                        restore_sa=args.restore_sa, stopwords=args.stopwords, n_threads=args.threads,
                        progress=progress)
    out = Console()
    for t in _tables(result):
        out.print(t)
    summary = (f"prune: perplexity ×{result.prune_ratio:.2f} with the super weights zeroed "
               f"(|w| left at α=0: {result.leftover:.2g}; scaled via {result.driver})")
    if result.restore_sa:
        summary += f"; restoring the super activation recovers {100 * result.restore_sa.recovered:.1f}% of the loss"
    out.print(summary)
    if args.json is not None:
        write_json_atomic(result.as_dict(), args.json)
    if args.plot is not None:
        plot(result, args.plot)
    return 0
