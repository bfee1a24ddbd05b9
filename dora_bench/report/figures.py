"""The paper's Figure 2 and the per-run plots, drawn from the records under ``<results_dir>/runs/``.

    python -m dora_bench.report.figures [--results-dir results]     (make tables runs it too)

writes under ``<results_dir>/figures/``:

- ``figure2_allocation_<task>_<backbone>.png``: the final rank of every layer x module type,
  one panel per method (DoRA, AdaLoRA: rows) and final budget (columns), from the records'
  ``extras.rank_allocation_grid``, **averaged over the complete seeds** (the panel title says
  how many), and under each title whether it is more than random pruning: the agreement of the
  seeds' per-module ranks and their spread, each against its random-pruning null (``diagnostics.py``).
  Seeds pool as a table cell does (``cells.config_conflict``): a panel whose
  records were made with different configs is left blank, marked refused, and the reason
  goes to stderr. The paper's Figure 2 is ``figure2_allocation_sst2_roberta-base.png``.
- ``budget_schedule/<task>_<backbone>_b<budget>.png``: components kept vs training progress,
  DoRA and AdaLoRA (``extras.budget_schedule``; the lowest complete seed).
- ``llm/<task>_<backbone>_accuracy_vs_memory.png``: the decoder-LLM experiments (``llm.py``).
- ``seed_scores_<backbone>_b<budget>.png``: every seed's dev main metric as a dot and the mean as
  a bar, per task (panels) and method (x): the spread a "mean ± std" cell compresses, and the
  pairing (a seed's dots share a marker). Methods without a budget (Full FT, BitFit) join each
  budget's figure. Drawn when some task has at least two methods to compare.
- ``curves/<task>/<backbone>/<method>[-<variant>]_b<budget>.png``: dev main metric per epoch,
  one line per seed, and the training loss from the run's ``metrics.jsonl`` where present.

Only the plain runs (no ``variant``) enter the allocation and schedule figures; every
complete run gets its curves.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from matplotlib.ticker import MaxNLocator

from dora_bench.errors import ConfigError, UserError
from dora_bench.report.cells import (
    METHODS,
    PAPER_NAMES,
    RunRecord,
    Settings,
    by_cell,
    config_conflict,
    differing_keys,
    load_runs,
    metric,
)
from dora_bench.report.heatmaps import draw_rank_heatmap, pyplot, save_figure

ALLOCATING_METHODS = {"dora": "DoRA", "adalora": "AdaLoRA"}  # methods that distribute a budget, in panel order


def write_figures(results_dir: str | Path) -> list[Path]:
    """Every figure the records allow; returns the paths written."""
    results_dir = Path(results_dir)
    out_dir = results_dir / "figures"
    every_run = load_runs(results_dir)
    runs = [run for run in every_run if run.complete]
    written = []
    for (task, backbone), group in _group(every_run, lambda r: (r.key[0], r.key[1])).items():
        allocations = pool_allocations([run for run in group if run.key[3] is None])
        if allocations:
            path = out_dir / f"figure2_allocation_{task}_{backbone}.png"
            captions = allocation_captions([run for run in group if run.key[3] is None])
            written.append(figure2_allocation(allocations, path, f"{task}, {backbone}", captions))
            for (method, budget), pooled in allocations.items():
                if pooled.refused:
                    print(
                        f"dora-bench-figures: {path.name}: {method} bT={budget} refused, {pooled.refused}",
                        file=sys.stderr,
                    )
        plain = [run for run in group if run.complete and run.key[3] is None and run.key[2] in ALLOCATING_METHODS]
        for budget, same_budget in _group(plain, lambda r: r.key[4]).items():
            if any((run.record.get("extras") or {}).get("budget_schedule") for run in same_budget):
                path = out_dir / "budget_schedule" / f"{task}_{backbone}_b{budget}.png"
                written.append(budget_schedule(same_budget, path, f"{task}, {backbone}, final budget {budget}"))
    plain_runs = [run for run in runs if run.key[3] is None]
    main_metrics = {run.key[0]: run.record.get("main_metric") for run in plain_runs}
    for (backbone, budget), points in seed_points(plain_runs).items():
        if any(len(methods) > 1 for methods in points.values()):
            path = out_dir / f"seed_scores_{backbone}_b{budget}.png"
            written.append(seed_scores(points, path, backbone, budget, main_metrics))
    written += write_llm_figures(every_run, out_dir)  # accuracy vs memory of the decoder-LLM experiments
    for (task, backbone, method, variant, budget), group in by_cell(runs).items():
        name = f"{method}{'-' + variant if variant else ''}_b{'-' if budget is None else budget}"
        written.append(
            learning_curves(
                group,
                out_dir / "curves" / task / backbone / f"{name}.png",
                f"{method}{' (' + variant + ')' if variant else ''}, budget "
                f"{'—' if budget is None else budget}: {task}, {backbone}",
            )
        )
    return written


def mean_grid(grids: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell-wise mean of rank grids with the same rows and columns (None where any grid has None)."""
    first = grids[0]
    for grid in grids[1:]:
        if grid["rows"] != first["rows"] or grid["columns"] != first["columns"]:
            raise UserError(
                "rank grids of one setting have different layers or module types: "
                "the records come from different backbones; check their configs"
            )
    values = [
        [
            None
            if any(g["values"][i][j] is None for g in grids)
            else sum(g["values"][i][j] for g in grids) / len(grids)
            for j in range(len(first["columns"]))
        ]
        for i in range(len(first["rows"]))
    ]
    return {"rows": first["rows"], "columns": first["columns"], "values": values}


