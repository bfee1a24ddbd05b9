"""What a table is, whatever it is written as: rows (a method at a budget, the paper's numbers
beside ours), columns (a task and the value read from each record), one ``cells.Cell`` per row and
column, and what follows from them: which cell is bold, the average column, the notes.
``tables.py`` builds one per paper table from a ``TableSpec``; ``render.py`` writes it out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from dora_bench.report.cells import INELIGIBLE_MARK, Cell, Claim, Settings, Value

#: Marks an average (Table 2's Avg) over cells that are not all complete.
INCOMPLETE_MARK = "‡"

# -- a table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    value: Value
    paper_key: str | None = None  # column of the paper CSV
    digits: int = 2  # decimals printed (the CSV keeps 4)


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]  # what the row header columns print
    method: str
    budget: int | None
    variant: str | None = None
    paper: dict | None = None  # the paper CSV's row
    claim: Claim | None = None  # what its records must have (Table 5: DEM off); see cells.aggregate


@dataclass
class Table:
    name: str
    title: str  # without "Table N": LaTeX numbers its own tables
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
    number: str | None = None  # the paper's table number, for the Markdown heading
    bold_by_budget: bool = False  # compare rows of equal budget only; budget-free rows not at all
    wide: bool = False  # LaTeX: span both columns of a two-column page (table*)
    reference: str = "paper"  # whose numbers the rows under ours hold (the LLM tables: the lecture deck's)
    reference_backbone: str | None = None  # the backbone those numbers were measured on (None: ours)

    @property
    def compares_to_reference(self) -> bool:
        """Δ only between numbers of one backbone: MiniLM's 83 on STS-B is not 8 points below roberta-base's 91."""
        return self.reference_backbone in (None, self.backbone)

    def paper_value(self, row: Row, column_key: str | None) -> float | None:
        text = (row.paper or {}).get(column_key or "", "")
        return float(text) if text not in ("", None) else None

    def average_of(self, i: int) -> tuple[float | None, bool]:
        """Mean of the row's column centers (the paper's Avg) and whether every cell was full."""
        centers = [c.center(self.settings.stat) for c in self.cells[i]]
        if any(v is None for v in centers):
            return None, False
        return statistics.mean(centers), all(c.full for c in self.cells[i])

    def bold(self, values: list[tuple[float | None, bool]]) -> list[bool]:
        """Per row, whether its (value, full) is the best of its block: full cells only, since a
        cell short of seeds is not compared."""
        better = max if self.higher_is_better else min
        best: dict = {}
        for row, (value, full) in zip(self.rows, values):
            block = self.block(row)
            if value is not None and full and block is not None and self.higher_is_better is not None:
                best[block] = better(best.get(block, value), value)
        return [
            value is not None and full and best.get(self.block(row)) == value
            for row, (value, full) in zip(self.rows, values)
        ]

    def block(self, row: Row) -> int | str | None:
        """The rows a row is compared with: all of them, or (``bold_by_budget``) those of its
        budget; None: compared with none (Full FT and BitFit beside the budget blocks)."""
        return row.budget if self.bold_by_budget else "all"

    def column_bold(self, j: int) -> list[bool]:
        stat = self.settings.stat
        return self.bold([(row[j].center(stat), row[j].full) for row in self.cells])

    def refused_cells(self) -> list[tuple[int, int]]:
        """(row, column) of every refused cell, in reading order: refusal k is the k-th (from 1)."""
        return [(i, j) for i, row in enumerate(self.cells) for j, cell in enumerate(row) if cell.refused]

    def where(self, i: int, j: int) -> str:
        """A cell's address in the notes: "LoRA 8 / RTE"."""
        return f"{' '.join(label for label in self.rows[i].labels if label)} / {self.columns[j].label}"

    def note_texts(self) -> list[str]:
        """The notes without record paths (LaTeX, the paper): one per refusal, then the marks."""
        notes = [
            f"[{k}] {self.where(i, j)}: refused, {self.cells[i][j].refused}"
            for k, (i, j) in enumerate(self.refused_cells(), start=1)
        ]
        if self.average and any(
            value is not None and not full for value, full in map(self.average_of, range(len(self.rows)))
        ):
            notes.append(f"{INCOMPLETE_MARK} {self.average}: a mean over cells of which some lack seeds")
        if any(cell.ineligible for row in self.cells for cell in row):
            counted = "counted in" if self.settings.count_ineligible else "left out of"
            notes.append(
                f"{INELIGIBLE_MARK} a seed whose run never reached an eligible epoch (the budget was not final "
                f"at any evaluation) is {counted} the statistic; the remark says how many"
            )
        return notes

    @property
    def notes(self) -> list[str]:
        """The notes with the records each refusal is about (Markdown, stderr)."""
        texts = self.note_texts()
        for k, (i, j) in enumerate(self.refused_cells()):
            texts[k] += ": " + ", ".join(str(path) for path in self.cells[i][j].refused_records)
        return texts

    def heading(self) -> str:
        return f"Table {self.number}: {self.title}" if self.number else self.title


@dataclass(frozen=True)
class TableSpec:
    """What one paper table is, before any record is read: ``tables.build_table`` fills it with cells.

    ``name``: the file name, ``"table<N>"`` (N is the paper's number); ``what``: the caption's account
    of the numbers; ``by_budget``: bold compares rows of equal budget only; ``with_params``: a
    Params column (ours, the paper's); ``wide``: LaTeX spans both columns of the page;
    ``epochs``: the columns read dev epochs (False: Table 9's timings); ``paper_backbone``: the
    backbone the paper's numbers were measured on (Δ only against the same backbone)."""

    name: str
    title: str
    row_header: tuple[str, ...]
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    what: str
    higher_is_better: bool = True
    average: str | None = None  # label of an average column (Table 2's "Avg")
    with_params: bool = False
    by_budget: bool = False
    wide: bool = False
    epochs: bool = True
    paper_backbone: str = "roberta-base"
