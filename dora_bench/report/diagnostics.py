"""Is a dynamic-rank method's allocation signal or noise? Diagnostics of the final ranks of a cell.

    dora-bench-tables --results-dir results/minilm-long    (writes them with the other tables)

For every cell (task, backbone, method, variant, budget) whose complete records carry a rank
allocation (DoRA and its control arms, AdaLoRA):

- **Agreement across seeds**: the mean pairwise Pearson correlation of the seeds' per-module final
  ranks, of their per-type means (the columns of Figure 2) and of their per-layer means (its rows).
  An allocation driven by what the task needs repeats across seeds (agreement near 1); one driven
  by noise does not (near 0). A constant allocation (no pruning) has no correlation: ``None``. The
  per-type and per-layer agreements average a handful of numbers (6 types, 6 or 12 layers), so
  chance alone gives them a wide band: each has its own random-pruning null.
- **Spread against random pruning**: the population std of one run's per-module ranks, against
  the same statistic for allocations drawn by random pruning under the record's own budget (the
  ``random`` control arm's rule). Each ranking of that arm draws uniformly among the live
  components, so whatever the schedule's steps, its final kept set is a uniformly random set of
  the final size: the null draws that set directly. Quantiles from ``NULL_DRAWS`` seeded draws.
  The agreement of ``n`` such random runs gives the agreement's null band the same way.
- **Per-type and per-layer means** with a 95 % Student-t interval over seeds.

Pure functions of the records, like the tables: the same records give the same numbers.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dora_bench.records import write_text_atomic
from dora_bench.report.cells import RunRecord, by_cell

NULL_DRAWS = 4000
NULL_SEED = 0
QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class NullBand:
    """Quantiles (5 %, 50 %, 95 %) of a statistic under random pruning, and how they were drawn."""

    low: float
    median: float
    high: float
    draws: int
    seed: int

    def text(self) -> str:
        return f"{self.median:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class GroupMean:
    """A module type's or a layer's mean rank over seeds."""

    mean: float
    low: float | None  # 95 % t-interval over seeds; None with one seed
    high: float | None


@dataclass(frozen=True)
class AllocationDiagnostics:
    """The diagnostics of one cell's final allocations (see the module docstring)."""

    key: tuple  # (task, backbone, method, variant, budget)
    seeds: tuple[int, ...]
    rows: tuple[str, ...]  # layers
    columns: tuple[str, ...]  # module types
    ranks: np.ndarray  # (seeds, layers, types): each seed's final rank grid
    initial_rank: int  # b0: components per module before pruning
    agreement: float | None  # mean pairwise Pearson r of the per-module ranks
    agreement_null: NullBand | None  # agreement of len(seeds) random-pruning runs
    type_agreement: float | None  # the same of the per-type means
    type_agreement_null: NullBand | None
    layer_agreement: float | None  # the same of the per-layer means
    layer_agreement_null: NullBand | None
    spreads: tuple[float, ...]  # per seed: population std of the per-module ranks
    spread_null: NullBand  # one random-pruning run's spread
    type_means: dict[str, GroupMean]
    layer_means: dict[str, GroupMean]
    kept_params: tuple[int, ...]  # per seed: the record's final_trainable_params (the paper's count)

    @property
    def spread(self) -> float:
        return float(np.mean(self.spreads))

    @property
    def mean_grid(self) -> np.ndarray:
        return self.ranks.mean(axis=0)

    @property
    def std_grid(self) -> np.ndarray | None:
        """The per-module sample std over seeds; None for one seed (a zero would read as "always the same")."""
        return self.ranks.std(axis=0, ddof=1) if len(self.seeds) > 1 else None

    @property
    def label(self) -> str:
        task, backbone, method, variant, budget = self.key
        return f"{method}{'-' + variant if variant else ''} b{budget}"


def mean_pairwise_correlation(vectors: np.ndarray) -> float | None:
    """Mean Pearson r over every pair of rows; None below two rows or where a row is constant."""
    if len(vectors) < 2 or np.any(vectors.std(axis=1) == 0):
        return None
    matrix = np.corrcoef(vectors)
    upper = matrix[np.triu_indices(len(vectors), k=1)]
    return float(upper.mean())


def rank_spread(ranks: np.ndarray) -> float:
    """Population std of one run's per-module ranks (any shape; every module counts once)."""
    return float(np.asarray(ranks, dtype=float).std())


