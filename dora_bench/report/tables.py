"""The paper's tables, as a pure function of the run records under ``<results_dir>/runs/``.

    dora-bench-tables [--results-dir results] [--stat mean|median] [--epoch best|best_per_metric|last]
                      [--count-ineligible] [--seeds 5] [--backbone <name>] [--no-figures]

writes ``<results_dir>/tables/<table>.{md,tex,csv}`` for Tables 2, 3, 4, 5, 6 and 9, the
decoder-LLM experiments' tables (``llm.py``: ``llm_<task>_<backbone>[_efficiency]``), plus
``all_cells.{md,csv}`` (every task/backbone/method/variant/budget found, paper grid or not)
and ``all_runs.csv`` (one line per record); then the figures (``dora_bench.report.figures``).

One cell pools the seeds of one (task, backbone, method, variant, budget) (``cells.py``:
mean ± sample std or median [min, max] of each seed's chosen dev epoch, x100).
Nothing is filled in: a cell without records prints "—", one whose runs all failed
"failed (k)", one with fewer complete seeds than ``seeds`` says "n=3/5", a seed that never
reached an eligible epoch is marked † and left out, and a cell whose records differ in what
they learnt from (config, precision, data) or contradict their row's setting is refused,
the reason in the table's notes. Each caption says which epoch the numbers come from and
which learning rate every method ran at, with the config key that set it: only DoRA's come
tuned from the paper.

Each paper table is one small function below: a ``TableSpec`` (``table_model.py``; rows and
paper numbers from ``report/paper/*.csv``) that the shared ``build_table`` fills with cells;
``render.py`` writes them.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path

from dora_bench.errors import ConfigError, UserError
from dora_bench.records import write_text_atomic
from dora_bench.report.cells import (
    EPOCH_CHOICES,
    METHODS,
    PAPER_DIR,
    PAPER_NAMES,
    Claim,
    RunRecord,
    Settings,
    aggregate,
    by_cell,
    load_runs,
    metric,
    minutes_per_epoch,
    peak_gpu_mib,
    trainable_params,
)
from dora_bench.report.llm import write_llm_tables
from dora_bench.report.render import all_runs_csv, to_csv, to_latex, to_markdown
from dora_bench.report.table_model import Column, Row, Table, TableSpec

GLUE = {
    "RTE": "rte",
    "MRPC": "mrpc",
    "STS-B": "stsb",
    "CoLA": "cola",
    "SST-2": "sst2",
    "QNLI": "qnli",
    "QQP": "qqp",
    "MNLI": "mnli",
}

#: What each ``extras.lr_source`` means (``checks.resolve_lr``), for the captions.
LR_SOURCES = {
    "trainer.lr": "trainer.lr (command line)",
    "method.lr_by_task": "method.lr_by_task (per task)",
    "method.lr": "method.lr (one rate for every task)",
    "task.lr": "task.lr (DoRA's, paper Table 8)",
}


def build_table(spec: TableSpec, runs: list[RunRecord], settings: Settings, backbone: str) -> Table:
    """The table ``spec`` describes, its cells pooled from ``runs`` of ``backbone``; the caption
    says what the numbers are, which epoch and which learning rates."""
    cells_of = by_cell(runs)

    def runs_of(row: Row, column: Column) -> list[RunRecord]:
        return cells_of.get((column.task, backbone, row.method, row.variant, row.budget), [])

    table = Table(
        name=spec.name,
        title=spec.title,
        caption="",
        row_header=spec.row_header,
        columns=list(spec.columns),
        rows=list(spec.rows),
        cells=[[aggregate(runs_of(r, c), c.value, settings, r.claim) for c in spec.columns] for r in spec.rows],
        settings=settings,
        backbone=backbone,
        higher_is_better=spec.higher_is_better,
        average=spec.average,
        number=spec.name.removeprefix("table"),
        bold_by_budget=spec.by_budget,
        wide=spec.wide,
        reference_backbone=spec.paper_backbone,
    )
    paper = (
        "Paper: Mao et al. (ACL 2024); Δ = ours − paper."
        if table.compares_to_reference
        else f"Paper: Mao et al. (ACL 2024) on {spec.paper_backbone}, for reference only (no Δ: another backbone)."
    )
    described = settings.describe(spec.epochs)
    table.caption = f"{spec.title} ({backbone}): {spec.what}; {described}. {paper} {_bold_rule(table)}"
    if spec.with_params:
        table.params = [
            (
                median_params([run for c in spec.columns for run in runs_of(r, c)]),
                (r.paper or {}).get("trainable_params"),
            )
            for r in spec.rows
        ]
    add_learning_rates(table)
    return table


def _bold_rule(table: Table) -> str:
    best = "highest" if table.higher_is_better else "lowest"
    if not table.bold_by_budget:
        return f"Bold: the {best} per column among cells with all seeds."
    return (
        f"Bold: the {best} per column within each budget block (methods at equal bT), among cells "
        f"with all seeds; Full FT and BitFit, which have no budget, are not compared."
    )


def picked_by(runs: list[RunRecord], columns: list[Column], settings: Settings) -> str:
    """Which metric chose the epoch every column reads (Tables 3 and 4 show several metrics)."""
    if settings.epoch == "last":
        return "every column from each run's last epoch"
    if settings.epoch == "best_per_metric":
        return "each column from each metric's own best eligible epoch"
    tasks = {c.task for c in columns}
    mains = sorted({str(run.record.get("main_metric")) for run in runs if run.key[0] in tasks and run.complete})
    return f"every column from the epoch picked by {'/'.join(mains) or 'the task main metric'}"


def median_params(runs: list[RunRecord]) -> int | None:
    """The median paper-style parameter count over a row's complete runs (counts differ between
    tasks only by a head size or so; a failed run may have stopped before its final count)."""
    counts = sorted(p for run in runs if run.complete and (p := trainable_params(run.record)))
    return counts[len(counts) // 2] if counts else None


def add_learning_rates(table: Table) -> None:
    """Append to the caption, per method, the learning rates its scored runs trained at and the
    config key that set each (``extras.lr_source``); nothing if no record says."""
    rates: dict[str, dict[str, set[float]]] = {}  # method -> source -> rates
    picked_by: set[str] = set()  # where lr_picks came from (a sweep), said once rather than per method
    for row, row_cells in zip(table.rows, table.cells):
        for cell in row_cells:
            if cell.refused:  # its number isn't shown, so neither is its rate
                continue
            for source, lr in cell.lrs:
                source = "method.lr_by_task" if source.startswith("method.lr_by_task.") else source
                if source.startswith("lr_picks."):
                    key, _, detail = source.partition(" (")
                    source = "lr_picks"
                    if detail:
                        picked_by.add(detail.removesuffix(")"))
                rates.setdefault(PAPER_NAMES.get(row.method, row.method), {}).setdefault(source, set()).add(lr)
    if not rates:
        return
    per_method = "; ".join(
        name
        + " "
        + ", ".join(f"{LR_SOURCES.get(source, source)} {_rates(values)}" for source, values in sorted(sources.items()))
        for name, sources in rates.items()
    )
    table.caption += f" Learning rates (extras.lr_source): {per_method}."
    if picked_by:
        table.caption += f" lr_picks: one rate per method, picked on the dev set ({'; '.join(sorted(picked_by))})."
    if any(source != "lr_picks" for sources in rates.values() for source in sources):
        table.caption += (
            " Only task.lr is tuned (for DoRA, by its authors); every other rate is as configured in "
            "conf/method (sources in its comments), not tuned here."
        )


def _rates(values: set[float]) -> str:
    ordered = sorted(values)
    if len(ordered) > 3:
        return f"{_lr_text(ordered[0])} to {_lr_text(ordered[-1])}"
    return "/".join(_lr_text(v) for v in ordered)


def _lr_text(lr: float) -> str:
    """``0.0012`` -> ``1.2e-3``."""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _glue_columns(*labels: str) -> tuple[Column, ...]:
    """GLUE tasks by the paper's labels, each read on its main metric."""
    return tuple(Column(label, GLUE[label], metric(), label) for label in labels)


