"""Is one method better than another, or is the difference seed noise? A paired comparison over seeds.

    dora-bench-compare --results-dir results/minilm --backbone minilm --budget 8 --a dora --b lora,adalora
    dora-bench-compare --results-dir results/minilm-long --backbone minilm --tasks mrpc --b dora-random,lora

A cell is named as its record path names it, ``method[-variant]`` (``dora``, ``dora-random``).

For each task, the seeds both methods completed are paired (same seed: same data order, same head
init), and the per-seed differences ``d_s = a_s - b_s`` (dev metric x100) give a mean and a 95 %
Student-t interval; the two-sided paired t-test's p-value is printed beside it. Verdict: "a better" /
"b better" when the interval excludes 0, "no detectable difference" otherwise. With 3-5 seeds an
interval is wide: a difference smaller than it is not evidence of no effect, only of none this study
can see.

Across tasks one pooled row, "all tasks": the mean of the tasks' mean differences (every task weighs
the same, as in the paper's Avg column), its standard error from each task's own spread
(``SE² = Σ_t s_t² / n_t / T²``) and a Welch-Satterthwaite t (degrees of freedom from the same
terms). Seeds are not paired across tasks: seed 0 on STS-B and seed 0 on SST-2 share a number, not
data, so averaging them seed by seed would be one arbitrary pairing of many; counting every (task,
seed) pair as one sample would mix tasks of very different noise and weigh tasks by their seed count.
A task with fewer than two pairs has no spread to contribute and stays out of the pooled row.

A t-interval needs differences that vary. Accuracy on a few hundred dev examples moves in steps
(1/872 on SST-2), so two seeds can give exactly the same difference, and a t-interval of width 0
would call it certain. Where there is no spread at all the interval is left out and the two-sided
sign test over the pairs decides instead (p = 2 · 0.5^n when every sign agrees: six pairs before it
can call a difference at 0.05).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from dora_bench.errors import ConfigError, UserError
from dora_bench.records import write_text_atomic
from dora_bench.report.cells import EPOCH_CHOICES, RunRecord, Settings, aggregate, by_cell, load_runs, metric

LEVEL = 0.95
POOLED = "all tasks"


def sign_test(diffs: tuple[float, ...]) -> float:
    """Two-sided sign test of "the differences are centred on 0"; zero differences carry no sign."""
    signs = [d for d in diffs if abs(d) > 1e-9]
    if not signs:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(sum(d > 0 for d in signs), len(signs)).pvalue)


class Comparison(ABC):
    """What a row of the table shows; subclasses say how the mean, its spread and the t's degrees of freedom arise."""

    task: str
    a: str
    b: str
    note: str

    @property
    @abstractmethod
    def n(self) -> int:
        raise NotImplementedError

    @property
    @abstractmethod
    def mean(self) -> float | None:
        raise NotImplementedError

    @property
    @abstractmethod
    def constant(self) -> bool:
        """No spread for a t-interval to measure (every difference the same)."""
        raise NotImplementedError

    @abstractmethod
    def _se_and_df(self) -> tuple[float, float] | None:
        """(standard error of the mean, degrees of freedom of its t), or None below two pairs."""
        raise NotImplementedError

    @abstractmethod
    def _all_diffs(self) -> tuple[float, ...]:
        raise NotImplementedError

    def interval(self, level: float = LEVEL) -> tuple[float, float] | None:
        """Student-t interval of the mean difference; None without a spread to measure."""
        spread = None if self.constant else self._se_and_df()
        if spread is None:
            return None
        from scipy import stats

        se, df = spread
        half = stats.t.ppf(0.5 + level / 2, df) * se
        return self.mean - half, self.mean + half

    def p_value(self) -> float | None:
        if self.n < 2:
            return None
        if self.constant:
            return sign_test(self._all_diffs())
        spread = self._se_and_df()
        if spread is None:
            return None
        from scipy import stats

        se, df = spread
        return float(2 * stats.t.sf(abs(self.mean) / se, df))

    def verdict(self) -> str:
        if self.constant:
            if self.p_value() >= 1 - LEVEL:
                return "no detectable difference (no spread between seeds; sign test)"
            return f"{self.a if self.mean > 0 else self.b} better (no spread between seeds; sign test)"
        low_high = self.interval()
        if low_high is None:
            return "too few paired seeds"
        low, high = low_high
        if low > 0:
            return f"{self.a} better"
        if high < 0:
            return f"{self.b} better"
        return "no detectable difference"


