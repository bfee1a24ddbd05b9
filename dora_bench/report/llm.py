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
GSM8K's column is test exact match read at the epoch the run selected on its held-out dev slice
(``tasks/gsm8k.py``), whatever ``Settings.epoch`` says beyond best/last: test is never selected on.

Reference rows, printed under ours only where the backbone is a model the published table has:

- commonsense: the lecture deck's copy of the weight-decomposed DoRA table (Liu et al. 2024, Table 1:
  LLaMA-7B/13B, LLaMA2-7B, LLaMA3-8B), its LoRA row under our LoRA and its DoRA row under our
  ``dora_wd`` (the same method); rank 32 on q/k/v/up/down with their hyperparameters;
- GSM8K: LLM-Adapters' maths table (Hu et al. 2023, LLaMA-7B/13B trained on math_10k.json), its LoRA
  row under our LoRA, its Series adapter under our Houlsby adapter (a series bottleneck adapter too),
  and its Parallel-adapter and Prefix-tuning rows on their own (we run neither).

Like for like with ``experiment=llm_commonsense_dorawd`` / ``llm_gsm8k_llmadapters`` (their protocol
and sizes); beside this project's own protocol the captions say the numbers are not comparable in
size or protocol. A reference row prints only under a method that has one (``render``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from dora_bench.records import write_text_atomic
from dora_bench.report.cells import PAPER_DIR, Cell, RunRecord, Settings, Value, by_cell, metric, trainable_params
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
    "gsm8k": [("GSM8K EM", "test_exact_match", "GSM8K")],
}
#: rows, in the order of the deck's tables: the baselines, then the low-rank family, DoRA last
METHODS = ("full_ft", "bitfit", "prompt_tuning", "houlsby", "pfeiffer", "lora", "dora_wd", "adalora", "dora")
ALWAYS = {"full_ft", "prompt_tuning", "houlsby", "pfeiffer", "lora", "dora_wd", "adalora", "dora"}  # bitfit: if run
DECK = "deck_dora_wd_commonsense.csv"
DECK_ROWS = {"lora": "LoRA", "dora_wd": "DoRA-wd"}  # our method -> the deck's row it sits beside
ADAPTERS_MATH = "llm_adapters_gsm8k.csv"
#: our method (or a row of theirs alone) -> LLM-Adapters' maths row beside it
ADAPTERS_MATH_ROWS = {"lora": "LoRA", "houlsby": "Series", "parallel": "Parallel", "prefix": "Prefix"}
#: their rows without a method of ours: printed on their own under ours, with these labels
REFERENCE_ONLY = {"parallel": "Parallel adapter (LLM-Adapters)", "prefix": "Prefix tuning (LLM-Adapters)"}


def family(run: RunRecord) -> str | None:
    return ((run.record.get("config") or {}).get("task") or {}).get("family")


def deck_rows(backbone: str) -> dict[str, dict]:
    """``{our method: the deck's row}`` for a backbone the deck has numbers for; {} otherwise."""
    return _reference(DECK, DECK_ROWS, backbone)


def adapters_math_rows(backbone: str) -> dict[str, dict]:
    """``{our method or a reference-only key: LLM-Adapters' GSM8K row}`` for a backbone they ran; {} otherwise."""
    return _reference(ADAPTERS_MATH, ADAPTERS_MATH_ROWS, backbone)


def _reference(name: str, mapping: Mapping[str, str], backbone: str) -> dict[str, dict]:
    with (PAPER_DIR / name).open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if backbone in row["backbones"].split()]
    return {ours: row for ours, theirs in mapping.items() for row in rows if row["method"] == theirs}


def reference_rows(kind: str | None, backbone: str, variant: str | None) -> dict[str, dict]:
    if variant is not None:
        return {}
    return {"commonsense": deck_rows, "gsm8k": adapters_math_rows}.get(kind or "", lambda _: {})(backbone)


