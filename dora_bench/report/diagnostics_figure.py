"""The allocation diagnostics as a figure: for each cell of one task, backbone and budget, the mean
final allocation over seeds and its seed-to-seed std (heatmaps), and each seed's rank spread against
the random-pruning null band. Written as ``figures/allocation_diagnostics_<task>_<backbone>_b<budget>.png``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from dora_bench.report.diagnostics import AllocationDiagnostics, caption
from dora_bench.report.heatmaps import draw_rank_heatmap, pyplot, save_figure


def write_diagnostics_figures(found: list[AllocationDiagnostics], out_dir: Path) -> list[Path]:
    groups: dict[tuple, list[AllocationDiagnostics]] = defaultdict(list)
    for d in found:
        groups[(d.key[0], d.key[1], d.key[4])].append(d)
    return [
        diagnostics_figure(cells, Path(out_dir) / f"allocation_diagnostics_{task}_{backbone}_b{budget}.png")
        for (task, backbone, budget), cells in groups.items()
    ]


def diagnostics_figure(cells: list[AllocationDiagnostics], path: Path) -> Path:
    plt = pyplot()
    layers, types = len(cells[0].rows), len(cells[0].columns)
    height = 0.9 + 0.28 * layers
    fig = plt.figure(figsize=(2.2 + 1.1 * types, height * len(cells) + 2.4), layout="constrained")
    panels = fig.subfigures(2, 1, height_ratios=[height * len(cells), 2.4])
    axes = panels[0].subplots(len(cells), 2, squeeze=False)
    top = max(float(d.mean_grid.max()) for d in cells)
    for (mean_ax, std_ax), d in zip(axes, cells):
        grid = {"rows": list(d.rows), "columns": list(d.columns)}
        draw_rank_heatmap(mean_ax, {**grid, "values": d.mean_grid.tolist()}, vmax=top, decimals=1)
        seeds = f"{len(d.seeds)} seed{'s' if len(d.seeds) != 1 else ''}"
        mean_ax.set_title(f"{d.label}: mean of {seeds}\n{caption(d)}", fontsize=8)
        if d.std_grid is None:
            std_ax.axis("off")
            std_ax.text(0.5, 0.5, "one seed: no seed-to-seed std yet", ha="center", va="center", fontsize=8)
            continue
        draw_rank_heatmap(std_ax, {**grid, "values": d.std_grid.tolist()}, vmax=max(1.0, top / 3), decimals=1)
        std_ax.set_title("seed-to-seed std", fontsize=8)
        std_ax.set_ylabel("")
    ax = panels[1].subplots()
    for i, d in enumerate(cells):
        null = d.spread_null
        ax.plot([null.low, null.high], [i, i], color="0.8", linewidth=10, solid_capstyle="butt",
                label="random pruning, 5-95 %" if i == 0 else None)  # fmt: skip
        ax.plot([null.median], [i], "|", color="0.4", markersize=14)
        ax.plot(d.spreads, [i] * len(d.spreads), "o", color="C0", markersize=5,
                label="one seed" if i == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(cells)), [d.label for d in cells])
    ax.set_ylim(-0.7, len(cells) - 0.3)
    ax.set_xlabel("spread of the per-module final ranks (std)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    task, backbone, *_ = cells[0].key
    fig.suptitle(f"Where the budget went, and whether it is more than random pruning: {task}, {backbone}", fontsize=10)
    return save_figure(fig, path)