def _paper(filename: str) -> list[dict[str, str]]:
    with (PAPER_DIR / filename).open(newline="") as handle:
        return list(csv.DictReader(handle))


def _method_rows(paper: list[dict[str, str]]) -> tuple[Row, ...]:
    return tuple(
        Row((p["method"], p["budget"] or "—"), METHODS[p["method"]], int(p["budget"]) if p["budget"] else None, paper=p)
        for p in paper
    )


# -- the paper's tables -----------------------------------------------------------------------


def table2(runs: list[RunRecord], settings: Settings, backbone: str = "roberta-base") -> Table:
    """GLUE dev: 7 methods x budgets 2/8 x 8 tasks, and the average of the 8 as the paper's Avg."""
    spec = TableSpec(
        name="table2",
        title="GLUE",
        row_header=("Method", "bT"),
        rows=_method_rows(_paper("table2_glue.csv")),
        columns=_glue_columns(*GLUE),
        what=(
            "dev score x100 (MNLI: matched accuracy; STS-B: Pearson; CoLA: Matthews; others: "
            "accuracy); Avg: mean of the 8 task scores, as the paper computes it"
        ),
        average="Avg",
        with_params=True,
        by_budget=True,
        wide=True,  # 12 columns of mean ± std: the width of a two-column page
    )
    return build_table(spec, runs, settings, backbone)


