"""The paper's tables, as a pure function of the run records under ``<results_dir>/runs/``.

    python -m dora_bench.tables [results_dir=results] [stat=mean|median] [epoch=best|last] [seeds=5]
                                [backbone=<name>] [figures=true|false]

writes ``<results_dir>/tables/<table>.{md,tex,csv}`` for Tables 2, 3, 4, 5, 6 and 9, plus
``all_cells.{md,csv}`` (every task/backbone/method/variant/budget found, paper grid or not)
and ``all_runs.csv`` (one line per record); then the figures (``dora_bench.figures``).

One cell pools the seeds of one (task, backbone, method, variant, budget). Its number is
the mean over seeds with the sample standard deviation (ddof=1), or with ``stat=median``
the median and the range [min, max]. Each seed contributes its best dev epoch (the loop
marks which epochs are eligible: for DoRA and AdaLoRA only those after the budget is
final) or, with ``epoch=last``, its last. Scores are x100 with 2 decimals, as the paper
prints them. Nothing is filled in: a cell without records prints "—", one whose runs all
failed "failed (k)", one with fewer complete seeds than ``seeds`` says "n=3/5", and one
whose records were made with different settings is refused, with the differing keys and
the record paths in the table's notes.

Each paper table is one small function below (rows and paper numbers from
``dora_bench/paper/*.csv``) feeding the shared ``build_table``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dora_bench.errors import ConfigError, UserError

PAPER_DIR = Path(__file__).resolve().parent / "paper"
SCHEMA_VERSION = 1  # of record.json (dora_bench/records.py)

# The paper's method names and ours.
METHODS = {"Full FT": "full_ft", "BitFit": "bitfit", "H-Adapter": "houlsby", "P-Adapter": "pfeiffer",
           "LoRA": "lora", "AdaLoRA": "adalora", "DoRA": "dora"}
GLUE = {"RTE": "rte", "MRPC": "mrpc", "STS-B": "stsb", "CoLA": "cola", "SST-2": "sst2", "QNLI": "qnli",
        "QQP": "qqp", "MNLI": "mnli"}

# Config keys that say where or how a run was executed, not what it learnt: records that differ
# only in these pool into one cell. Any other difference refuses the cell.
BOOKKEEPING_KEYS = frozenset({
    "seed", "results_dir", "cache_dir", "overwrite", "dry_run", "logger", "wandb_project", "wandb_group",
    "num_gpus", "runs_per_gpu", "trainer.device", "trainer.progress", "trainer.num_workers", "trainer.log_every",
    "trainer.eval_batch_size", "task.data_dir", "task.train_file", "task.dev_file", "backbone.name_or_path",
})


@dataclass(frozen=True)
class Settings:
    stat: str = "mean"     # mean (± sample std, ddof=1) | median ([min, max])
    epoch: str = "best"    # best | last: which epoch of each run counts
    seeds: int = 5         # complete seeds a cell should have

    def __post_init__(self):
        if self.stat not in ("mean", "median"):
            raise ConfigError(f"stat={self.stat!r} is not known: use stat=mean or stat=median")
        if self.epoch not in ("best", "last"):
            raise ConfigError(f"epoch={self.epoch!r} is not known: use epoch=best or epoch=last")
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds} must be >= 1: the seeds each cell should have (paper: 5)")

    def describe(self) -> str:
        stat = "mean ± sample std (ddof=1)" if self.stat == "mean" else "median [min, max]"
        epoch = ("each run's best dev epoch (DoRA, AdaLoRA: only epochs after the budget is final)"
                 if self.epoch == "best" else "each run's last epoch")
        return f"{stat} over seeds of {epoch}; {self.seeds} seeds expected per cell"


# -- records --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    path: Path
    record: dict[str, Any]

    @property
    def key(self) -> tuple:
        r = self.record
        return (r.get("task"), r.get("backbone"), r.get("method"), r.get("variant"), r.get("budget"))


def load_runs(results_dir: str | Path) -> list[Run]:
    """Every ``record.json`` under ``<results_dir>/runs/``, sorted by path."""
    runs = []
    for path in sorted((Path(results_dir) / "runs").rglob("record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"can't read {path} ({err}): fix or remove it") from None
        if record.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{path} has schema_version {record.get('schema_version')!r}, these tables read "
                            f"{SCHEMA_VERSION}: regenerate it or use the dora-bench version that wrote it")
        runs.append(Run(path, record))
    return runs


# -- one cell: the seeds of one setting ---------------------------------------------------

Value = Callable[[dict, Settings], "float | None"]


@dataclass
class Cell:
    scores: dict[int, float] = field(default_factory=dict)  # seed -> value, complete runs
    failed: list[int] = field(default_factory=list)
    unfinished: list[int] = field(default_factory=list)     # a record not complete: running or killed
    no_value: list[int] = field(default_factory=list)       # complete, but without this value
    refused: str | None = None                              # why these records can't be pooled
    expected: int = 5

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def full(self) -> bool:
        return self.refused is None and self.n >= self.expected

    def center(self, stat: str) -> float | None:
        if self.refused or not self.scores:
            return None
        values = list(self.scores.values())
        return statistics.mean(values) if stat == "mean" else statistics.median(values)

    def spread(self, stat: str) -> tuple[float, ...] | None:
        """(std,) for the mean (None with one seed); (min, max) for the median."""
        values = list(self.scores.values())
        if self.refused or not values:
            return None
        if stat == "mean":
            return (statistics.stdev(values),) if len(values) > 1 else None
        return (min(values), max(values))

    def state(self) -> str:
        """ok | incomplete | missing | failed | unfinished | no value | refused"""
        if self.refused:
            return "refused"
        if self.scores:
            return "ok" if self.full else "incomplete"
        if self.failed:
            return "failed"
        if self.unfinished:
            return "unfinished"
        return "no value" if self.no_value else "missing"

    def remarks(self) -> list[str]:
        out = []
        if self.scores and self.n < self.expected:
            out.append(f"n={self.n}/{self.expected}")
        if self.scores and self.failed:
            out.append(f"{len(self.failed)} failed")
        if self.scores and self.unfinished:
            out.append(f"{len(self.unfinished)} unfinished")
        return out


def aggregate(runs: list[Run], value: Value, settings: Settings) -> Cell:
    """Pool the runs of one setting (all share ``Run.key``) into a cell."""
    cell = Cell(expected=settings.seeds)
    if not runs:
        return cell
    cell.refused = config_conflict(runs)
    for run in runs:
        seed, status = run.record.get("seed"), run.record.get("status")
        if status == "failed":
            cell.failed.append(seed)
        elif status != "complete":
            cell.unfinished.append(seed)
        elif (v := value(run.record, settings)) is None:
            cell.no_value.append(seed)
        else:
            cell.scores[seed] = v
    return cell


def config_conflict(runs: list[Run]) -> str | None:
    """None if the runs' resolved configs agree outside ``BOOKKEEPING_KEYS``, else a one-line
    reason naming the differing keys (with each record's value) and the record paths."""
    flat = [_flatten(run.record.get("config") or {}) for run in runs]
    ignored = BOOKKEEPING_KEYS | ({"budget"} if all(run.key[4] is None for run in runs) else set())  # Full FT, BitFit
    keys = sorted({k for f in flat for k in f} - ignored)
    differing = [k for k in keys if len({json.dumps(f.get(k, "<absent>"), sort_keys=True) for f in flat}) > 1]
    seeds = [run.record.get("seed") for run in runs]
    if not differing and len(set(seeds)) == len(seeds):
        return None
    if not differing:
        return "two records of the same seed: " + ", ".join(str(run.path) for run in runs)
    detail = "; ".join(f"{k}: " + ", ".join(f"{f.get(k, '<absent>')}" for f in flat) for k in differing[:4])
    more = f" (and {len(differing) - 4} more keys)" if len(differing) > 4 else ""
    return (f"records made with different configs, differing in {', '.join(differing)} [{detail}{more}]: "
            + ", ".join(str(run.path) for run in runs))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` -> ``{"trainer.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- what a column reads from a record --------------------------------------------------------

def metric(name: str | None = None) -> Value:
    """A dev metric x100 from the run's best (or last) epoch; None: the record's main metric."""
    def value(record: dict, settings: Settings) -> float | None:
        chosen = record.get(settings.epoch) or {}
        found = (chosen.get("metrics") or {}).get(name or record.get("main_metric"))
        return None if found is None else 100.0 * float(found)
    return value


def minutes_per_epoch(record: dict, settings: Settings) -> float | None:
    """Training time per epoch (dev evaluation excluded), averaged over the run's epochs."""
    seconds = [e["seconds"] for e in record.get("epochs") or [] if e.get("seconds") is not None]
    return statistics.mean(seconds) / 60.0 if seconds else None


def peak_gpu_mib(record: dict, settings: Settings) -> float | None:
    return record.get("peak_gpu_mib")


def trainable_params(record: dict) -> int | None:
    """As the paper counts them: kept components at the end for DoRA and AdaLoRA."""
    extras = record.get("extras") or {}
    return extras.get("final_trainable_params") or (record.get("trainable_params") or {}).get("paper")


# -- a table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    label: str
    task: str
    value: Value
    paper_key: str | None = None  # column of the paper CSV


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]       # what the row header columns print
    method: str
    budget: int | None
    variant: str | None = None
    paper: dict | None = None     # the paper CSV's row


@dataclass
class Table:
    name: str
    title: str
    caption: str
    row_header: tuple[str, ...]
    columns: list[Column]
    rows: list[Row]
    cells: list[list[Cell]]
    settings: Settings
    backbone: str
    higher_is_better: bool | None = True  # None: no "best" (columns that don't compete)
    average: str | None = None            # label of an average column (Table 2's "Avg")
    params: list[tuple[int | None, str | None]] | None = None   # (ours, paper) per row
    notes: list[str] = field(default_factory=list)

    def paper_value(self, row: Row, column_key: str | None) -> float | None:
        text = (row.paper or {}).get(column_key or "", "")
        return float(text) if text not in ("", None) else None

    def average_of(self, i: int) -> tuple[float | None, bool]:
        """Mean of the row's column centers (the paper's Avg) and whether every cell was full."""
        centers = [c.center(self.settings.stat) for c in self.cells[i]]
        if any(v is None for v in centers):
            return None, False
        return statistics.mean(centers), all(c.full for c in self.cells[i])

    def column_best(self, j: int) -> float | None:
        return self.best([(row[j].center(self.settings.stat), row[j].full) for row in self.cells])

    def best(self, values: list[tuple[float | None, bool]]) -> float | None:
        """The best value among those whose cell is full (incomplete cells are not compared)."""
        eligible = [v for v, full in values if v is not None and full]
        if not eligible or self.higher_is_better is None:
            return None
        return max(eligible) if self.higher_is_better else min(eligible)


def build_table(name: str, title: str, runs: list[Run], rows: list[Row], columns: list[Column],
                settings: Settings, backbone: str, *, row_header: tuple[str, ...], what: str,
                higher_is_better: bool = True, average: str | None = None, with_params: bool = False) -> Table:
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    cells = [[aggregate(by_key.get((c.task, backbone, r.method, r.variant, r.budget), []), c.value, settings)
              for c in columns] for r in rows]
    caption = (f"{title}, {backbone}. {what}; {settings.describe()}. Paper: Mao et al. (ACL 2024); "
               f"Δ = ours − paper. Bold: the {'highest' if higher_is_better else 'lowest'} per column "
               f"among cells with all seeds.")
    table = Table(name, title, caption, row_header, columns, rows, cells, settings, backbone, higher_is_better, average)
    if with_params:
        table.params = []
        for r in rows:
            keys = [(c.task, backbone, r.method, r.variant, r.budget) for c in columns]
            # the median over the row's runs: counts differ between tasks only by a head size or so
            counts = sorted(p for key in keys for run in by_key.get(key, []) if (p := trainable_params(run.record)))
            table.params.append((counts[len(counts) // 2] if counts else None, (r.paper or {}).get("trainable_params")))
    for r, row_cells in zip(rows, cells):
        for c, cell in zip(columns, row_cells):
            if cell.refused:
                table.notes.append(f"{' '.join(r.labels)} / {c.label}: refused, {cell.refused}")
    return table


def _paper(filename: str) -> list[dict[str, str]]:
    with (PAPER_DIR / filename).open(newline="") as handle:
        return list(csv.DictReader(handle))


def _method_rows(paper: list[dict[str, str]]) -> list[Row]:
    return [Row((p["method"], p["budget"] or "—"), METHODS[p["method"]], int(p["budget"]) if p["budget"] else None,
                paper=p) for p in paper]


# -- the paper's tables -----------------------------------------------------------------------

def table2(runs: list[Run], settings: Settings, backbone: str = "roberta-base") -> Table:
    """GLUE dev: 7 methods x budgets 2/8 x 8 tasks, and the average of the 8 as the paper's Avg."""
    columns = [Column(label, task, metric(), label) for label, task in GLUE.items()]
    return build_table("table2", "Table 2: GLUE", runs, _method_rows(_paper("table2_glue.csv")), columns, settings,
                       backbone, row_header=("Method", "bT"), average="Avg", with_params=True,
                       what=("dev score x100 (MNLI: matched accuracy; STS-B: Pearson; CoLA: Matthews; others: "
                             "accuracy); Avg: mean of the 8 task scores, as the paper computes it"))


def table3(runs: list[Run], settings: Settings, backbone: str = "roberta-base") -> Table:
    """SQuAD v1.1 / v2.0 dev: exact match and F1."""
    columns = [Column(f"{label} {m.upper()}", task, metric("exact_match" if m == "em" else "f1"), f"{task}_{m}")
               for label, task in (("v1.1", "squad_v1"), ("v2.0", "squad_v2")) for m in ("em", "f1")]
    return build_table("table3", "Table 3: SQuAD", runs, _method_rows(_paper("table3_squad.csv")), columns, settings,
                       backbone, row_header=("Method", "bT"), with_params=True,
                       what="dev exact match / F1 x100 (official normalisation; v2.0 with no-answer handling)")


def table4(runs: list[Run], settings: Settings, backbone: str = "bart-base") -> Table:
    """XSum: ROUGE-1/2/L on bart-base."""
    columns = [Column(label, "xsum", metric(key), key) for label, key in (("R-1", "rouge1"), ("R-2", "rouge2"),
                                                                           ("R-L", "rougeL"))]
    return build_table("table4", "Table 4: XSum", runs, _method_rows(_paper("table4_xsum.csv")), columns, settings,
                       backbone, row_header=("Method", "bT"), with_params=True,
                       what="ROUGE-1/2/L x100 (beam 3, summaries up to 64 tokens)")


def table5(runs: list[Run], settings: Settings, backbone: str = "roberta-base") -> Table:
    """DoRA at budget 8 with and without the DEM regulariser (variant ``nodem``: gamma = 0)."""
    paper = {p["variant"]: p for p in _paper("table5_dem_ablation.csv")}
    rows = [Row(("with DEM",), "dora", 8, None, paper["with DEM"]),
            Row(("without DEM",), "dora", 8, "nodem", paper["without DEM"])]
    columns = [Column(label, GLUE[label], metric(), label) for label in ("STS-B", "CoLA", "SST-2")]
    return build_table("table5", "Table 5: DEM ablation", runs, rows, columns, settings, backbone,
                       row_header=("DoRA, bT = 8",), what="dev score x100 (STS-B: Pearson; CoLA: Matthews; SST-2: "
                                                         "accuracy); without DEM: gamma = 0, records variant=nodem")


#: Table 6's initial budgets and where their records are: b0 = 3 = ceil(1.5 x 2) is plain DoRA.
INIT_BUDGET_VARIANTS = {2: "b0_2", 3: None, 4: "b0_4", 6: "b0_6", 8: "b0_8"}


def table6(runs: list[Run], settings: Settings, backbone: str = "roberta-base") -> Table:
    """DoRA at final budget 2 from initial budgets 2..8 (b0 = 2: no pruning)."""
    paper = {int(p["initial_budget"]): p for p in _paper("table6_initial_budget.csv")}
    rows = [Row((str(b0),), "dora", 2, variant, paper.get(b0)) for b0, variant in INIT_BUDGET_VARIANTS.items()]
    columns = [Column(label, GLUE[label], metric(), label) for label in ("MRPC", "STS-B", "SST-2")]
    table = build_table("table6", "Table 6: initial budget", runs, rows, columns, settings, backbone,
                        row_header=("b0",), what=("dev score x100 at final budget bT = 2 (MRPC: accuracy; STS-B: "
                                                   "Pearson; SST-2: accuracy); b0 = 3 is DoRA's default, plain "
                                                   "DoRA records; the others variant=b0_<k>"))
    for row in rows:  # a record in row b0=k must have started from k components per module
        for run in runs:
            started = (run.record.get("extras") or {}).get("init_budget")
            if run.key in {(c.task, backbone, "dora", row.variant, 2) for c in columns} \
                    and started is not None and started != int(row.labels[0]):
                table.notes.append(f"{run.path} is in row b0={row.labels[0]} but started from b0={started}")
    return table


def table9(runs: list[Run], settings: Settings, backbone: str = "roberta-base", budget: int = 8) -> Table:
    """Minutes per training epoch and peak GPU memory on QNLI (one-epoch runs, variant ``epoch1``)."""
    rows = [Row((p["method"],), METHODS[p["method"]], None if METHODS[p["method"]] in ("full_ft", "bitfit") else budget,
                "epoch1", p) for p in _paper("table9_efficiency_qnli_rtx3090.csv")]
    columns = [Column("min/epoch", "qnli", minutes_per_epoch, "minutes_per_epoch"),
               Column("GPU MiB", "qnli", peak_gpu_mib, "gpu_memory_mib")]
    return build_table("table9", "Table 9: efficiency on QNLI", runs, rows, columns, settings, backbone,
                       row_header=("Method",), higher_is_better=False,
                       what=(f"minutes per training epoch (dev evaluation excluded) and peak GPU memory allocated "
                             f"by torch, one epoch of QNLI, budget {budget}; paper: an RTX 3090 (its memory figure "
                             f"is likely nvidia-smi's, which also counts the CUDA context and cache); not x100, "
                             f"lower is better; epoch= does not apply"))


PAPER_TABLES = (table2, table3, table4, table5, table6, table9)


# -- rendering ----------------------------------------------------------------------------------

def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _cell_text(table: Table, cell: Cell, bold: bool, fmt: str) -> str:
    """One cell as Markdown (fmt="md") or LaTeX (fmt="tex")."""
    state = cell.state()
    if state == "missing":
        return "—" if fmt == "md" else "--"
    if state in ("failed", "unfinished"):
        return f"{state} ({len(cell.failed if state == 'failed' else cell.unfinished)})"
    if state in ("refused", "no value"):
        return "refused (see notes)" if state == "refused" else "n/a"
    stat = table.settings.stat
    center, spread = cell.center(stat), cell.spread(stat)
    text = _number(center)
    if bold:
        text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
    pm = " ± " if fmt == "md" else " $\\pm$ "
    if spread is not None:
        text += (pm + _number(spread[0])) if stat == "mean" else f" [{_number(spread[0])}, {_number(spread[1])}]"
    remarks = cell.remarks()
    if remarks:
        text += f" ({', '.join(remarks)})" if fmt == "md" else f" {{\\scriptsize ({', '.join(remarks)})}}"
    return text


def _paper_text(ours: float | None, paper: float | None) -> str:
    if paper is None:
        return ""
    return _number(paper) + (f" ({ours - paper:+.2f})" if ours is not None else "")


def _grid(table: Table, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Header and body lines (ours row, then the paper's row with Δ) shared by Markdown and LaTeX."""
    stat = table.settings.stat
    header = [*table.row_header] + (["Params"] if table.params else []) + [c.label for c in table.columns]
    if table.average:
        header.append(table.average)
    column_best = [table.column_best(j) for j in range(len(table.columns))]
    averages = [table.average_of(i) for i in range(len(table.rows))] if table.average else []
    average_best = table.best(averages) if table.average else None
    body = []
    for i, (row, cells) in enumerate(zip(table.rows, table.cells)):
        ours = list(row.labels)
        paper = ["paper (Δ)"] + [""] * (len(row.labels) - 1)
        if table.params:
            mine, theirs = table.params[i]
            ours.append(f"{mine / 1e6:.2f}M" if mine is not None else "—")
            paper.append(theirs or "")
        for j, (column, cell) in enumerate(zip(table.columns, cells)):
            center = cell.center(stat)
            ours.append(_cell_text(table, cell, cell.full and center == column_best[j], fmt))
            paper.append(_paper_text(center, table.paper_value(row, column.paper_key)))
        if table.average:
            value, full = averages[i]
            text = "—" if value is None else _number(value)
            if value is not None and full and value == average_best:
                text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
            if value is not None and not full:
                text += " (incomplete cells)"
            ours.append(text)
            paper.append(_paper_text(value, table.paper_value(row, table.average)))
        body += [ours, paper] if any(row.paper for row in table.rows) else [ours]
    return header, body


def to_markdown(table: Table) -> str:
    header, body = _grid(table, "md")
    lines = [f"### {table.title}", "", table.caption, "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if table.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in table.notes]]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for plain, escaped in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#"), ("_", "\\_"),
                           ("Δ", "$\\Delta$"), ("—", "--"), ("−", "-"), ("±", "$\\pm$"), ("≈", "$\\approx$")):
        text = text.replace(plain, escaped)
    return text


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs \\usepackage{booktabs})."""
    header, body = _grid(table, "tex")
    spec = "l" * len(table.row_header) + "r" * (len(header) - len(table.row_header))
    esc = [_tex_escape(h) for h in header]
    lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(esc) + " \\\\", "\\midrule"]
    paired = any(row.paper for row in table.rows)  # ours, then the paper's row (smaller)
    for k, cells in enumerate(body):
        text = [c if "\\" in c else _tex_escape(c) for c in cells]
        if paired and k % 2:
            text = [f"{{\\scriptsize {t}}}" if t else "" for t in text]
        lines.append(" & ".join(text) + " \\\\")
        if paired and k % 2 and k + 1 < len(body):
            lines.append("\\addlinespace")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex_escape(table.caption)}}}",
              f"\\label{{tab:{table.name}}}", "\\end{table}"]
    if table.notes:
        lines += [f"% note: {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "row", "method", "budget", "variant", "backbone", "column", "task", "stat", "epoch",
              "value", "spread", "spread_high", "n", "expected", "seeds", "failed", "unfinished", "state",
              "paper", "diff", "best")


def to_csv(table: Table) -> str:
    """Long format: one line per (row, column), numbers at full precision (4 decimals)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    stat = table.settings.stat
    best = [table.column_best(j) for j in range(len(table.columns))]
    for row, cells in zip(table.rows, table.cells):
        for j, (column, cell) in enumerate(zip(table.columns, cells)):
            center, spread = cell.center(stat), cell.spread(stat) or (None,)
            paper = table.paper_value(row, column.paper_key)
            writer.writerow({
                "table": table.name, "row": " ".join(row.labels), "method": row.method, "budget": row.budget,
                "variant": row.variant, "backbone": table.backbone, "column": column.label, "task": column.task,
                "stat": stat, "epoch": table.settings.epoch, "value": _round(center), "spread": _round(spread[0]),
                "spread_high": _round(spread[1]) if len(spread) > 1 else None, "n": cell.n, "expected": cell.expected,
                "seeds": _seeds(cell.scores), "failed": _seeds(cell.failed), "unfinished": _seeds(cell.unfinished),
                "state": cell.state(), "paper": paper,
                "diff": _round(center - paper) if center is not None and paper is not None else None,
                "best": cell.full and center == best[j],
            })
    return out.getvalue()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _seeds(seeds) -> str:
    return " ".join(map(str, sorted(seeds)))


# -- everything found, paper grid or not --------------------------------------------------------

def all_cells(runs: list[Run], settings: Settings) -> Table:
    """Every (task, backbone, method, variant, budget) in the records with its main metric:
    covers runs outside the paper's grid (the demo task, other backbones, new ablations)."""
    by_key: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    keys = sorted(by_key, key=lambda key: tuple("" if v is None else str(v) for v in key))
    rows = []
    for task, backbone, method, variant, budget in keys:
        main = by_key[(task, backbone, method, variant, budget)][0].record.get("main_metric") or "?"
        rows.append(Row((task, backbone, method, variant or "", "—" if budget is None else str(budget), main),
                        method, budget, variant))
    cells = [[aggregate(by_key[key], metric(), settings)] for key in keys]
    table = Table("all_cells", "Every setting found", f"Main dev metric x100; {settings.describe()}.",
                  ("task", "backbone", "method", "variant", "budget", "metric"), [Column("score", "", metric())],
                  rows, cells, settings, backbone="(any)", higher_is_better=None)
    for row, row_cells in zip(rows, cells):
        if row_cells[0].refused:
            table.notes.append(f"{' / '.join(row.labels)}: refused, {row_cells[0].refused}")
    return table


ALL_RUNS_FIELDS = ("path", "task", "backbone", "method", "variant", "budget", "seed", "status", "error", "main_metric",
                   "best_epoch", "best", "last_epoch", "last", "trainable_params", "minutes_per_epoch", "peak_gpu_mib",
                   "device", "git_commit", "started_at", "finished_at")


def all_runs_csv(runs: list[Run], results_dir: Path) -> str:
    """One line per record: the raw material of every table (main metric x100)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ALL_RUNS_FIELDS, lineterminator="\n")
    writer.writeheader()
    as_is = ("task", "backbone", "method", "variant", "budget", "seed", "status", "error", "main_metric",
             "peak_gpu_mib", "device", "git_commit", "started_at", "finished_at")
    for run in runs:
        r = run.record
        line = {key: r.get(key) for key in as_is}
        line.update(path=run.path.relative_to(results_dir).as_posix(), trainable_params=trainable_params(r),
                    minutes_per_epoch=_round(minutes_per_epoch(r, Settings())))
        for which in ("best", "last"):
            line[f"{which}_epoch"] = (r.get(which) or {}).get("epoch")
            line[which] = _round(metric()(r, Settings(epoch=which)))
        writer.writerow(line)
    return out.getvalue()


# -- entry point ----------------------------------------------------------------------------------

def write_tables(results_dir: str | Path, settings: Settings, backbone: str | None = None) -> list[Path]:
    """Write every table under ``<results_dir>/tables/``; returns the paths written."""
    results_dir = Path(results_dir)
    runs = load_runs(results_dir)
    out_dir = results_dir / "tables"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for make in PAPER_TABLES:
        table = make(runs, settings, **({"backbone": backbone} if backbone else {}))
        for suffix, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
            written.append(_write(out_dir / f"{table.name}.{suffix}", render(table)))
        for note in table.notes:
            print(f"dora-bench-tables: {table.name}: {note}", file=sys.stderr)
    cells = all_cells(runs, settings)
    written.append(_write(out_dir / "all_cells.md", to_markdown(cells)))
    written.append(_write(out_dir / "all_cells.csv", to_csv(cells)))
    written.append(_write(out_dir / "all_runs.csv", all_runs_csv(runs, results_dir)))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def parse_args(argv: list[str]) -> dict[str, str]:
    known = ("results_dir", "stat", "epoch", "seeds", "backbone", "figures")
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"can't read {arg!r}: use key=value with key one of {', '.join(known)}")
        args[key] = value
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if not args.get("seeds", "5").isdigit():
            raise ConfigError(f"seeds={args['seeds']!r} must be a whole number: e.g. seeds=5")
        settings = Settings(stat=args.get("stat", "mean"), epoch=args.get("epoch", "best"),
                            seeds=int(args.get("seeds", 5)))
        results_dir = Path(args.get("results_dir", "results"))
        if not (results_dir / "runs").is_dir():
            raise ConfigError(f"no runs at {results_dir / 'runs'}: run a sweep first or pass results_dir=<dir>")
        written = write_tables(results_dir, settings, args.get("backbone"))
        print(f"dora-bench-tables: {len(written)} files in {results_dir / 'tables'} ({settings.describe()})")
        if args.get("figures", "true").lower() in ("true", "1", "yes"):
            from dora_bench.figures import write_figures

            figures = write_figures(results_dir)
            print(f"dora-bench-tables: {len(figures)} figures in {results_dir / 'figures'}")
    except UserError as err:
        print(f"dora-bench-tables: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
