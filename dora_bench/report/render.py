"""How a table is written: Markdown, LaTeX (booktabs) and long-format CSV; and ``all_runs.csv``.

What a table holds and decides (rows, columns, bolding, averages, notes) is ``table_model.py``'s
``Table``; ``tables.py`` fills one per paper table, and this module only writes it out.
Scores print with 2 decimals, as the paper prints them (a column may ask for fewer: MiB as
whole numbers); CSVs keep 4. The LaTeX is ready to paste: notes (refusals, marks) sit in the
float under the tabular, wide tables span both columns, and text is escaped for the default
OT1 font encoding.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from dora_bench.report.cells import (
    INELIGIBLE_MARK,
    RunRecord,
    Settings,
    eligible,
    metric,
    minutes_per_epoch,
    trainable_params,
)
from dora_bench.report.table_model import INCOMPLETE_MARK, Column, Row, Table

#: The table model's names, still imported from here by ``llm.py``.
__all__ = ["Column", "Row", "Table", "all_runs_csv", "to_csv", "to_latex", "to_markdown"]


def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _cell_text(table: Table, i: int, j: int, bold: bool, fmt: str) -> str:
    """One cell as Markdown (fmt="md") or LaTeX (fmt="tex", escaped)."""
    cell, digits = table.cells[i][j], table.columns[j].digits
    esc = _tex_escape if fmt == "tex" else str
    state = cell.state()
    if state == "missing":
        return esc("—")
    if state in ("failed", "unfinished", "ineligible"):
        seeds = {"failed": cell.failed, "unfinished": cell.unfinished, "ineligible": cell.ineligible}[state]
        return esc(f"{state} ({len(seeds)})" + (INELIGIBLE_MARK if state == "ineligible" else ""))
    if state == "refused":
        return f"refused [{table.refused_cells().index((i, j)) + 1}]"
    if state == "no value":
        return "n/a"
    stat = table.settings.stat
    center, spread = cell.center(stat), cell.spread(stat)
    text = _number(center, digits)
    if bold:
        text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
    rest = INELIGIBLE_MARK if cell.ineligible else ""
    if spread is not None:
        low = _number(spread[0], digits)
        rest += f" ± {low}" if stat == "mean" else f" [{low}, {_number(spread[1], digits)}]"
    text += esc(rest)
    if remarks := cell.remarks(short=fmt == "tex"):  # a page is narrow; its notes explain the marks
        said = f"({', '.join(remarks)})"
        text += f" {said}" if fmt == "md" else f" {{\\scriptsize {esc(said)}}}"
    return text


def _paper_text(ours: float | None, paper: float | None, digits: int = 2) -> str:
    if paper is None:
        return ""
    return _number(paper, digits) + (f" ({ours - paper:+.{digits}f})" if ours is not None else "")


def _grid(table: Table, fmt: str) -> tuple[list[str], list[tuple[list[str], list[str] | None]]]:
    """Header and, per row, ours and the reference row under it (with Δ), shared by Markdown and
    LaTeX; the reference row is None where the row has no reference numbers. With fmt="tex" every
    entry is escaped already."""
    esc = _tex_escape if fmt == "tex" else str
    stat = table.settings.stat
    header = [*table.row_header] + (["Params"] if table.params else []) + [c.label for c in table.columns]
    if table.average:
        header.append(table.average)
    bold = [table.column_bold(j) for j in range(len(table.columns))]
    averages = [table.average_of(i) for i in range(len(table.rows))] if table.average else []
    average_bold = table.bold(averages) if table.average else []
    body = []
    for i, (row, cells) in enumerate(zip(table.rows, table.cells)):
        ours = list(row.labels)
        delta = table.compares_to_reference  # otherwise the reference row prints its numbers alone
        label = f"{table.reference} (Δ)" if delta else f"{table.reference}, {table.reference_backbone}"
        paper = [label] + [""] * (len(row.labels) - 1)
        if table.params:
            mine, theirs = table.params[i]
            ours.append(f"{mine / 1e6:.2f}M" if mine is not None else "—")
            paper.append(theirs or "")
        ours, paper = [esc(t) for t in ours], [esc(t) for t in paper]
        for j, (column, cell) in enumerate(zip(table.columns, cells)):
            ours.append(_cell_text(table, i, j, bold[j][i], fmt))
            ours_center = cell.center(stat) if delta else None
            paper.append(esc(_paper_text(ours_center, table.paper_value(row, column.paper_key), column.digits)))
        if table.average:
            value, full = averages[i]
            text = "—" if value is None else _number(value)
            if value is not None and not full:
                text += INCOMPLETE_MARK  # explained in the notes
            text = esc(text)
            if average_bold[i]:
                text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
            ours.append(text)
            paper.append(esc(_paper_text(value if delta else None, table.paper_value(row, table.average))))
        body.append((ours, paper if row.paper else None))
    return [esc(h) for h in header], body


def to_markdown(table: Table) -> str:
    header, body = _grid(table, "md")
    lines = [
        f"### {table.heading()}",
        "",
        table.caption,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for ours, reference in body for cells in (ours, reference) if cells]
    if table.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in table.notes]]
    return "\n".join(lines) + "\n"


#: Characters that TeX reads as commands or that the default OT1 fonts lack, spelt for LaTeX.
TEX_SPELLINGS = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "#": "\\#",
    "$": "\\$",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "<": "\\textless{}",
    ">": "\\textgreater{}",
    "|": "\\textbar{}",
    "Δ": "$\\Delta$",
    "—": "--",
    "−": "-",
    "±": "$\\pm$",
    "≈": "$\\approx$",
    "γ": "$\\gamma$",
    INELIGIBLE_MARK: "$^\\dagger$",
    INCOMPLETE_MARK: "$^\\ddagger$",
}


def _tex_escape(text: str) -> str:
    """Plain text as LaTeX, one character at a time (so no spelling is escaped again)."""
    return "".join(TEX_SPELLINGS.get(char, char) for char in text)


def to_latex(table: Table) -> str:
    """A booktabs float ready to paste (needs \\usepackage{booktabs,graphicx}): the tabular shrunk
    to the line width only if wider (a two-column page), the notes in small type under it."""
    header, body = _grid(table, "tex")
    spec = "l" * len(table.row_header) + "r" * (len(header) - len(table.row_header))
    env = "table*" if table.wide else "table"
    lines = [
        f"% {table.heading()}: written by dora-bench-tables; needs \\usepackage{{booktabs,graphicx}}",
        f"\\begin{{{env}}}[t]",
        "\\centering",
        "\\small",
        "\\setlength{\\tabcolsep}{4pt}",  # inside the float, so the page's setting is untouched
        # \width is the tabular's natural width: shrink it to the line (a column, or the page for
        # table*) when it is wider, never enlarge it
        "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    for k, (ours, reference) in enumerate(body):
        lines.append(" & ".join(ours) + " \\\\")
        if reference:  # under ours, smaller, and a little space before the next row
            lines.append(" & ".join(f"{{\\scriptsize {t}}}" if t else "" for t in reference) + " \\\\")
            if k + 1 < len(body):
                lines.append("\\addlinespace")
    lines += ["\\bottomrule", "\\end{tabular}}"]
    notes = table.note_texts()
    if notes:
        lines += ["\\par\\smallskip", "{\\footnotesize\\raggedright", *[f"{_tex_escape(n)}\\par" for n in notes], "}"]
    lines += [
        f"\\caption{{{_tex_escape(table.caption)}}}",
        f"\\label{{tab:{table.name}}}",
        f"\\end{{{env}}}",
    ]
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
    "ineligible",
    "state",
    "refused",
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
    bold = [table.column_bold(j) for j in range(len(table.columns))]
    for i, (row, cells) in enumerate(zip(table.rows, table.cells)):
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
                    "epoch": table.settings.epoch if getattr(column.value, "reads_epoch", False) else "",
                    "value": _round(center),
                    "spread": _round(spread[0]),
                    "spread_high": _round(spread[1]) if len(spread) > 1 else None,
                    "n": cell.n,
                    "expected": cell.expected,
                    "seeds": _seeds(cell.scores),
                    "failed": _seeds(cell.failed),
                    "unfinished": _seeds(cell.unfinished),
                    "ineligible": _seeds(cell.ineligible),
                    "state": cell.state(),
                    "refused": cell.refused or "",
                    "paper": paper,
                    "diff": _round(center - paper)
                    if center is not None and paper is not None and table.compares_to_reference
                    else None,
                    "best": bold[j][i],
                    "lr": " ".join(f"{lr:g}" for _, lr in sorted(cell.lrs)),
                    "lr_source": " ".join(source for source, _ in sorted(cell.lrs)),
                }
            )
    return out.getvalue()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _seeds(seeds: Iterable[int]) -> str:
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
    "best_eligible",
    "last_epoch",
    "last",
    "trainable_params",
    "minutes_per_epoch",
    "peak_gpu_mib",
    "device",
    "precision",
    "eval_examples",
    "data_fingerprint",
    "git_commit",
    "started_at",
    "finished_at",
    "lr",
    "lr_source",
)


def all_runs_csv(runs: list[RunRecord], results_dir: Path) -> str:
    """One line per record: the raw material of every table (main metric x100)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ALL_RUNS_FIELDS, lineterminator="\n")
    writer.writeheader()
    extras = ("lr", "lr_source")
    computed = {"path", "trainable_params", "minutes_per_epoch", "best_eligible", *extras}
    computed |= {"best_epoch", "best", "last_epoch", "last"}
    as_is = [key for key in ALL_RUNS_FIELDS if key not in computed]  # the record's own fields, as they are
    for run in runs:
        r = run.record
        line = {key: r.get(key) for key in as_is} | {key: (r.get("extras") or {}).get(key) for key in extras}
        line.update(
            path=run.path.relative_to(results_dir).as_posix(),
            trainable_params=trainable_params(r),
            minutes_per_epoch=_round(minutes_per_epoch(r, Settings())),
            best_eligible=eligible(r, Settings()) if r.get("best") else None,
        )
        for which in ("best", "last"):
            line[f"{which}_epoch"] = (r.get(which) or {}).get("epoch")
            line[which] = _round(metric()(r, Settings(epoch=which)))
        writer.writerow(line)
    return out.getvalue()