def random_allocations(modules: int, initial_rank: int, kept: int, draws: int, seed: int) -> np.ndarray:
    """(draws, modules) per-module ranks of ``kept`` components drawn uniformly from ``modules x initial_rank``."""
    if not 0 <= kept <= modules * initial_rank:
        raise ValueError(f"can't keep {kept} of {modules} x {initial_rank} components")
    rng = np.random.default_rng(seed)
    chosen = np.argsort(rng.random((draws, modules * initial_rank)), axis=1)[:, :kept] // initial_rank
    return np.stack([np.bincount(row, minlength=modules) for row in chosen])


def band(values: np.ndarray, draws: int, seed: int) -> NullBand:
    low, median, high = np.quantile(values, QUANTILES)
    return NullBand(float(low), float(median), float(high), draws, seed)


@functools.lru_cache(maxsize=256)  # cells of one study share their few (modules, b0, kept)
def spread_null(modules: int, initial_rank: int, kept: int, draws: int = NULL_DRAWS, seed: int = NULL_SEED) -> NullBand:
    sims = random_allocations(modules, initial_rank, kept, draws, seed)
    return band(sims.std(axis=1), draws, seed)


@functools.lru_cache(maxsize=256)
def agreement_null(
    modules: int, initial_rank: int, kept: int, seeds: int, draws: int = NULL_DRAWS // 4, seed: int = NULL_SEED
) -> NullBand | None:
    """The agreement of ``seeds`` independent random-pruning runs, ``draws`` times."""
    if seeds < 2:
        return None
    sims = random_allocations(modules, initial_rank, kept, draws * seeds, seed + 1).reshape(draws, seeds, modules)
    values = np.array([mean_pairwise_correlation(group) for group in sims if group.std(axis=1).all()])
    return band(values, draws, seed + 1)


@functools.lru_cache(maxsize=256)
def group_agreement_nulls(
    layers: int,
    types: int,
    initial_rank: int,
    kept: int,
    seeds: int,
    draws: int = NULL_DRAWS // 4,
    seed: int = NULL_SEED,
) -> tuple[NullBand | None, NullBand | None]:
    """The per-type and per-layer agreements of ``seeds`` random-pruning runs on a full ``layers x types`` grid."""
    if seeds < 2:
        return None, None
    sims = random_allocations(layers * types, initial_rank, kept, draws * seeds, seed + 2)
    grids = sims.reshape(draws, seeds, layers, types).astype(float)
    bands = []
    for means in (grids.mean(axis=2), grids.mean(axis=3)):  # (draws, seeds, types), (draws, seeds, layers)
        values = [mean_pairwise_correlation(group) for group in means]
        bands.append(band(np.array([v for v in values if v is not None]), draws, seed + 2))
    return bands[0], bands[1]


def group_means(values: np.ndarray, names: list[str]) -> dict[str, GroupMean]:
    """Each column of ``values`` (seeds x groups): its mean over seeds with a 95 % t-interval."""
    found = {}
    for j, name in enumerate(names):
        low, high = t_interval(values[:, j])
        found[str(name)] = GroupMean(float(values[:, j].mean()), low, high)
    return found


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def initial_rank(record: dict) -> int:
    """b0 of a record: DoRA reports it; AdaLoRA's config holds ``init_r`` (null: ceil(1.5 bT), as DoRA)."""
    extras, method = record.get("extras") or {}, (record.get("config") or {}).get("method") or {}
    found = extras.get("init_budget") or method.get("init_budget") or method.get("init_r")
    return int(found) if found else math.ceil(1.5 * record["budget"])


def grid_array(grid: dict[str, Any]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in grid["values"]], dtype=float)


