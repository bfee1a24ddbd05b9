"""Tables and a plot for the decoder-LLM experiments (``experiment=llm_commonsense``, ``llm_gsm8k``).

For every (task, backbone, variant) whose records come from an LLM task family (commonsense, gsm8k;
their synthetic stand-ins too, in tables of their own), ``make tables`` writes

- ``llm_<task>_<backbone>[-<variant>].{md,tex,csv}``: accuracy x100 per commonsense set and their average, or
  GSM8K exact match, one row per method at each budget found, with the paper-style parameter count;
- ``llm_<task>_<backbone>[-<variant>]_efficiency.{md,tex,csv}``: minutes of training (evaluation left out),
  seconds per optimizer step, peak GPU memory allocated by torch during training (a CPU run has
  none: its peak process RSS is in the records), and the size of the exported adapter;
and ``figures.py`` the accuracy-vs-memory plot of the same groups.

Cells pool seeds as every table does (``cells.py``), with 3 seeds expected (the experiments run 3).
Reference rows, commonsense only: where the backbone is a model of the lecture deck's copy of the
weight-decomposed DoRA table (Liu et al. 2024, Table 1: LLaMA-7B/13B, LLaMA2-7B, LLaMA3-8B), its
LoRA row sits under our LoRA and its DoRA row under our ``dora_wd`` (the same method). Their ranks
are 32 (LoRA, DoRA) and 16, on q/k/v/up/down, with their own hyperparameters: comparable in kind,
not budget-matched to ours. No such numbers exist for GSM8K or for Llama-3.2: no reference rows.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from dora_bench.records import write_text_atomic
from dora_bench.report.cells import PAPER_DIR, Cell, Run, Settings, Value, by_cell, metric, trainable_params
from dora_bench.report.render import Column, Row, Table, to_csv, to_latex, to_markdown

SEEDS = 3  # the LLM experiments' seeds
#: task family -> [(column label, metric key, the deck CSV's column)]
COLUMNS = {
    "commonsense": [
        ("BoolQ", "boolq", "BoolQ"),
        ("PIQA", "piqa", "PIQA"),
        ("SIQA", "siqa", "SIQA"),
        ("HellaSwag", "hellaswag", "HellaSwag"),
        ("WinoGrande", "winogrande", "WinoGrande"),
        ("ARC-e", "arc_e", "ARC-e"),
        ("ARC-c", "arc_c", "ARC-c"),
        ("OBQA", "obqa", "OBQA"),
        ("Avg", "avg", "Avg"),
    ],
    "gsm8k": [("GSM8K EM", "exact_match", None)],
}
#: rows, in the order of the deck's tables: the baselines, then the low-rank family, DoRA last
METHODS = ("full_ft", "bitfit", "prompt_tuning", "houlsby", "pfeiffer", "lora", "dora_wd", "adalora", "dora")
ALWAYS = {"full_ft", "prompt_tuning", "houlsby", "pfeiffer", "lora", "dora_wd", "adalora", "dora"}  # bitfit: if run
DECK = "deck_dora_wd_commonsense.csv"
DECK_ROWS = {"lora": "LoRA", "dora_wd": "DoRA-wd"}  # our method -> the deck's row it sits beside


def family(run: Run) -> str | None:
    return ((run.record.get("config") or {}).get("task") or {}).get("family")


def deck_rows(backbone: str) -> dict[str, dict]:
    """``{our method: the deck's row}`` for a backbone the deck has numbers for; {} otherwise."""
    with (PAPER_DIR / DECK).open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if backbone in row["backbones"].split()]
    return {ours: row for ours, theirs in DECK_ROWS.items() for row in rows if row["method"] == theirs}


def _rows(runs: list[Run], reference: dict[str, dict]) -> list[Row]:
    variant = runs[0].key[3]
    budgets = sorted({run.key[4] for run in runs if run.key[4] is not None}) or [None]
    present = {run.key[2] for run in runs}
    rows = []
    for method in METHODS:
        if method not in ALWAYS and method not in present:
            continue
        unsized = any(run.key[2] == method and run.key[4] is None for run in runs) or method in ("full_ft", "bitfit")
        for budget in [None] if unsized else budgets:
            label = ("—" if budget is None else str(budget),)
            rows.append(Row((method, *label), method, budget, variant, paper=reference.get(method)))
    return rows