@dataclass(frozen=True)
class Paired(Comparison):
    """``a`` minus ``b`` on one task, seed by seed."""

    task: str
    a: str
    b: str
    diffs: tuple[float, ...]  # per seed, x100
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.diffs) if self.diffs else None

    @property
    def constant(self) -> bool:
        return self.n >= 2 and max(self.diffs) - min(self.diffs) < 1e-9  # equal up to float rounding

    @property
    def variance_of_mean(self) -> float:
        return statistics.variance(self.diffs) / self.n

    def _se_and_df(self) -> tuple[float, float] | None:
        return (math.sqrt(self.variance_of_mean), self.n - 1) if self.n >= 2 else None

    def _all_diffs(self) -> tuple[float, ...]:
        return self.diffs


@dataclass(frozen=True)
class Pooled(Comparison):
    """``a`` minus ``b`` over tasks: the mean of the tasks' mean differences, with a Welch-Satterthwaite t."""

    a: str
    b: str
    parts: tuple[Paired, ...]  # the tasks with two pairs or more
    note: str = ""
    task: str = POOLED

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)

    @property
    def mean(self) -> float | None:
        return statistics.mean(p.mean for p in self.parts) if self.parts else None

    @property
    def constant(self) -> bool:
        return bool(self.parts) and all(p.constant for p in self.parts)

    def _se_and_df(self) -> tuple[float, float] | None:
        terms = [(p.variance_of_mean, p.n - 1) for p in self.parts]
        total = sum(v for v, _ in terms)
        if not self.parts or total == 0:
            return None
        df = total**2 / sum(v**2 / dof for v, dof in terms)
        return math.sqrt(total) / len(self.parts), df

    def _all_diffs(self) -> tuple[float, ...]:
        return tuple(d for p in self.parts for d in p.diffs)


def seed_scores(
    runs: list[RunRecord],
    task: str,
    backbone: str,
    method: str,
    budget: int | None,
    settings: Settings,
    variant: str | None = None,
) -> tuple[dict[int, float], str]:
    """``({seed: score x100}, note)`` of one cell; empty with the reason when the cell is refused."""
    cell = aggregate(by_cell(runs).get((task, backbone, method, variant, budget), []), metric(), settings)
    if cell.refused:
        return {}, f"{cell_label(method, variant)} refused: {cell.refused[:120]}"
    return dict(cell.scores), ""


def cell_label(method: str, variant: str | None) -> str:
    """``dora`` or ``dora-random``: a method's cell, as the record path names it."""
    return f"{method}-{variant}" if variant else method


def split_cell_label(label: str) -> tuple[str, str | None]:
    """``"dora-random"`` -> ``("dora", "random")``, the inverse of ``cell_label`` (no method name has a dash)."""
    method, _, variant = label.partition("-")
    return method, variant or None


def compare(
    runs: list[RunRecord],
    tasks: list[str],
    backbone: str,
    a: str,
    b: str,
    budget_a: int | None,
    budget_b: int | None,
    settings: Settings,
    *,
    variant_a: str | None = None,
    variant_b: str | None = None,
) -> list[Comparison]:
    """One row per task, then the pooled row over the tasks (see the module docstring), ``a - b``.

    Every task asked for enters the pooled row once it has two pairs, whatever its runs scored: the
    pooled row is the paired form of the paper's Avg column over a set of tasks fixed beforehand,
    and leaving out a task because its runs learnt nothing would choose the set after seeing them."""
    label_a, label_b = cell_label(a, variant_a), cell_label(b, variant_b)
    rows = []
    for task in tasks:
        scores_a, note_a = seed_scores(runs, task, backbone, a, budget_a, settings, variant_a)
        scores_b, note_b = seed_scores(runs, task, backbone, b, budget_b, settings, variant_b)
        seeds = sorted(set(scores_a) & set(scores_b))
        rows.append(Paired(task, label_a, label_b, tuple(scores_a[s] - scores_b[s] for s in seeds), note_a or note_b))
    parts = tuple(row for row in rows if row.n >= 2)
    short = [row.task for row in rows if row.n < 2]
    note = f"{', '.join(short)} left out: fewer than two paired seeds" if short else ""
    return [*rows, Pooled(label_a, label_b, parts, note)]