def diagnose(key: tuple, runs: list[RunRecord]) -> AllocationDiagnostics | None:
    """The diagnostics of one cell from its complete runs that hold a rank grid; None if there are none."""
    with_grid = sorted(
        (r for r in runs if r.complete and (r.record.get("extras") or {}).get("rank_allocation_grid")),
        key=lambda r: r.record.get("seed", 0),
    )
    if not with_grid:
        return None
    grids = [r.record["extras"]["rank_allocation_grid"] for r in with_grid]
    first = grids[0]
    if any(g["rows"] != first["rows"] or g["columns"] != first["columns"] for g in grids):
        raise ValueError(f"the rank grids of cell {key} have different layers or module types")
    ranks = np.stack([grid_array(g) for g in grids])
    flat = ranks.reshape(len(grids), -1)
    flat = flat[:, ~np.isnan(flat).any(axis=0)]  # a layer without some module type (none in BERT-likes)
    b0 = initial_rank(with_grid[0].record)
    kept = int(round(flat[0].sum()))
    column_means = np.nanmean(ranks, axis=1)  # (seeds, types)
    row_means = np.nanmean(ranks, axis=2)  # (seeds, layers)
    layers, types = ranks.shape[1:]
    pruned = kept < flat.shape[1] * b0
    full_grid = flat.shape[1] == layers * types  # the grouped nulls draw on the whole grid
    type_null, layer_null = (
        group_agreement_nulls(layers, types, b0, kept, len(grids)) if pruned and full_grid else (None, None)
    )
    return AllocationDiagnostics(
        key=key,
        seeds=tuple(r.record.get("seed") for r in with_grid),
        rows=tuple(first["rows"]),
        columns=tuple(first["columns"]),
        ranks=ranks,
        initial_rank=b0,
        agreement=mean_pairwise_correlation(flat),
        agreement_null=agreement_null(flat.shape[1], b0, kept, len(grids)) if pruned else None,
        type_agreement=mean_pairwise_correlation(column_means),
        type_agreement_null=type_null,
        layer_agreement=mean_pairwise_correlation(row_means),
        layer_agreement_null=layer_null,
        spreads=tuple(rank_spread(row) for row in flat),
        spread_null=spread_null(flat.shape[1], b0, kept),
        type_means=group_means(column_means, first["columns"]),
        layer_means=group_means(row_means, first["rows"]),
        kept_params=tuple(int(r.record["extras"].get("final_trainable_params") or 0) for r in with_grid),
    )


def diagnose_all(runs: list[RunRecord]) -> list[AllocationDiagnostics]:
    """Every cell with rank allocations, in the records' order."""
    found = [diagnose(key, cell) for key, cell in by_cell(runs).items()]
    return [d for d in found if d is not None]


# -- the table ---------------------------------------------------------------------------------

HEADER = (
    "task",
    "backbone",
    "method",
    "variant",
    "budget",
    "seeds",
    "agreement",
    "agreement_null_median",
    "agreement_null_95",
    "type_agreement",
    "type_agreement_null_95",
    "layer_agreement",
    "layer_agreement_null_95",
    "spread",
    "spread_min",
    "spread_max",
    "spread_null_5",
    "spread_null_median",
    "spread_null_95",
    "seeds_above_null_95",
    "kept_params_mean",
    "kept_params_min",
    "kept_params_max",
)


