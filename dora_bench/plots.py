"""Plot primitives shared by the per-run outputs (train.py) and the paper figures (figures.py).

A leaf module: it imports matplotlib and nothing of dora_bench, so any stage may use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on headless GPU boxes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def draw_allocation(ax, grid: dict[str, Any], title: str = "", vmax: float | None = None):
    """Draw a layers x module-types rank grid (the paper's Figure 2) on ``ax``; returns the image."""
    return draw_rank_heatmap(ax, grid, title=title, vmax=vmax)


def draw_rank_heatmap(ax, grid: dict[str, Any], *, title: str = "", vmax: float | None = None, decimals: int = 0):
    """A rank grid (``allocation.allocation_grid`` layout; values may be means over seeds, so
    ``decimals`` sets how the cell labels print) on ``ax``; returns the image for a colour bar."""
    values = np.array([[np.nan if v is None else v for v in row] for row in grid["values"]], dtype=float)
    top = vmax if vmax is not None else np.nanmax(values)
    image = ax.imshow(values, cmap="YlGnBu", aspect="auto", vmin=0, vmax=top)
    ax.set_xticks(range(len(grid["columns"])), grid["columns"])
    ax.set_yticks(range(len(grid["rows"])), grid["rows"])
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    if title:
        ax.set_title(title)
    if values.size <= 200:  # numbers stay readable up to roberta-base's 12 x 6
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.{decimals}f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 * top else "black")
    return image


def save_allocation_heatmap(grid: dict[str, Any], path: Path, title: str) -> Path:
    """One run's rank allocation as a PNG."""
    rows = len(grid["rows"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(grid["columns"]), 1.2 + 0.35 * rows))
    image = draw_allocation(ax, grid, title)
    fig.colorbar(image, ax=ax, label="rank (kept components)")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: Path, dpi: int = 150) -> Path:
    """Write atomically (temp file + rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path