@dataclass(frozen=True)
class PooledAllocation:
    """The rank grids of one (method, final budget): their mean over complete seeds, or why not."""

    seeds: tuple[int, ...]  # complete seeds with a grid, ascending
    grid: dict[str, Any] | None  # mean_grid of theirs; None if refused
    refused: str | None = None  # cells.config_conflict's reason
    differing: tuple[str, ...] = ()  # what differs: config keys, precision, data (for the panel)


def pool_allocations(runs: list[RunRecord]) -> dict[tuple[str, int], PooledAllocation]:
    """``{(method, budget): PooledAllocation}`` for the allocating methods' runs of one task and
    backbone (plain runs, any status). A (method, budget) whose records could not share a table
    cell (different configs, a seed twice; failed records included, as in the tables) is refused,
    never averaged. Keys without a complete run that has a grid are left out."""
    pooled = {}
    for key, cell_runs in by_cell([run for run in runs if run.key[2] in ALLOCATING_METHODS]).items():
        with_grid = sorted(
            (run for run in cell_runs if run.complete and _grid(run) is not None),
            key=lambda run: run.record.get("seed", 0),
        )
        if not with_grid:
            continue
        seeds = tuple(run.record.get("seed") for run in with_grid)
        if refused := config_conflict(cell_runs):
            pooled[(key[2], key[4])] = PooledAllocation(seeds, None, refused, tuple(differing_keys(cell_runs)))
        else:
            pooled[(key[2], key[4])] = PooledAllocation(seeds, mean_grid([_grid(run) for run in with_grid]))
    return pooled


def allocation_captions(runs: list[RunRecord]) -> dict[tuple[str, int], str]:
    """``{(method, budget): "agreement r = ...; spread ... vs random ..."}``: whether each panel's
    allocation is more than random pruning (``diagnostics.py``)."""
    from dora_bench.report.diagnostics import caption, diagnose_all

    return {(d.key[2], d.key[4]): caption(d) for d in diagnose_all([r for r in runs if r.key[2] in ALLOCATING_METHODS])}