@dataclasses.dataclass(frozen=True)
class SelectedTest:
    """A test metric x100 at the epoch the run selected on its dev split (``best``), or its last epoch;
    never at the test metric's own best (``best_per_metric`` reads ``best`` here)."""

    name: str
    reads_epoch = True

    def __call__(self, record: dict, settings: Settings) -> float | None:
        which = "last" if settings.epoch == "last" else "best"
        found = ((record.get(which) or {}).get("metrics") or {}).get(self.name)
        return None if found is None else 100.0 * float(found)


def _rows(runs: list[RunRecord], reference: dict[str, dict]) -> list[Row]:
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
    for key, label in REFERENCE_ONLY.items():
        if key in reference:
            rows.append(Row((label, "—"), key, None, variant, paper=reference[key]))
    return rows


def accuracy_table(task: str, backbone: str, runs: list[RunRecord], settings: Settings) -> Table:
    kind, variant = family(runs[0]), runs[0].key[3]
    reference = reference_rows(kind, backbone, variant)
    rows = _rows(runs, reference)
    value = SelectedTest if kind == "gsm8k" else metric
    columns = [Column(label, task, value(key), deck_key) for label, key, deck_key in COLUMNS[kind]]
    cells_of = by_cell(runs)
    cells = [[_cell(cells_of, task, backbone, row, c, settings) for c in columns] for row in rows]
    where = f"{backbone}" + (f" (variant {variant})" if variant else "")
    caption = f"{task} on {where}: {_what(kind, runs, settings)}. Params: the paper's count (kept components)."
    caption += " " + _reference_caption(kind, reference, _protocol(runs))
    table = Table(
        f"llm_{task}_{_name(backbone, variant)}", f"{task}, {where}", caption, ("Method", "bT"), columns, rows,
        cells, settings, backbone, True, reference="deck" if kind == "commonsense" else "LLM-Adapters",
    )  # fmt: skip
    table.params = [(_median_params(cells_of.get(_key(task, backbone, row), [])), _deck_params(row)) for row in rows]
    return table


def efficiency_table(task: str, backbone: str, runs: list[RunRecord], settings: Settings) -> Table:
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


def _task_settings(runs: list[RunRecord], key: str) -> list:
    """The distinct values of ``config.task.<key>`` over the runs (sorted as text; None where absent)."""
    values = {json.dumps(((run.record.get("config") or {}).get("task") or {}).get(key)) for run in runs}
    return [json.loads(v) for v in sorted(values)]


def _protocol(runs: list[RunRecord]) -> str:
    found = [p or "own" for p in _task_settings(runs, "protocol")]
    return found[0] if len(found) == 1 else "mixed"


def _decoding(runs: list[RunRecord]) -> str:
    beams = [b or 1 for b in _task_settings(runs, "num_beams")]
    if beams == [1]:
        return "greedy decoding"
    return "beam search with " + " / ".join(str(b) for b in beams) + " beams"


def _what(kind: str, runs: list[RunRecord], settings: Settings) -> str:
    """What a cell holds and which epoch it is read at."""
    extraction = "LLM-Adapters' answer extraction" if _protocol(runs) == "llm_adapters" else "our answer extraction"
    if kind == "commonsense":
        return (
            f"accuracy x100 per set (the first answer word of the generation; {_decoding(runs)}, {extraction}) and "
            f"their unweighted mean; {settings.describe()}"
        )
    sizes = ", ".join(str(v) for v in _task_settings(runs, "dev_size"))
    seeds = ", ".join(str(v) for v in _task_settings(runs, "dev_seed"))
    epoch = "the last epoch" if settings.epoch == "last" else "the epoch with the best dev exact match"
    return (
        f"GSM8K test exact match x100 of the final number ({_decoding(runs)}, {extraction}) at {epoch}; the epoch "
        f"is selected on a dev slice of {sizes} training problems held out with seed {seeds}, never on test; "
        f"{settings.describe()}"
    )