def table_rows(found: list[AllocationDiagnostics]) -> list[dict[str, Any]]:
    rows = []
    for d in found:
        task, backbone, method, variant, budget = d.key
        null = d.agreement_null
        rows.append(
            {
                "task": task,
                "backbone": backbone,
                "method": method,
                "variant": variant or "",
                "budget": budget,
                "seeds": len(d.seeds),
                "agreement": _round(d.agreement),
                "agreement_null_median": _round(null.median if null else None),
                "agreement_null_95": _round(null.high if null else None),
                "type_agreement": _round(d.type_agreement),
                "type_agreement_null_95": _round(d.type_agreement_null.high if d.type_agreement_null else None),
                "layer_agreement": _round(d.layer_agreement),
                "layer_agreement_null_95": _round(d.layer_agreement_null.high if d.layer_agreement_null else None),
                "spread": _round(d.spread),
                "spread_min": _round(min(d.spreads)),
                "spread_max": _round(max(d.spreads)),
                "spread_null_5": _round(d.spread_null.low),
                "spread_null_median": _round(d.spread_null.median),
                "spread_null_95": _round(d.spread_null.high),
                "seeds_above_null_95": sum(s > d.spread_null.high for s in d.spreads),
                "kept_params_mean": round(float(np.mean(d.kept_params))),
                "kept_params_min": min(d.kept_params),
                "kept_params_max": max(d.kept_params),
            }
        )
    return rows


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_csv(found: list[AllocationDiagnostics]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(found):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def to_markdown(found: list[AllocationDiagnostics]) -> str:
    lines = [
        "# Allocation diagnostics: are the final ranks signal or noise?",
        "",
        "Per cell of a dynamic-rank method (its complete seeds). **Agreement**: mean pairwise Pearson r of the "
        "seeds' per-module final ranks (modules), of their per-type means (types) and of their per-layer means "
        "(layers); the null is the same statistic of as many random-pruning runs (modules: median [95th percentile]; "
        "types and layers: [95th percentile], wide because each averages a few numbers). **Spread**: "
        "population std of one run's per-module ranks, mean over seeds (min-max); the null band is random "
        "pruning to the record's own final count "
        f"(5 % / median / 95 %, {NULL_DRAWS} draws, seed {NULL_SEED}). Kept params: the paper's count at the end.",
        "",
        "| task | cell | n | agreement (modules) | null | agreement (types) | agreement (layers) | spread | "
        "spread null | seeds above null 95 % | kept params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in found:
        null = d.agreement_null
        lines.append(
            f"| {d.key[0]} | {d.label} | {len(d.seeds)} | {_fmt(d.agreement)} | "
            f"{_fmt(null.median if null else None)} [{_fmt(null.high if null else None)}] | "
            f"{agreement_text(d.type_agreement, d.type_agreement_null)} | "
            f"{agreement_text(d.layer_agreement, d.layer_agreement_null)} | "
            f"{d.spread:.2f} ({min(d.spreads):.2f}-{max(d.spreads):.2f}) | "
            f"{d.spread_null.low:.2f} / {d.spread_null.median:.2f} / {d.spread_null.high:.2f} | "
            f"{sum(s > d.spread_null.high for s in d.spreads)} of {len(d.spreads)} | "
            f"{np.mean(d.kept_params):,.0f} ({min(d.kept_params):,}-{max(d.kept_params):,}) |"
        )
    lines += ["", "Per-type mean rank (mean over layers, then seeds; 95 % t-interval over seeds):", ""]
    lines += group_means_table(found, "type_means")
    lines += ["", "Per-layer mean rank (mean over module types, then seeds; 95 % t-interval over seeds):", ""]
    lines += group_means_table(found, "layer_means", head="layer {}")
    return "\n".join(lines) + "\n"


def group_means_table(found: list[AllocationDiagnostics], groups: str, head: str = "{}") -> list[str]:
    """A markdown table of each cell's ``type_means`` or ``layer_means``, one column a group."""
    names = list(dict.fromkeys(name for d in found for name in getattr(d, groups)))
    lines = ["| task | cell | " + " | ".join(head.format(n) for n in names) + " |", "|---|---|" + "---:|" * len(names)]
    for d in found:
        cells = []
        for name in names:
            m = getattr(d, groups).get(name)
            interval = "" if m is None or m.low is None else f" [{m.low:.2f}, {m.high:.2f}]"
            cells.append("—" if m is None else f"{m.mean:.2f}{interval}")
        lines.append(f"| {d.key[0]} | {d.label} | " + " | ".join(cells) + " |")
    return lines


def agreement_text(value: float | None, null: NullBand | None) -> str:
    """An agreement and its null's 95th percentile: ``0.58 [0.48]``."""
    return _fmt(value) + (f" [{null.high:.2f}]" if null else "")


def caption(d: AllocationDiagnostics) -> str:
    """Two short lines for a Figure 2 panel: agreement (of the modules, and of the layers' means) and
    spread, each against random pruning."""
    agreement = "—" if d.agreement is None else f"{d.agreement:.2f}"
    null = f" (random: {d.agreement_null.high:.2f} at 95 %)" if d.agreement_null else ""
    if d.agreement_null and d.layer_agreement is not None and d.layer_agreement_null:
        agreement += f", layers {d.layer_agreement:.2f}"
        null = f" (random 95 %: {d.agreement_null.high:.2f}, {d.layer_agreement_null.high:.2f})"
    spread = f"spread {d.spread:.2f} (random: {d.spread_null.low:.2f}-{d.spread_null.high:.2f})"
    return f"agreement r = {agreement}{null}\n{spread}"


def write_diagnostics(runs: list[RunRecord], tables_dir: Path) -> list[Path]:
    """``allocation_diagnostics.md`` and ``.csv`` under ``tables_dir``; nothing if no cell has allocations."""
    found = diagnose_all(runs)
    if not found:
        return []
    written = []
    for suffix, text in (("md", to_markdown(found)), ("csv", to_csv(found))):
        path = Path(tables_dir) / f"allocation_diagnostics.{suffix}"
        write_text_atomic(path, text)
        written.append(path)
    return written