def figure2_allocation(
    pooled: dict[tuple[str, int], PooledAllocation],
    path: Path,
    where: str,
    captions: dict[tuple[str, int], str] | None = None,
) -> Path:
    """Methods (rows) x final budgets (columns) of rank grids averaged over seeds; one colour
    scale per budget, shared by the methods, so DoRA and AdaLoRA compare cell by cell. Each panel's
    caption says how far the seeds agree and where the ranks' spread lies against random pruning."""
    methods = [m for m in ALLOCATING_METHODS if any(key[0] == m for key in pooled)]
    budgets = sorted({key[1] for key in pooled})
    grids = [p.grid for p in pooled.values() if p.grid is not None]
    n_layers = len(grids[0]["rows"]) if grids else 1
    fig, axes = pyplot().subplots(
        len(methods),
        len(budgets),
        squeeze=False,
        layout="constrained",
        figsize=(0.5 + 4.2 * len(budgets), 0.6 + len(methods) * (1.2 + 0.3 * n_layers)),
    )
    for j, budget in enumerate(budgets):
        ranks = [
            v
            for m in methods
            if (p := pooled.get((m, budget))) and p.grid
            for row in p.grid["values"]
            for v in row
            if v is not None
        ]
        top = max(ranks, default=1)
        image = None
        for i, method in enumerate(methods):
            ax, cell = axes[i][j], pooled.get((method, budget))
            name = f"{ALLOCATING_METHODS[method]}, bT={budget}"
            if cell is None or cell.grid is None:
                ax.set_axis_off()
                ax.set_title(f"{name}: no runs" if cell is None else f"{name}: refused", fontsize=10)
                if cell is not None:  # blank, never a mix of different settings
                    why = (
                        "records differ in\n" + "\n".join(cell.differing[:4])
                        if cell.differing
                        else "a seed recorded twice"
                    )
                    ax.text(
                        0.5,
                        0.5,
                        why + "\n(details on stderr)",
                        ha="center",
                        va="center",
                        fontsize=8,
                        transform=ax.transAxes,
                    )
                continue
            which = f"seed {cell.seeds[0]}" if len(cell.seeds) == 1 else f"mean of {len(cell.seeds)} seeds"
            image = draw_rank_heatmap(ax, cell.grid, vmax=top, decimals=0 if len(cell.seeds) == 1 else 1)
            note = (captions or {}).get((method, budget))
            ax.set_title(f"{name} ({which})" + (f"\n{note}" if note else ""), fontsize=10 if not note else 8)
            if i < len(methods) - 1:
                ax.set_xlabel("")
            if j > 0:
                ax.set_ylabel("")
        if image is not None:
            fig.colorbar(image, ax=list(axes[:, j]), label="rank (kept components)", shrink=0.6)
    fig.suptitle(f"Final rank per layer and module type: {where}")
    return save_figure(fig, path)


