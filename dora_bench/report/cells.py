"""From run records to cells: the seeds of one setting pooled into one number.

A *cell* is every record of one (task, backbone, method, variant, budget). Its number is the
mean over seeds with the sample standard deviation (ddof=1), or with ``stat=median`` the
median and the range [min, max]. Each seed contributes an epoch's score (``Settings.epoch``):
its best dev epoch by the main metric, each metric's own best epoch, or its last. Only epochs
the loop marked eligible count (for DoRA and AdaLoRA those after the budget is final); a seed
with none is shown and left out of the statistic unless ``count_ineligible``.

Records that differ in what they learn from or how they are scored are never pooled: the
cell is *refused*, with the differences and the record paths as the reason. That is any
resolved config key outside ``BOOKKEEPING_KEYS``, plus what the record itself says: the
effective precision, the data (``data_fingerprint``; without one, the data paths) and the
number of dev examples. A row may also claim a setting
(Table 5: DEM off) that its records must have.

Imported by the tables (``table_model.py``, ``tables.py``, ``render.py``) and the figures
(``figures.py``); it imports nothing of theirs.
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
from dora_bench.records import (
    DATA_PATH_KEYS,
    EXECUTION_KEYS,
    RECORD_NAME,
    SCHEMA_VERSION,
    flatten_config,
    is_execution_key,
)

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
# only in these pool into one cell. Any other difference refuses the cell. ``trainer.precision``
# is compared as the precision it gave (the record's ``precision``): `auto` on a CPU is fp32.
# ``method.allocation_seed`` is the run's seed again (DoRA's random control arm draws from it);
# ``lr_picks_source`` says where a rate came from, while the rate itself (``lr_picks.<method>``) is compared.
BOOKKEEPING_KEYS = EXECUTION_KEYS | {"seed", "method.allocation_seed", "lr_picks_source", "trainer.precision"}

#: Which epoch of a run a cell reads: ``best``, every metric from the eligible epoch best on the
#: main metric; ``best_per_metric``, each metric's maximum over the eligible epochs separately
#: (the released code's summary); ``last``, the last epoch.
EPOCH_CHOICES = ("best", "best_per_metric", "last")

#: Marks a number that has a seed without an eligible epoch (left out or counted).
INELIGIBLE_MARK = "†"


@dataclass(frozen=True)
class Settings:
    stat: str = "mean"  # mean (± sample std, ddof=1) | median ([min, max])
    epoch: str = "best"  # one of EPOCH_CHOICES: which epoch of each run counts
    seeds: int = 5  # complete seeds a cell should have
    count_ineligible: bool = False  # True: seeds without an eligible epoch enter the statistic (still marked)

    def __post_init__(self) -> None:
        if self.stat not in ("mean", "median"):
            raise ConfigError(f"stat={self.stat!r} is not known: use stat=mean or stat=median")
        if self.epoch not in EPOCH_CHOICES:
            raise ConfigError(f"epoch={self.epoch!r} is not known: use one of {', '.join(EPOCH_CHOICES)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds} must be >= 1: the seeds each cell should have (paper: 5)")

    def describe(self, epochs: bool = True) -> str:
        """The statistic and, where the table's numbers come from dev epochs, which epoch."""
        stat = "mean ± sample std (ddof=1)" if self.stat == "mean" else "median [min, max]"
        if not epochs:
            return f"{stat} over seeds; {self.seeds} seeds expected per cell"
        eligible = "only epochs after the budget is final are eligible for DoRA and AdaLoRA"
        epoch = {
            "best": f"each run's best dev epoch by its main metric ({eligible})",
            "best_per_metric": f"each metric's own best dev epoch of each run, as the released code's summary "
            f"({eligible})",
            "last": "each run's last epoch",
        }[self.epoch]
        ineligible = "counted" if self.count_ineligible else "left out"
        return (
            f"{stat} over seeds of {epoch}; {self.seeds} seeds expected per cell; "
            f"seeds without an eligible epoch ({INELIGIBLE_MARK}) {ineligible}"
        )


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One ``record.json`` as read back (the loop's live state while training is ``run.train.RunState``)."""

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


def load_runs(results_dir: str | Path) -> list[RunRecord]:
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
        runs.append(RunRecord(path, record))
    return runs


def by_cell(runs: list[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """The runs grouped by ``RunRecord.key``, in the order first seen."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    return groups


# -- one cell: the seeds of one setting ---------------------------------------------------

Value = Callable[[dict, Settings], "float | None"]
#: A row's check on each of its records: None if the record has the setting the row claims,
#: else why not (e.g. "method.dem_coef=0.3, but the row is without DEM").
Claim = Callable[[dict], "str | None"]


@dataclass
class Cell:
    scores: dict[int, float] = field(default_factory=dict)  # seed -> value, complete runs
    failed: list[int] = field(default_factory=list)
    unfinished: list[int] = field(default_factory=list)  # a record not complete: running or killed
    no_value: list[int] = field(default_factory=list)  # complete, but without this value
    ineligible: list[int] = field(default_factory=list)  # complete, but no epoch was eligible
    refused: str | None = None  # why these records can't be pooled (paths aside: refused_records)
    refused_records: list[Path] = field(default_factory=list)  # the records the reason is about
    expected: int = 5
    count_ineligible: bool = False  # Settings.count_ineligible: the ineligible seeds are in ``scores`` too
    lrs: set[tuple[str, float]] = field(default_factory=set)  # (extras.lr_source, extras.lr) of scored runs

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def full(self) -> bool:
        """Every expected seed scored and none of them flagged: only such cells are compared (bold)."""
        return self.refused is None and self.n >= self.expected and not self.ineligible

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
        """ok | incomplete | missing | failed | unfinished | ineligible | no value | refused"""
        if self.refused:
            return "refused"
        if self.scores:
            return "ok" if self.full else "incomplete"
        if self.failed:
            return "failed"
        if self.unfinished:
            return "unfinished"
        if self.ineligible:
            return "ineligible"
        return "no value" if self.no_value else "missing"

    def remarks(self, short: bool = False) -> list[str]:
        """What the number doesn't say: missing, failed, unfinished and ineligible seeds.
        ``short``: the ineligible count as "1†", for a page whose notes explain the mark."""
        out = []
        if self.scores and self.n < self.expected:
            out.append(f"n={self.n}/{self.expected}")
        if self.scores and self.failed:
            out.append(f"{len(self.failed)} failed")
        if self.scores and self.unfinished:
            out.append(f"{len(self.unfinished)} unfinished")
        if self.scores and self.ineligible:
            counted = "counted" if self.count_ineligible else "left out"
            out.append(
                f"{len(self.ineligible)}{INELIGIBLE_MARK}"
                if short
                else f"{len(self.ineligible)} without an eligible epoch, {counted}"
            )
        return out


def aggregate(runs: list[RunRecord], value: Value, settings: Settings, claim: Claim | None = None) -> Cell:
    """Pool the runs of one setting (all share ``RunRecord.key``) into a cell. ``claim``: the row's
    check on each record; a record that contradicts it refuses the cell."""
    cell = Cell(expected=settings.seeds, count_ineligible=settings.count_ineligible)
    if not runs:
        return cell
    contradicting = [(run, why) for run in runs if claim is not None and (why := claim(run.record))]
    if contradicting:
        run, why = contradicting[0]
        cell.refused = f"{len(contradicting)} record(s) contradict the row, e.g. seed {run.record.get('seed')}: {why}"
        cell.refused_records = [run.path for run, _ in contradicting]
    elif reason := pooling_conflict(runs):
        cell.refused, cell.refused_records = reason, [run.path for run in runs]
    reads_epoch = getattr(value, "reads_epoch", False)
    for run in runs:
        seed, status = run.record.get("seed"), run.record.get("status")
        if status == "failed":
            cell.failed.append(seed)
        elif status != "complete":
            cell.unfinished.append(seed)
        elif (v := value(run.record, settings)) is None:
            cell.no_value.append(seed)
        else:
            if reads_epoch and not eligible(run.record, settings):
                cell.ineligible.append(seed)
                if not settings.count_ineligible:
                    continue
            cell.scores[seed] = v
            if (lr := learning_rate(run.record)) is not None:
                cell.lrs.add(lr)
    return cell


def eligible(record: dict, settings: Settings) -> bool:
    """Whether the epoch the settings read from this run was eligible (the loop's ``countable``;
    a best marked ``countable: false`` means the run never reached an eligible epoch)."""
    if settings.epoch == "last":
        epochs = record.get("epochs") or [{}]
        return epochs[-1].get("countable", True) is not False
    return (record.get("best") or {}).get("countable", True) is not False


def differences(runs: list[RunRecord]) -> dict[str, list[Any]]:
    """What differs between the runs in what they learn from or how they are scored, with each
    run's value: config keys outside ``BOOKKEEPING_KEYS``, then the record's own facts. A fact a
    record lacks (a run that failed before it read its data) is not compared."""
    flat = [own_rate_only(flatten_config(run.record.get("config") or {})) for run in runs]
    ignored = {"seed"} | ({"budget"} if all(run.key[4] is None for run in runs) else set())  # Full FT, BitFit
    keys = sorted(k for k in {k for f in flat for k in f} - ignored if not is_bookkeeping(k))
    found = {k: [f.get(k, "<absent>") for f in flat] for k in keys}
    found = {k: values for k, values in found.items() if len({json.dumps(v, sort_keys=True) for v in values}) > 1}
    facts = {
        "precision": [run.record.get("precision") for run in runs],
        "eval_examples": [run.record.get("eval_examples") for run in runs],
        "data_fingerprint": [run.record.get("data_fingerprint") for run in runs],
    }
    if any(run.complete and not run.record.get("data_fingerprint") for run in runs):
        # a scored record from before fingerprints can't show that other paths hold the same
        # data: compare the paths of the scored records (a run that failed early scored nothing)
        facts.update({k: [f.get(k) if run.complete else None for run, f in zip(runs, flat)] for k in DATA_PATH_KEYS})
    for name, values in facts.items():
        if len({v for v in values if v is not None}) > 1:
            found[name] = values
    return found


def own_rate_only(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config without the ``lr_picks`` of other methods: a sweep that had picked more
    methods' rates by the time a later seed ran changed nothing this run learnt from."""
    own = f"lr_picks.{flat.get('method.name')}"
    return {k: v for k, v in flat.items() if not k.startswith("lr_picks.") or k == own}


def is_bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING_KEYS or is_execution_key(key)


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """The names in ``differences(runs)``: config keys (``trainer.lr``) and record facts (``precision``)."""
    return list(differences(runs))


def pooling_conflict(runs: list[RunRecord]) -> str | None:
    """None if the runs can be pooled: no ``differences`` and no seed twice. Otherwise a one-line
    reason naming what differs, with each record's value (the record paths are the caller's)."""
    found = differences(runs)
    seeds = [run.record.get("seed") for run in runs]
    if not found and len(set(seeds)) == len(seeds):
        return None
    if not found:
        return "two records of the same seed"
    detail = "; ".join(f"{k}: " + ", ".join(str(v) for v in values) for k, values in list(found.items())[:4])
    more = f" (and {len(found) - 4} more)" if len(found) > 4 else ""
    return f"records that differ in {', '.join(found)} [{detail}{more}]"


def config_conflict(runs: list[RunRecord]) -> str | None:
    """``pooling_conflict`` with the record paths: the whole reason, for stderr."""
    reason = pooling_conflict(runs)
    return None if reason is None else f"{reason}: " + ", ".join(str(run.path) for run in runs)


# -- what a column reads from a record --------------------------------------------------------


def metric(name: str | None = None) -> EpochMetric:
    """A dev metric x100 from the epoch ``Settings.epoch`` picks; None: the record's main metric."""
    return EpochMetric(name)


@dataclass(frozen=True)
class EpochMetric:
    """A column's value read from a run's dev epochs (see ``metric``)."""

    name: str | None = None
    reads_epoch = True  # so the cell checks that the epoch read was eligible

    def __call__(self, record: dict, settings: Settings) -> float | None:
        name = self.name or record.get("main_metric")
        if settings.epoch == "best_per_metric":
            found = best_of_metric(record, name)
        else:
            found = ((record.get(settings.epoch) or {}).get("metrics") or {}).get(name)
        return None if found is None else 100.0 * float(found)


def best_of_metric(record: dict, name: str) -> float | None:
    """The highest value of one metric over the run's eligible epochs, each metric on its own (the
    released code's summary; every dev metric here is higher-better). A run without an eligible
    epoch falls back to its best, i.e. its last (``eligible`` flags it)."""
    values = [
        e["metrics"][name]
        for e in record.get("epochs") or []
        if e.get("countable", True) and (e.get("metrics") or {}).get(name) is not None
    ]
    if values:
        return max(values)
    return ((record.get("best") or {}).get("metrics") or {}).get(name)


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