def accuracy_table(task: str, backbone: str, runs: list[Run], settings: Settings) -> Table:
    kind, variant = family(runs[0]), runs[0].key[3]
    reference = deck_rows(backbone) if kind == "commonsense" and variant is None else {}
    rows = _rows(runs, reference)
    columns = [Column(label, task, metric(key), deck_key) for label, key, deck_key in COLUMNS[kind]]
    cells_of = by_cell(runs)
    cells = [[_cell(cells_of, task, backbone, row, c, settings) for c in columns] for row in rows]
    what = (
        "accuracy x100 per set (the first answer word of a greedy generation) and their unweighted mean"
        if kind == "commonsense"
        else "exact match x100 of the final number, greedy decoding, GSM8K test"
    )
    where = f"{backbone}" + (f" (variant {variant})" if variant else "")
    caption = f"{task} on {where}: {what}; {settings.describe()}. Params: the paper's count (kept components)."
    if reference:
        model = next(iter(reference.values()))["model"]
        caption += (
            f" Reference rows (Δ = ours − theirs): the lecture deck's copy of Liu et al. (2024) Table 1 for {model}, "
            f"LoRA rank 32 beside our LoRA and weight-decomposed DoRA rank 32 beside our dora_wd, on q/k/v/up/down "
            f"with "
            f"their hyperparameters: not budget-matched to ours."
        )
    elif kind == "commonsense":
        caption += " No reference numbers for this model (the deck has LLaMA-7B/13B, LLaMA2-7B, LLaMA3-8B)."
    table = Table(
        f"llm_{task}_{_name(backbone, variant)}", f"{task}, {where}", caption, ("Method", "bT"), columns, rows,
        cells, settings, backbone, True, reference="deck",
    )  # fmt: skip
    table.params = [(_median_params(cells_of.get(_key(task, backbone, row), [])), _deck_params(row)) for row in rows]
    return table


def efficiency_table(task: str, backbone: str, runs: list[Run], settings: Settings) -> Table:
    variant = runs[0].key[3]
    rows = _rows(runs, {})
    columns = [
        Column("train min", task, _efficiency("train_minutes")),
        Column("s/step", task, _efficiency("seconds_per_step")),
        Column("peak GPU MiB", task, _efficiency("peak_gpu_mib")),
        Column("adapter MiB", task, _efficiency("adapter_mib")),
    ]
    cells_of = by_cell(runs)
    cells = [[_cell(cells_of, task, backbone, row, c, settings) for c in columns] for row in rows]
    where = f"{backbone}" + (f" (variant {variant})" if variant else "")
    caption = (
        f"{task} on {where}, Table 9's line per method: minutes of training (optimizer steps, evaluation left "
        f"out), seconds per step, peak GPU memory allocated by torch in training (n/a on a CPU), size of the exported "
        f"adapter (Full FT: n/a, nothing exported); {_spread(settings)} over seeds, {SEEDS} seeds expected per cell. "
        f"Not x100; lower is better; the epoch setting does not apply."
    )
    table = Table(
        f"llm_{task}_{_name(backbone, variant)}_efficiency", f"{task}, {backbone}: efficiency", caption,
        ("Method", "bT"), columns, rows, cells, settings, backbone, False,
    )  # fmt: skip
    table.params = [(_median_params(cells_of.get(_key(task, backbone, row), [])), None) for row in rows]
    return table


def _name(backbone: str, variant: str | None) -> str:
    return backbone + (f"-{variant}" if variant else "")


def _spread(settings: Settings) -> str:
    return "mean ± sample std (ddof=1)" if settings.stat == "mean" else "median [min, max]"


def _key(task: str, backbone: str, row: Row) -> tuple:
    return (task, backbone, row.method, row.variant, row.budget)


def _cell(
    cells_of: Mapping[tuple, list[Run]], task: str, backbone: str, row: Row, column: Column, settings: Settings
) -> Cell:
    from dora_bench.report.cells import aggregate

    return aggregate(cells_of.get(_key(task, backbone, row), []), column.value, settings)


def _efficiency(key: str) -> Value:
    def value(record: dict, settings: Settings) -> float | None:
        found = ((record.get("extras") or {}).get("efficiency") or {}).get(key)
        return None if found is None else float(found)

    return value


def _median_params(runs: list[Run]) -> int | None:
    counts = sorted(p for run in runs if run.complete and (p := trainable_params(run.record)))
    return counts[len(counts) // 2] if counts else None


def _deck_params(row: Row) -> str | None:
    return f"{row.paper['params_pct']}% (r={row.paper['rank']})" if row.paper else None


def llm_groups(runs: list[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """``{(task, backbone, variant or ""): runs}`` for the LLM task families."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        if family(run) in COLUMNS:
            groups.setdefault((run.key[0], run.key[1], run.key[3] or ""), []).append(run)
    return groups


def llm_tables(runs: list[Run], settings: Settings) -> list[Table]:
    settings = dataclasses.replace(settings, seeds=SEEDS)
    tables = []
    for (task, backbone, _), group in sorted(llm_groups(runs).items()):
        tables += [accuracy_table(task, backbone, group, settings), efficiency_table(task, backbone, group, settings)]
    return tables


def write_llm_tables(runs: list[Run], settings: Settings, out_dir: Path) -> list[Path]:
    written = []
    for table in llm_tables(runs, settings):
        for suffix, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
            written.append(write_text_atomic(out_dir / f"{table.name}.{suffix}", render(table)))
    return written