def table3(runs: list[RunRecord], settings: Settings, backbone: str = "roberta-base") -> Table:
    """SQuAD v1.1 / v2.0 dev: exact match and F1."""
    columns = tuple(
        Column(f"{label} {m.upper()}", task, metric("exact_match" if m == "em" else "f1"), f"{task}_{m}")
        for label, task in (("v1.1", "squad_v1"), ("v2.0", "squad_v2"))
        for m in ("em", "f1")
    )
    spec = TableSpec(
        name="table3",
        title="SQuAD",
        row_header=("Method", "bT"),
        rows=_method_rows(_paper("table3_squad.csv")),
        columns=columns,
        what=(
            "dev exact match / F1 x100 (official normalisation; v2.0 with no-answer handling), "
            + picked_by(runs, columns, settings)
        ),
        with_params=True,
        by_budget=True,
    )
    return build_table(spec, runs, settings, backbone)


def table4(runs: list[RunRecord], settings: Settings, backbone: str = "bart-base") -> Table:
    """XSum: ROUGE-1/2/L on bart-base."""
    columns = tuple(
        Column(label, "xsum", metric(key), key)
        for label, key in (("R-1", "rouge1"), ("R-2", "rouge2"), ("R-L", "rougeL"))
    )
    spec = TableSpec(
        name="table4",
        title="XSum",
        row_header=("Method", "bT"),
        rows=_method_rows(_paper("table4_xsum.csv")),
        columns=columns,
        what=f"ROUGE-1/2/L x100 (beam 3, summaries up to 64 tokens), {picked_by(runs, columns, settings)}",
        with_params=True,
        by_budget=True,
        paper_backbone="bart-base",
    )
    return build_table(spec, runs, settings, backbone)


def dem_claim(with_dem: bool) -> Claim:
    """Table 5's rows: DEM on (``method.dem_coef`` > 0) or off (= 0), as the record's config says."""

    def check(record: dict) -> str | None:
        coef = ((record.get("config") or {}).get("method") or {}).get("dem_coef")
        if coef is None:
            return "its config has no method.dem_coef"
        if (float(coef) > 0) != with_dem:
            return f"method.dem_coef={coef}, but the row is {'with' if with_dem else 'without'} DEM"
        return None

    return check


def table5(runs: list[RunRecord], settings: Settings, backbone: str = "roberta-base") -> Table:
    """DoRA at budget 8 with and without the DEM regulariser (variant ``nodem``: gamma = 0)."""
    paper = {p["variant"]: p for p in _paper("table5_dem_ablation.csv")}
    spec = TableSpec(
        name="table5",
        title="DEM ablation",
        row_header=("DoRA, bT = 8",),
        rows=(
            Row(("with DEM",), "dora", 8, None, paper["with DEM"], claim=dem_claim(True)),
            Row(("without DEM",), "dora", 8, "nodem", paper["without DEM"], claim=dem_claim(False)),
        ),
        columns=_glue_columns("STS-B", "CoLA", "SST-2"),
        what="dev score x100 (STS-B: Pearson; CoLA: Matthews; SST-2: accuracy); with DEM: records with "
        "method.dem_coef > 0; without DEM: gamma = method.dem_coef = 0, records variant=nodem",
    )
    return build_table(spec, runs, settings, backbone)


#: Table 6's initial budgets and where their records are: b0 = 3 = ceil(1.5 x 2) is plain DoRA.
INIT_BUDGET_VARIANTS = {2: "b0_2", 3: None, 4: "b0_4", 6: "b0_6", 8: "b0_8"}


