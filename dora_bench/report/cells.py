"""From run records to cells: the seeds of one setting pooled into one number.

A *cell* is every record of one (task, backbone, method, variant, budget). Its number is the
mean over seeds with the sample standard deviation (ddof=1), or with ``stat=median`` the
median and the range [min, max]. Each seed contributes its best dev epoch (the loop marks
which epochs are eligible: for DoRA and AdaLoRA only those after the budget is final) or,
with ``epoch=last``, its last. Records whose resolved configs differ outside
``BOOKKEEPING_KEYS`` are never pooled: the cell is *refused*, with the differing keys and
the record paths as the reason.

Imported by the tables (``tables.py``, ``render.py``) and the figures (``figures.py``); it
imports nothing of theirs.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dora_bench.errors import ConfigError, UserError
from dora_bench.records import EXECUTION_KEYS, RECORD_NAME, SCHEMA_VERSION, flatten_config, is_execution_key

PAPER_DIR = Path(__file__).resolve().parent / "paper"

#: The paper's method names (its tables' row labels) -> ours (the registry's).
METHODS = {
    "Full FT": "full_ft",
    "BitFit": "bitfit",
    "H-Adapter": "houlsby",
    "P-Adapter": "pfeiffer",
    "LoRA": "lora",
    "AdaLoRA": "adalora",
    "DoRA": "dora",
}
#: Ours -> the paper's.
PAPER_NAMES = {ours: paper for paper, ours in METHODS.items()}

# Config keys that say where or how a run was executed, not what it learnt: records that differ
# only in these pool into one cell. Any other difference refuses the cell.
BOOKKEEPING_KEYS = EXECUTION_KEYS | {"seed"}


EPOCH_CHOICES = ("best", "last")


@dataclass(frozen=True)
class Settings:
    stat: str = "mean"  # mean (± sample std, ddof=1) | median ([min, max])
    epoch: str = "best"  # best | last: which epoch of each run counts
    seeds: int = 5  # complete seeds a cell should have

    def __post_init__(self):
        if self.stat not in ("mean", "median"):
            raise ConfigError(f"stat={self.stat!r} is not known: use stat=mean or stat=median")
        if self.epoch not in EPOCH_CHOICES:
            raise ConfigError(f"epoch={self.epoch!r} is not known: use one of {', '.join(EPOCH_CHOICES)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds} must be >= 1: the seeds each cell should have (paper: 5)")

    def describe(self) -> str:
        stat = "mean ± sample std (ddof=1)" if self.stat == "mean" else "median [min, max]"
        epoch = (
            "each run's best dev epoch (DoRA, AdaLoRA: only epochs after the budget is final)"
            if self.epoch == "best"
            else "each run's last epoch"
        )
        return f"{stat} over seeds of {epoch}; {self.seeds} seeds expected per cell"


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    path: Path
    record: dict[str, Any]

    @property
    def key(self) -> tuple:
        """(task, backbone, method, variant, budget): the cell the run belongs to."""
        r = self.record
        return (r.get("task"), r.get("backbone"), r.get("method"), r.get("variant"), r.get("budget"))

    @property
    def complete(self) -> bool:
        return self.record.get("status") == "complete"


def load_runs(results_dir: str | Path) -> list[Run]:
    """Every ``record.json`` under ``<results_dir>/runs/``, sorted by path."""
    runs = []
    for path in sorted((Path(results_dir) / "runs").rglob(RECORD_NAME)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"can't read {path} ({err}): fix or remove it") from None
        if record.get("schema_version") != SCHEMA_VERSION:
            raise UserError(
                f"{path} has schema_version {record.get('schema_version')!r}, these tables read "
                f"{SCHEMA_VERSION}: regenerate it or use the dora-bench version that wrote it"
            )
        runs.append(Run(path, record))
    return runs


def by_cell(runs: list[Run]) -> dict[tuple, list[Run]]:
    """The runs grouped by ``Run.key``, in the order first seen."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return groups


# -- one cell: the seeds of one setting ---------------------------------------------------

Value = Callable[[dict, Settings], "float | None"]


@dataclass
class Cell:
    scores: dict[int, float] = field(default_factory=dict)  # seed -> value, complete runs
    failed: list[int] = field(default_factory=list)
    unfinished: list[int] = field(default_factory=list)  # a record not complete: running or killed
    no_value: list[int] = field(default_factory=list)  # complete, but without this value
    refused: str | None = None  # why these records can't be pooled
    expected: int = 5
    lrs: set[tuple[str, float]] = field(default_factory=set)  # (extras.lr_source, extras.lr) of scored runs

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
            if (lr := learning_rate(run.record)) is not None:
                cell.lrs.add(lr)
    return cell


def differing_config_keys(runs: list[Run]) -> list[str]:
    """The flattened config keys (``trainer.lr``) whose values differ between the runs,
    ``BOOKKEEPING_KEYS`` aside; sorted."""
    flat = [flatten_config(run.record.get("config") or {}) for run in runs]
    ignored = {"seed"} | ({"budget"} if all(run.key[4] is None for run in runs) else set())  # Full FT, BitFit
    keys = sorted(k for k in {k for f in flat for k in f} - ignored if not is_execution_key(k))
    return [k for k in keys if len({json.dumps(f.get(k, "<absent>"), sort_keys=True) for f in flat}) > 1]


def config_conflict(runs: list[Run]) -> str | None:
    """None if the runs can be pooled: their resolved configs agree outside ``BOOKKEEPING_KEYS``
    and no seed appears twice. Otherwise a one-line reason naming the differing keys (with each
    record's value) and the record paths."""
    differing = differing_config_keys(runs)
    seeds = [run.record.get("seed") for run in runs]
    if not differing and len(set(seeds)) == len(seeds):
        return None
    if not differing:
        return "two records of the same seed: " + ", ".join(str(run.path) for run in runs)
    flat = [flatten_config(run.record.get("config") or {}) for run in runs]
    detail = "; ".join(f"{k}: " + ", ".join(f"{f.get(k, '<absent>')}" for f in flat) for k in differing[:4])
    more = f" (and {len(differing) - 4} more keys)" if len(differing) > 4 else ""
    return f"records made with different configs, differing in {', '.join(differing)} [{detail}{more}]: " + ", ".join(
        str(run.path) for run in runs
    )


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
    """Peak GPU memory allocated by torch during training (evaluation excluded); None on a CPU."""
    return record.get("peak_gpu_mib")


def trainable_params(record: dict) -> int | None:
    """As the paper counts them: kept components at the end for DoRA and AdaLoRA.
    (``trainable_params.paper`` is that final count; records written before it was updated
    at the end of training held the initial count there, hence ``final_trainable_params`` first.)"""
    extras = record.get("extras") or {}
    return extras.get("final_trainable_params") or (record.get("trainable_params") or {}).get("paper")


def learning_rate(record: dict) -> tuple[str, float] | None:
    """``(extras.lr_source, extras.lr)``: the rate the run trained at and which config key set it."""
    extras = record.get("extras") or {}
    if extras.get("lr") is None or not extras.get("lr_source"):
        return None
    return str(extras["lr_source"]), float(extras["lr"])
