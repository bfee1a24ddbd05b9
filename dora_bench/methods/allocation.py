"""Rank allocations as the paper draws them (Figure 2): a grid of layers x module types.

A method that distributes a budget (DoRA, AdaLoRA) reports ``{module name: rank}``;
``allocation_grid`` turns that into rows (layers, in model order) and columns (the
six adapted module types), so two methods' allocations can be set side by side, and
``draw_rank_heatmap`` draws one (each run's own PNG, and the panels of Figure 2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

# (pattern on the module's dotted name, column label). First match wins, so the more
# specific RoBERTa "attention.output.dense" precedes the FFN "output.dense". Decoder LLMs: Llama's
# and Qwen2's gated MLP is gate/up (Wg, Wf1) then down (Wf2); GPT-2's c_attn holds q, k and v in one.
_TYPES: tuple[tuple[str, str], ...] = (
    (r"encoder_attn\.q_proj$", "Xq"),
    (r"encoder_attn\.k_proj$", "Xk"),
    (r"encoder_attn\.v_proj$", "Xv"),
    (r"encoder_attn\.out_proj$", "Xo"),
    (r"(query|q_proj)$", "Wq"),
    (r"(key|k_proj)$", "Wk"),
    (r"(value|v_proj)$", "Wv"),
    (r"c_attn$", "Wqkv"),
    (r"(attention\.output\.dense|out_proj|o_proj|attn\.c_proj)$", "Wo"),
    (r"gate_proj$", "Wg"),
    (r"(intermediate\.dense|fc1|up_proj|c_fc)$", "Wf1"),
    (r"(output\.dense|fc2|down_proj|mlp\.c_proj)$", "Wf2"),
)
COLUMN_ORDER = ("Wq", "Wk", "Wv", "Wqkv", "Wo", "Wg", "Wf1", "Wf2", "Xq", "Xk", "Xv", "Xo")
# RoBERTa/BERT `layer.N.`, BART `encoder.layers.N.` / `decoder.layers.N.`, Llama `layers.N.`, GPT-2 `h.N.`
_LAYER = re.compile(r"(?:(encoder|decoder)\.)?(?:layers?|h)\.(\d+)\.")


def module_position(name: str) -> tuple[str, str]:
    """``(row, column)`` of an adapted module: ``("3", "Wq")`` or ``("dec 1", "Xk")``."""
    found = _LAYER.search(name)
    if found is None:
        raise ValueError(f"no layer index in module name {name!r}")
    stack, index = found.groups()
    # BART has an encoder and a decoder stack, both called `layers`; RoBERTa (`encoder.layer`) and the
    # decoder-only LLMs have one.
    row = f"{'dec' if stack == 'decoder' else 'enc'} {index}" if stack and ".layers." in name else index
    for pattern, column in _TYPES:
        if re.search(pattern, name):
            return row, column
    raise ValueError(f"module {name!r} is none of the adapted types {COLUMN_ORDER}")


def allocation_grid(ranks: dict[str, int]) -> dict[str, Any]:
    """``{"rows": [...], "columns": [...], "values": [[rank or None]]}`` from per-module ranks."""
    cells: dict[tuple[str, str], int] = {}
    rows: list[str] = []
    for name, rank in ranks.items():
        row, column = module_position(name)
        if (row, column) in cells:
            raise ValueError(f"two modules map to layer {row!r}, type {column!r} (second: {name!r})")
        cells[(row, column)] = int(rank)
        if row not in rows:
            rows.append(row)
    rows.sort(key=_row_key)
    columns = [c for c in COLUMN_ORDER if any(col == c for _, col in cells)]
    values = [[cells.get((r, c)) for c in columns] for r in rows]
    return {"rows": rows, "columns": columns, "values": values}


def _row_key(row: str) -> tuple[int, int]:
    if row.startswith("enc "):
        return (0, int(row[4:]))
    if row.startswith("dec "):
        return (1, int(row[4:]))
    return (0, int(row))


# -- drawing: one run's heatmap (written beside its record) and the paper figure's panels ----------


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