def init_budget_claim(b0: int) -> Claim:
    """Table 6's rows: the run started from ``b0`` components per module, by its config
    (``method.init_budget``; null is ceil(1.5 bT)) and, where recorded, by what it reported."""

    def check(record: dict) -> str | None:
        method = (record.get("config") or {}).get("method") or {}
        final = method.get("final_budget") or record.get("budget")
        configured = method.get("init_budget")
        if configured is None and final is not None:
            configured = math.ceil(1.5 * float(final))
        for source, value in (
            ("method.init_budget", configured),
            ("extras.init_budget", (record.get("extras") or {}).get("init_budget")),
        ):
            if value is not None and int(value) != b0:
                return f"{source}={value}, but the row is b0={b0}"
        return None

    return check


def table6(runs: list[RunRecord], settings: Settings, backbone: str = "roberta-base") -> Table:
    """DoRA at final budget 2 from initial budgets 2..8 (b0 = 2: no pruning)."""
    paper = {int(p["initial_budget"]): p for p in _paper("table6_initial_budget.csv")}
    spec = TableSpec(
        name="table6",
        title="Initial budget",
        row_header=("b0",),
        rows=tuple(
            Row((str(b0),), "dora", 2, variant, paper.get(b0), claim=init_budget_claim(b0))
            for b0, variant in INIT_BUDGET_VARIANTS.items()
        ),
        columns=_glue_columns("MRPC", "STS-B", "SST-2"),
        what=(
            "dev score x100 at final budget bT = 2 (MRPC: accuracy; STS-B: Pearson; SST-2: accuracy); "
            "b0 = 3 is DoRA's default, plain DoRA records; the others variant=b0_<k>; every record's "
            "method.init_budget matches its row"
        ),
    )
    return build_table(spec, runs, settings, backbone)


def table9(runs: list[RunRecord], settings: Settings, backbone: str = "roberta-base", budget: int = 8) -> Table:
    """Minutes per training epoch and peak GPU memory on QNLI (one-epoch runs, variant ``epoch1``)."""
    rows = tuple(
        Row(
            (p["method"],),
            METHODS[p["method"]],
            None if METHODS[p["method"]] in ("full_ft", "bitfit") else budget,
            "epoch1",
            p,
        )
        for p in _paper("table9_efficiency_qnli_rtx3090.csv")
    )
    spec = TableSpec(
        name="table9",
        title="Efficiency on QNLI",
        row_header=("Method",),
        rows=rows,
        columns=(
            Column("min/epoch", "qnli", minutes_per_epoch, "minutes_per_epoch"),
            Column("GPU MiB", "qnli", peak_gpu_mib, "gpu_memory_mib", digits=0),
        ),
        what=(
            f"minutes per training epoch (dev evaluation excluded) and peak GPU memory (MiB) allocated "
            f"by torch, one epoch of QNLI, budget {budget}; paper: an RTX 3090 (its memory figure "
            f"is likely nvidia-smi's, which also counts the CUDA context and cache); not x100, "
            f"lower is better"
        ),
        higher_is_better=False,
        epochs=False,
    )
    return build_table(spec, runs, settings, backbone)


PAPER_TABLES = (table2, table3, table4, table5, table6, table9)


def all_cells(runs: list[RunRecord], settings: Settings) -> Table:
    """Every (task, backbone, method, variant, budget) in the records with its main metric:
    covers runs outside the paper's grid (the demo task, other backbones, new ablations)."""
    cells_of = by_cell(runs)
    keys = sorted(cells_of, key=lambda key: tuple("" if v is None else str(v) for v in key))
    rows = []
    for task, backbone, method, variant, budget in keys:
        main = cells_of[(task, backbone, method, variant, budget)][0].record.get("main_metric") or "?"
        rows.append(
            Row(
                (task, backbone, method, variant or "", "—" if budget is None else str(budget), main),
                method,
                budget,
                variant,
            )
        )
    cells = [[aggregate(cells_of[key], metric(), settings)] for key in keys]
    table = Table(
        name="all_cells",
        title="Every setting found",
        caption=f"Main dev metric x100; {settings.describe()}.",
        row_header=("task", "backbone", "method", "variant", "budget", "metric"),
        columns=[Column("score", "", metric())],
        rows=rows,
        cells=cells,
        settings=settings,
        backbone="(any)",
        higher_is_better=None,
    )
    add_learning_rates(table)
    return table