def _reference_caption(kind: str, reference: dict[str, dict], protocol: str) -> str:
    same = protocol == "llm_adapters"
    kin = (
        "our runs use their protocol (experiment=llm_commonsense_dorawd / llm_gsm8k_llmadapters)"
        if same
        else "our runs use this project's protocol (other prompts, decoding and sizes): not comparable like for like"
    )
    if not reference:
        models = "LLaMA-7B/13B, LLaMA2-7B, LLaMA3-8B" if kind == "commonsense" else "LLaMA-7B/13B"
        return f"No reference numbers for this model (the published table has {models})."
    model = next(iter(reference.values()))["model"]
    if kind == "commonsense":
        return (
            f"Reference rows (Δ = ours − theirs): the lecture deck's copy of Liu et al. (2024) Table 1 for {model}, "
            f"LoRA rank 32 beside our LoRA and weight-decomposed DoRA rank 32 beside our dora_wd, on q/k/v/up/down "
            f"with their hyperparameters; {kin}; not budget-matched to ours unless our rank is 32."
        )
    return (
        f"Reference rows (Δ = ours − theirs): LLM-Adapters' maths table (Hu et al. 2023) for {model}, trained on "
        f"math_10k.json, GSM8K test: LoRA beside our LoRA, their Series adapter beside our Houlsby adapter, their "
        f"Parallel adapter and Prefix tuning on their own rows; {kin}."
    )


def render(table: Table, fmt: str) -> str:
    """The table as Markdown (``md``), LaTeX (``tex``) or CSV."""
    if fmt == "csv":
        return to_csv(table)
    return to_markdown(table) if fmt == "md" else to_latex(table)


def _name(backbone: str, variant: str | None) -> str:
    return backbone + (f"-{variant}" if variant else "")


def _spread(settings: Settings) -> str:
    return "mean ± sample std (ddof=1)" if settings.stat == "mean" else "median [min, max]"


def _key(task: str, backbone: str, row: Row) -> tuple:
    return (task, backbone, row.method, row.variant, row.budget)


def _cell(
    cells_of: Mapping[tuple, list[RunRecord]], task: str, backbone: str, row: Row, column: Column, settings: Settings
) -> Cell:
    from dora_bench.report.cells import aggregate

    return aggregate(cells_of.get(_key(task, backbone, row), []), column.value, settings)


def _efficiency(key: str) -> Value:
    def value(record: dict, settings: Settings) -> float | None:
        found = ((record.get("extras") or {}).get("efficiency") or {}).get(key)
        return None if found is None else float(found)

    return value


def _median_params(runs: list[RunRecord]) -> int | None:
    counts = sorted(p for run in runs if run.complete and (p := trainable_params(run.record)))
    return counts[len(counts) // 2] if counts else None


def _deck_params(row: Row) -> str | None:
    if not row.paper or not row.paper.get("params_pct"):
        return None  # LLM-Adapters' maths table states no sizes
    return f"{row.paper['params_pct']}% (r={row.paper['rank']})"


def llm_groups(runs: list[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    """``{(task, backbone, variant or ""): runs}`` for the LLM task families."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for run in runs:
        if family(run) in COLUMNS:
            groups.setdefault((run.key[0], run.key[1], run.key[3] or ""), []).append(run)
    return groups


def llm_tables(runs: list[RunRecord], settings: Settings) -> list[Table]:
    settings = dataclasses.replace(settings, seeds=SEEDS)
    tables = []
    for (task, backbone, _), group in sorted(llm_groups(runs).items()):
        tables += [accuracy_table(task, backbone, group, settings), efficiency_table(task, backbone, group, settings)]
    return tables


def write_llm_tables(runs: list[RunRecord], settings: Settings, out_dir: Path) -> list[Path]:
    written = []
    for table in llm_tables(runs, settings):
        for suffix in ("md", "tex", "csv"):
            written.append(write_text_atomic(out_dir / f"{table.name}.{suffix}", render(table, suffix)))
    return written
