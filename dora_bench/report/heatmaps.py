"""Rank-allocation heatmaps: one run's PNG (written beside its record by the loop) and the panels
of Figure 2 (``figures.py``). A leaf: it draws grids in ``allocation_grid``'s layout and imports
nothing of the package, so the run side may call it without reaching into the report's tables."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage


def draw_rank_heatmap(
    ax: Axes, grid: dict[str, Any], *, title: str = "", vmax: float | None = None, decimals: int = 0
) -> AxesImage:
    """A rank grid (``allocation_grid``'s layout; values may be means over seeds, so ``decimals``
    sets how the cell labels print) on the matplotlib axes ``ax``; returns the image for a colour bar."""
    import numpy as np

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
                ax.text(
                    j,
                    i,
                    f"{v:.{decimals}f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.6 * top else "black",
                )
    return image


def save_allocation_heatmap(grid: dict[str, Any], path: Path, title: str) -> Path:
    """One run's rank allocation as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(grid["columns"]), 1.2 + 0.35 * len(grid["rows"])))
    image = draw_rank_heatmap(ax, grid, title=title)
    fig.colorbar(image, ax=ax, label="rank (kept components)")
    fig.tight_layout()
    return save_figure(fig, path)


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only backend (runs happen on headless boxes), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path, dpi: int = 150) -> Path:
    """Write atomically (temp file + rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    os.replace(tmp, path)
    return path