def budget_schedule(runs: list[RunRecord], path: Path, where: str) -> Path:
    """Components kept (all modules together) against the share of training done."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for (method, label), style in zip(ALLOCATING_METHODS.items(), ("-", "--")):  # dashed AdaLoRA shows where they agree
        mine = sorted(
            (r for r in runs if r.key[2] == method and (r.record.get("extras") or {}).get("budget_schedule")),
            key=lambda r: r.record.get("seed", 0),
        )
        if not mine:
            continue
        run = mine[0]
        extras = run.record["extras"]
        points = sorted(extras["budget_schedule"], key=lambda p: p["step"])
        if points[0]["step"] > 0 and extras.get("init_budget") and extras.get("rank_allocation"):
            # DoRA logs pruning steps only; before the first, every module holds b0 components
            points.insert(0, {"step": 0, "kept": len(extras["rank_allocation"]) * extras["init_budget"]})
        total = extras.get("total_steps") or points[-1]["step"] or 1
        steps = [p["step"] for p in points] + [total]
        kept = [p["kept"] for p in points] + [points[-1]["kept"]]
        ax.plot(
            [s / total for s in steps],
            kept,
            drawstyle="steps-post",
            linestyle=style,
            label=f"{label} (seed {run.record.get('seed')})",
        )
    ax.set_xlabel("training progress (step / total steps)")
    ax.set_ylabel("components kept (all modules)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Budget schedule: {where}")
    fig.tight_layout()
    return save_figure(fig, path)


#: x-axis order of the seed-score figure: the paper's row order, then any other method alphabetically
METHOD_ORDER = (*METHODS.values(), "dora_wd", "prompt_tuning")
TASK_ORDER = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli", "squad_v1", "squad_v2", "xsum")
SeedPoints = dict[str, dict[str, dict[int, tuple[float, bool]]]]  # task -> method -> seed -> (x100, eligible)


def seed_points(runs: list[RunRecord]) -> dict[tuple[str, int], SeedPoints]:
    """``{(backbone, budget): {task: {method: {seed: (best epoch's main metric x100, eligible)}}}}`` from
    complete plain runs; a method without a budget is put under every budget its backbone has."""
    budgets: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        if run.key[4] is not None:
            budgets[run.key[1]].add(run.key[4])
    out: dict[tuple[str, int], SeedPoints] = {}
    for run in runs:
        task, backbone, method, _, budget = run.key
        best, main = run.record.get("best") or {}, run.record.get("main_metric")
        value = (best.get("metrics") or {}).get(main)
        if value is None or not math.isfinite(value):
            continue
        for b in [budget] if budget is not None else sorted(budgets[backbone]):
            cell = out.setdefault((backbone, b), {}).setdefault(task, {}).setdefault(method, {})
            cell[int(run.record.get("seed", 0))] = (100 * value, best.get("countable", True))
    return out


def _order(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def seed_scores(
    points: SeedPoints, path: Path, backbone: str, budget: int, main_metrics: dict[str, str | None] | None = None
) -> Path:
    """One panel per task (titled with its main metric): a bar at each method's mean, a dot per seed
    (hollow: no eligible epoch)."""
    tasks = _order(points, TASK_ORDER)
    methods = _order({m for by_method in points.values() for m in by_method}, METHOD_ORDER)
    seeds = sorted({seed for by_method in points.values() for by_seed in by_method.values() for seed in by_seed})
    markers = dict(zip(seeds, "osD^vP*Xhp" * (len(seeds) // 10 + 1)))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), squeeze=False, figsize=(1.2 + 0.55 * len(methods) * len(tasks), 4.2))
    for ax, task in zip(axes[0], tasks):
        by_method = points[task]
        shown = [m for m in methods if m in by_method]
        for x, method in enumerate(shown):
            values = by_method[method]
            ax.bar(x, statistics.mean(v for v, _ in values.values()), width=0.6, color="0.85", zorder=1)
            for k, (seed, (value, eligible)) in enumerate(sorted(values.items())):
                offset = (k - (len(values) - 1) / 2) * 0.08  # seeds side by side, not on top of each other
                ax.plot(
                    x + offset,
                    value,
                    marker=markers[seed],
                    color="C0",
                    fillstyle="full" if eligible else "none",
                    markersize=5,
                    linestyle="none",
                    zorder=2,
                )
        ax.set_xticks(range(len(shown)), [PAPER_NAMES.get(m, m) for m in shown], rotation=45, ha="right")
        metric_name = (main_metrics or {}).get(task)
        ax.set_title(f"{task} ({metric_name})" if metric_name else task)
        low = min(v for m in shown for v, _ in by_method[m].values())
        high = max(v for m in shown for v, _ in by_method[m].values())
        ax.set_ylim(low - 0.15 * (high - low + 1), high + 0.15 * (high - low + 1))  # the spread, not the bars' base
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("dev score x100 (best eligible epoch)")
    handles = [plt.Line2D([], [], marker=markers[s], color="C0", linestyle="none", label=f"seed {s}") for s in seeds]
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=len(seeds))
    fig.suptitle(f"Every seed: {backbone}, budget {budget} (bar: mean; hollow: no eligible epoch)", x=0.4)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, path)


def learning_curves(runs: list[RunRecord], path: Path, title: str) -> Path:
    """Dev main metric per epoch (one line per seed, best epoch circled) and, where the run
    folders have ``metrics.jsonl``, the training loss per logged step."""
    losses = {run.record.get("seed"): _loss_curve(run.path.parent / "metrics.jsonl") for run in runs}
    with_loss = any(losses.values())
    fig, axes = pyplot().subplots(1, 2 if with_loss else 1, squeeze=False, figsize=(10 if with_loss else 5.5, 3.8))
    dev = axes[0][0]
    main = runs[0].record.get("main_metric") or "main metric"
    for run in sorted(runs, key=lambda r: r.record.get("seed", 0)):
        epochs = run.record.get("epochs") or []
        points = [(e["epoch"], 100 * e["metrics"][main]) for e in epochs if main in (e.get("metrics") or {})]
        if not points:
            continue
        (line,) = dev.plot(*zip(*points), marker="o", markersize=3, label=f"seed {run.record.get('seed')}")
        best = (run.record.get("best") or {}).get("epoch")
        for epoch, value in points:
            if epoch == best:
                dev.plot([epoch], [value], marker="o", markersize=9, fillstyle="none", color=line.get_color())
    dev.set_xlabel("epoch")
    last_epoch = max((e["epoch"] for run in runs for e in run.record.get("epochs") or []), default=1)
    dev.set_xlim(0.5, last_epoch + 0.5)
    dev.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    dev.set_ylabel(f"dev {main} x100")
    dev.set_title("dev score (circle: best epoch)")
    dev.grid(alpha=0.3)
    dev.legend(fontsize=7)
    if with_loss:
        loss_ax = axes[0][1]
        for seed, curve in sorted(losses.items(), key=lambda item: item[0] or 0):
            if curve:
                loss_ax.plot(*zip(*curve), linewidth=0.8, label=f"seed {seed}")
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("training loss")
        loss_ax.set_title("training loss")
        loss_ax.grid(alpha=0.3)
        loss_ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _loss_curve(path: Path) -> list[tuple[int, float]]:
    """(step, loss) from a run's metrics.jsonl; [] if it has none."""
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        if entry.get("loss") is not None and entry.get("step") is not None and math.isfinite(entry["loss"]):
            curve.append((entry["step"], entry["loss"]))
    return curve


def _grid(run: RunRecord) -> dict[str, Any] | None:
    return (run.record.get("extras") or {}).get("rank_allocation_grid")


_K = TypeVar("_K", bound=Hashable)


def _group(runs: list[RunRecord], key: Callable[[RunRecord], _K]) -> dict[_K, list[RunRecord]]:
    groups: dict[_K, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dora_bench.report.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="the folder holding runs/ (default: %(default)s)")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    try:
        if not (results_dir / "runs").is_dir():
            raise ConfigError(f"no runs at {results_dir / 'runs'}: run a sweep first or pass --results-dir <dir>")
        written = write_figures(results_dir)
    except UserError as err:
        print(f"dora-bench-figures: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"dora-bench-figures: {len(written)} figures in {results_dir / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- decoder LLMs: accuracy against memory ---------------------------------------------------

LLM_FAMILIES = ("commonsense", "gsm8k")  # the task families of experiment=llm_* (report/llm.py tabulates them)


def write_llm_figures(runs: list[RunRecord], out_dir: Path) -> list[Path]:
    """``llm/<task>_<backbone>[-<variant>]_accuracy_vs_memory.png`` for every LLM setting in the records."""
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if ((run.record.get("config") or {}).get("task") or {}).get("family") in LLM_FAMILIES:
            groups[(run.key[0], run.key[1] + (f"-{run.key[3]}" if run.key[3] else ""))].append(run)
    written = []
    for (task, where), group in sorted(groups.items()):
        path = out_dir / "llm" / f"{task}_{where}_accuracy_vs_memory.png"
        if (done := accuracy_vs_memory(group, path, f"{task}, {where}")) is not None:
            written.append(done)
    return written


def accuracy_vs_memory(runs: list[RunRecord], path: Path, title: str) -> Path | None:
    """The main metric (x100, best epoch, mean over complete seeds) against peak training memory, a point
    per (method, budget). GPU runs use torch's peak allocation; CPU runs (no such number) the process's
    peak RSS, and the axis says which. None when no complete run has both numbers."""
    complete = [run for run in runs if run.complete]
    gpu = any(_memory(run, gpu=True) is not None for run in complete)
    measure = "peak GPU memory allocated in training (MiB)" if gpu else "peak process RSS (MiB; CPU runs)"
    first = complete[0].record if complete else {}
    main = first.get("main_metric") or "main metric"
    # a task selecting on a dev split and reporting test beside it (GSM8K): test, at the selected epoch
    shown = f"test_{main}" if f"test_{main}" in ((first.get("best") or {}).get("metrics") or {}) else main
    points = []
    for key, group in by_cell(complete).items():
        pairs = [(_memory(run, gpu), metric(shown)(run.record, Settings())) for run in group]
        pairs = [(m, s) for m, s in pairs if m is not None and s is not None]
        if pairs:
            label = key[2] if key[4] is None else f"{key[2]} b{key[4]}"
            points.append((statistics.mean(m for m, _ in pairs), statistics.mean(s for _, s in pairs), label))
    if not points:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for memory, score, label in points:
        ax.scatter(memory, score)
        ax.annotate(label, (memory, score), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xlabel=measure, ylabel=f"{shown} x100 (best dev epoch, mean over seeds)", title=title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _memory(run: RunRecord, gpu: bool) -> float | None:
    efficiency = (run.record.get("extras") or {}).get("efficiency") or {}
    return efficiency.get("peak_gpu_mib" if gpu else "peak_rss_mib")