# -- entry point ----------------------------------------------------------------------------------


def default_backbone(make: Callable[..., Table], runs: list[RunRecord]) -> str:
    """The paper's backbone for the table, unless every record comes from one other backbone
    (``make tables RESULTS=results/minilm`` then fills the tables with MiniLM's runs)."""
    paper = inspect.signature(make).parameters["backbone"].default
    present = {run.key[1] for run in runs}
    return next(iter(present)) if len(present) == 1 and paper not in present else paper


def write_tables(
    results_dir: str | Path, settings: Settings, backbone: str | None = None, quiet: bool = False
) -> list[Path]:
    """Write every table under ``<results_dir>/tables/``; returns the paths written. ``quiet`` keeps the
    tables' notes out of stderr (a study refreshes after every run; its log would repeat them)."""
    results_dir = Path(results_dir)
    runs = load_runs(results_dir)
    out_dir = results_dir / "tables"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for make in PAPER_TABLES:
        table = make(runs, settings, backbone=backbone or default_backbone(make, runs))
        for suffix, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
            written.append(write_text_atomic(out_dir / f"{table.name}.{suffix}", render(table)))
        for note in () if quiet else table.notes:
            print(f"dora-bench-tables: {table.name}: {note}", file=sys.stderr)
    written += write_llm_tables(runs, settings, out_dir)  # the decoder-LLM experiments (report/llm.py)
    cells = all_cells(runs, settings)
    written.append(write_text_atomic(out_dir / "all_cells.md", to_markdown(cells)))
    written.append(write_text_atomic(out_dir / "all_cells.csv", to_csv(cells)))
    written.append(write_text_atomic(out_dir / "all_runs.csv", all_runs_csv(runs, results_dir)))
    return written


def write_allocation_diagnostics(results_dir: Path, figures: bool = True, quiet: bool = False) -> list[Path]:
    """``tables/allocation_diagnostics.{md,csv}`` and their figures, where a cell holds rank allocations."""
    from dora_bench.report.diagnostics import diagnose_all, write_diagnostics

    runs = load_runs(results_dir)
    written = write_diagnostics(runs, results_dir / "tables")
    if written and figures:
        from dora_bench.report.diagnostics_figure import write_diagnostics_figures

        written += write_diagnostics_figures(diagnose_all(runs), results_dir / "figures")
    if written and not quiet:
        print(f"dora-bench-tables: allocation diagnostics in {written[0]}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="the folder holding runs/ (default: %(default)s)")
    parser.add_argument(
        "--stat",
        default="mean",
        choices=("mean", "median"),
        help="mean ± sample std, or median [min, max] over seeds (default: %(default)s)",
    )
    parser.add_argument(
        "--epoch",
        default="best",
        choices=EPOCH_CHOICES,
        help="best: every metric from the epoch best on the main metric; best_per_metric: each metric's own best "
        "epoch (the released code's summary); last: the last epoch. Only eligible epochs count (default: %(default)s)",
    )
    parser.add_argument(
        "--count-ineligible",
        action="store_true",
        help="count seeds that never reached an eligible epoch in the statistic (they stay marked)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="complete seeds a cell should have (default: %(default)s)")
    parser.add_argument(
        "--backbone",
        default=None,
        help="the backbone whose runs fill the paper tables (default: the paper's, or the only one the records hold)",
    )
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        settings = Settings(stat=args.stat, epoch=args.epoch, seeds=args.seeds, count_ineligible=args.count_ineligible)
        results_dir = Path(args.results_dir)
        if not (results_dir / "runs").is_dir():
            raise ConfigError(f"no runs at {results_dir / 'runs'}: run a sweep first or pass --results-dir <dir>")
        written = write_tables(results_dir, settings, args.backbone)
        print(f"dora-bench-tables: {len(written)} files in {results_dir / 'tables'} ({settings.describe()})")
        if not args.no_figures:
            from dora_bench.report.figures import write_figures  # matplotlib only when figures are wanted

            figures = write_figures(results_dir)
            print(f"dora-bench-tables: {len(figures)} figures in {results_dir / 'figures'}")
        write_allocation_diagnostics(results_dir, figures=not args.no_figures)
    except UserError as err:
        print(f"dora-bench-tables: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
