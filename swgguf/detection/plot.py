"""The paper's Figure 3: max |down_proj input| and |output| per layer, super weights marked."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..formats.files import atomic_output
from .core import Candidate, Probe


def plot_spikes(baseline: Probe, path: str | Path, threshold: float, marked: Sequence[Candidate] = (),
                title: str = "") -> Path:
    """Write the figure to ``path`` (format from its suffix) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    layers = [s.layer for s in baseline.layers]
    series = {"input": [s.max_input for s in baseline.layers], "output": [s.max_output for s in baseline.layers]}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, (name, values) in zip(axes, series.items()):
        ax.plot(layers, values, color="tab:blue", marker="o", markersize=3, linewidth=1)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"max |down_proj {name}|")
        ax.set_title(f"max |down_proj {name}|")
        for c in marked:
            y = values[layers.index(c.layer)]
            ax.plot([c.layer], [y], marker="*", color="tab:red", markersize=12, linestyle="none")
            ax.annotate(f"L{c.layer} [{c.row}, {c.col}]", (c.layer, y), textcoords="offset points",
                        xytext=(5, 5), fontsize=8, color="tab:red")
    axes[1].axhline(threshold, color="tab:gray", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
    axes[1].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_output(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=120)
    finally:
        plt.close(fig)
    return path
