"""The ablation as a figure: perplexity and KLD against alpha; stop-word probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.files import atomic_output
from .results import Ablation, shown


def plot(result: Ablation, out: str | Path) -> Path:
    """PNG: perplexity and KLD against alpha; stop-word probabilities with and without."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    panels = 2 if result.stopwords else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    try:
        _scale_panel(axes[0][0], result)
        if result.stopwords:
            _stopword_panel(axes[0][1], result)
        fig.tight_layout()
        with atomic_output(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return out


def _scale_panel(ax, result: Ablation) -> None:
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


def _stopword_panel(bx, result: Ablation) -> None:
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