def to_markdown(rows: list[Paired]) -> str:
    lines = [
        "| a − b | task | n pairs | mean Δ (points) | 95 % CI | p (t) | verdict |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for row in rows:
        interval = row.interval()
        ci = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-"
        mean = f"{row.mean:+.2f}" if row.mean is not None else "-"
        p = row.p_value()
        p_text = "-" if p is None else f"{p:.3f}"
        verdict = row.verdict() + (f" ({row.note})" if row.note else "")
        lines.append(f"| {row.a} − {row.b} | {row.task} | {row.n} | {mean} | {ci} | {p_text} | {verdict} |")
    return "\n".join(lines)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept monotone."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_adjusted(rows: list[Comparison]) -> list[float | None]:
    """Each row's Holm-adjusted p within ``rows``, one family of tests: None for a row without a p, and
    for every row when fewer than two have one (a single test needs no correction)."""
    testable = [i for i, row in enumerate(rows) if row.p_value() is not None]
    adjusted: list[float | None] = [None] * len(rows)
    if len(testable) >= 2:
        for i, p in zip(testable, holm([rows[i].p_value() for i in testable])):
            adjusted[i] = p
    return adjusted


def holm_table(rows: list[Comparison]) -> list[str]:
    """One method against several baselines is several tests: their p-values with Holm's correction."""
    tested = [(row, p) for row, p in zip(rows, holm_adjusted(rows)) if p is not None]
    if not tested:
        return []
    rows, adjusted = [row for row, _ in tested], [p for _, p in tested]
    return [
        f"{len(rows)} comparisons, so {len(rows)} tests: Holm's correction over them "
        "(a difference holds at 0.05 when its adjusted p is below 0.05):",
        "",
        "| a − b | task | mean Δ | p | Holm-adjusted p |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {row.a} − {row.b} | {row.task} | {row.mean:+.2f} | {row.p_value():.3f} | {adj:.3f} |"
            for row, adj in zip(rows, adjusted)
        ),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="the folder holding runs/ (default: %(default)s)")
    parser.add_argument("--backbone", required=True, help="e.g. minilm or roberta-base")
    parser.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2", help="comma-separated (default: %(default)s)")
    parser.add_argument("--a", default="dora", help="the cell under test, method[-variant] (default: %(default)s)")
    parser.add_argument(
        "--b",
        default="lora,adalora,houlsby,pfeiffer,bitfit,full_ft",
        help="comma-separated cells to compare it with, method[-variant] (default: %(default)s)",
    )
    parser.add_argument("--budget", type=int, default=8, help="budget of the methods it sizes (default: %(default)s)")
    parser.add_argument("--epoch", default="best", choices=EPOCH_CHOICES)
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        results = Path(args.results_dir)
        if not (results / "runs").is_dir():
            raise ConfigError(f"no runs at {results / 'runs'}: pass --results-dir <dir>")
        runs = load_runs(results)
        settings = Settings(epoch=args.epoch, seeds=1)
        unsized = {"full_ft", "bitfit"}
        present = {cell_label(m, v) for _, backbone, m, v, _ in by_cell(runs) if backbone == args.backbone}
        for label in [args.a, *args.b.split(",")]:
            if label not in present:
                raise ConfigError(
                    f"no {args.backbone} records of {label!r} under {results / 'runs'}; "
                    f"its cells are {', '.join(sorted(present)) or 'none'}: name some of them with --a/--b"
                )
        method_a, variant_a = split_cell_label(args.a)
        tables, pooled = [], []
        for b in args.b.split(","):
            method_b, variant_b = split_cell_label(b)
            rows = compare(
                runs,
                args.tasks.split(","),
                args.backbone,
                method_a,
                method_b,
                None if method_a in unsized else args.budget,
                None if method_b in unsized else args.budget,
                settings,
                variant_a=variant_a,
                variant_b=variant_b,
            )
            tables.append(to_markdown(rows))
            pooled.append(rows[-1])
        correction = "\n".join(holm_table(pooled)).strip()  # empty for a single baseline
        text = "\n\n".join(tables + ([correction] if correction else []))
        print(text)
        if args.out:
            write_text_atomic(args.out, text + "\n")
    except UserError as err:
        print(f"dora-bench-compare: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
