"""A table of cells, and how it is written: Markdown, LaTeX (booktabs) and long-format CSV.

``Table`` is the shape every table shares (row headers, columns, one ``cells.Cell`` per row
and column, the paper's numbers beside ours); ``tables.py`` fills one per paper table.
Scores print with 2 decimals, as the paper prints them; CSVs keep 4.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dora_bench.report.cells import Cell, Run, Settings, Value, metric, minutes_per_epoch, trainable_params

# -- a table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    value: Value
    paper_key: str | None = None  # column of the paper CSV


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]  # what the row header columns print
    method: str
    budget: int | None
    variant: str | None = None
    paper: dict | None = None  # the paper CSV's row


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
    average: str | None = None  # label of an average column (Table 2's "Avg")
    params: list[tuple[int | None, str | None]] | None = None  # (ours, paper) per row
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
    lines = [
        f"### {table.title}",
        "",
        table.caption,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if table.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in table.notes]]
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for plain, escaped in (
        ("\\", "\\textbackslash{}"),
        ("&", "\\&"),
        ("%", "\\%"),
        ("#", "\\#"),
        ("_", "\\_"),
        ("Δ", "$\\Delta$"),
        ("—", "--"),
        ("−", "-"),
        ("±", "$\\pm$"),
        ("≈", "$\\approx$"),
    ):
        text = text.replace(plain, escaped)
    return text


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs \\usepackage{booktabs})."""
    header, body = _grid(table, "tex")
    spec = "l" * len(table.row_header) + "r" * (len(header) - len(table.row_header))
    esc = [_tex_escape(h) for h in header]
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(esc) + " \\\\",
        "\\midrule",
    ]
    paired = any(row.paper for row in table.rows)  # ours, then the paper's row (smaller)
    for k, cells in enumerate(body):
        text = [c if "\\" in c else _tex_escape(c) for c in cells]
        if paired and k % 2:
            text = [f"{{\\scriptsize {t}}}" if t else "" for t in text]
        lines.append(" & ".join(text) + " \\\\")
        if paired and k % 2 and k + 1 < len(body):
            lines.append("\\addlinespace")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{_tex_escape(table.caption)}}}",
        f"\\label{{tab:{table.name}}}",
        "\\end{table}",
    ]
    if table.notes:
        lines += [f"% note: {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


# -- CSV ----------------------------------------------------------------------------------------

CSV_FIELDS = (
    "table",
    "row",
    "method",
    "budget",
    "variant",
    "backbone",
    "column",
    "task",
    "stat",
    "epoch",
    "value",
    "spread",
    "spread_high",
    "n",
    "expected",
    "seeds",
    "failed",
    "unfinished",
    "state",
    "paper",
    "diff",
    "best",
    "lr",
    "lr_source",
)


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
            writer.writerow(
                {
                    "table": table.name,
                    "row": " ".join(row.labels),
                    "method": row.method,
                    "budget": row.budget,
                    "variant": row.variant,
                    "backbone": table.backbone,
                    "column": column.label,
                    "task": column.task,
                    "stat": stat,
                    "epoch": table.settings.epoch,
                    "value": _round(center),
                    "spread": _round(spread[0]),
                    "spread_high": _round(spread[1]) if len(spread) > 1 else None,
                    "n": cell.n,
                    "expected": cell.expected,
                    "seeds": _seeds(cell.scores),
                    "failed": _seeds(cell.failed),
                    "unfinished": _seeds(cell.unfinished),
                    "state": cell.state(),
                    "paper": paper,
                    "diff": _round(center - paper) if center is not None and paper is not None else None,
                    "best": cell.full and center == best[j],
                    "lr": " ".join(f"{lr:g}" for _, lr in sorted(cell.lrs)),
                    "lr_source": " ".join(source for source, _ in sorted(cell.lrs)),
                }
            )
    return out.getvalue()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _seeds(seeds) -> str:
    return " ".join(map(str, sorted(seeds)))


ALL_RUNS_FIELDS = (
    "path",
    "task",
    "backbone",
    "method",
    "variant",
    "budget",
    "seed",
    "status",
    "error",
    "main_metric",
    "best_epoch",
    "best",
    "last_epoch",
    "last",
    "trainable_params",
    "minutes_per_epoch",
    "peak_gpu_mib",
    "device",
    "git_commit",
    "started_at",
    "finished_at",
    "lr",
    "lr_source",
)


def all_runs_csv(runs: list[Run], results_dir: Path) -> str:
    """One line per record: the raw material of every table (main metric x100)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ALL_RUNS_FIELDS, lineterminator="\n")
    writer.writeheader()
    as_is = (
        "task",
        "backbone",
        "method",
        "variant",
        "budget",
        "seed",
        "status",
        "error",
        "main_metric",
        "peak_gpu_mib",
        "device",
        "git_commit",
        "started_at",
        "finished_at",
    )
    extras = ("lr", "lr_source")
    for run in runs:
        r = run.record
        line = {key: r.get(key) for key in as_is} | {key: (r.get("extras") or {}).get(key) for key in extras}
        line.update(
            path=run.path.relative_to(results_dir).as_posix(),
            trainable_params=trainable_params(r),
            minutes_per_epoch=_round(minutes_per_epoch(r, Settings())),
        )
        for which in ("best", "last"):
            line[f"{which}_epoch"] = (r.get(which) or {}).get("epoch")
            line[which] = _round(metric()(r, Settings(epoch=which)))
        writer.writerow(line)
    return out.getvalue()
