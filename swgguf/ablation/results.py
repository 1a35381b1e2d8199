"""What ``swgguf ablate`` measures, and its JSON document."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import __version__
from ..evaluate import KldStats, PplStats, Text
from ..evaluate.hellaswag import HellaswagStats, TaskFile, tasks_info
from .sites import SuperWeightSite

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


@dataclass(frozen=True)
class HellaswagRow:
    """HellaSwag accuracy of one variant (α = scale, or α = 0 with the SA restored)."""

    label: str
    scale: float
    restore_sa: bool
    stats: HellaswagStats


@dataclass(frozen=True)
class HellaswagAblation:
    tasks: TaskFile
    original: HellaswagStats
    rows: list[HellaswagRow]

    def as_dict(self) -> dict:
        def row(label: str, st: HellaswagStats, extra: dict) -> dict:
            v = st.versus(self.original)
            return {"label": label, **extra, **st.as_dict(),
                    "vs_original": {"diff": v.diff, "stderr": v.stderr, "agree": v.agree}}
        return {"tasks": tasks_info(self.tasks), "original": row("original", self.original, {}),
                "rows": [row(r.label, r.stats, {"scale": r.scale, "restore_sa": r.restore_sa}) for r in self.rows]}


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
    hellaswag: HellaswagAblation | None = None

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
            "hellaswag": self.hellaswag.as_dict() if self.hellaswag is not None else None,
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

