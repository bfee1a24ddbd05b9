"""Is one method better than another, or is the difference seed noise? A paired comparison over seeds.

    dora-bench-compare --results-dir results/minilm --backbone minilm --budget 8 --a dora --b lora,adalora

For each task, the seeds both methods completed are paired (same seed: same data order, same head
init), and the per-seed differences ``d_s = a_s - b_s`` (dev metric x100) give a mean and a 95 %
Student-t interval; the two-sided paired t-test's p-value is printed beside it. Across tasks, two
pooled rows: "all tasks" averages each seed's differences over the tasks (seeds that have every task
for both methods) and takes the interval over seeds, the conservative reading; "all pairs" counts
every (task, seed) pair once, more pairs but tasks of different noise side by side. Verdict:
"a better" / "b better" when the interval excludes 0, "no detectable difference" otherwise. With
3-5 seeds an interval is wide: a difference smaller than it is not evidence of no effect, only of
none this study can see.

A t-interval needs differences that vary. Accuracy on a few hundred dev examples moves in steps
(1/872 on SST-2), so two seeds can give exactly the same difference, and a t-interval of width 0
would call it certain. When every difference is the same the interval is left out and the two-sided
sign test decides instead (p = 2 · 0.5^n: six seeds before it can call a difference at 0.05).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from dora_bench.errors import ConfigError, UserError
from dora_bench.records import write_text_atomic
from dora_bench.report.cells import EPOCH_CHOICES, Run, Settings, aggregate, by_cell, load_runs, metric


@dataclass(frozen=True)
class Paired:
    """One comparison: ``a`` minus ``b`` on ``task`` ("all tasks" for the pooled row)."""

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
        """Every pair gave the same difference: no spread for a t-interval to measure."""
        return self.n >= 2 and max(self.diffs) - min(self.diffs) < 1e-9  # equal up to float rounding

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """Student-t interval of the mean difference; None below two pairs or when every difference is the same."""
        if self.n < 2 or self.constant:
            return None
        from scipy import stats

        half = stats.t.ppf(0.5 + level / 2, self.n - 1) * statistics.stdev(self.diffs) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def p_value(self) -> float | None:
        if self.n < 2:
            return None
        if self.constant:  # the sign test: every difference has the same sign (or is 0)
            return min(1.0, 2 * 0.5**self.n) if self.mean else 1.0
        from scipy import stats

        return float(stats.ttest_1samp(self.diffs, 0.0).pvalue)

    def verdict(self) -> str:
        if self.constant:
            if self.p_value() >= 0.05:
                return "no detectable difference (every seed the same difference; sign test)"
            return f"{self.a if self.mean > 0 else self.b} better (every seed; sign test)"
        low_high = self.interval()
        if low_high is None:
            return "too few paired seeds"
        low, high = low_high
        if low > 0:
            return f"{self.a} better"
        if high < 0:
            return f"{self.b} better"
        return "no detectable difference"


def seed_scores(
    runs: list[Run], task: str, backbone: str, method: str, budget: int | None, settings: Settings
) -> tuple[dict[int, float], str]:
    """``({seed: score x100}, note)`` of one cell; empty with the reason when the cell is refused."""
    cell = aggregate(by_cell(runs).get((task, backbone, method, None, budget), []), metric(), settings)
    if cell.refused:
        return {}, f"{method} refused: {cell.refused[:120]}"
    return dict(cell.scores), ""


def compare(
    runs: list[Run],
    tasks: list[str],
    backbone: str,
    a: str,
    b: str,
    budget_a: int | None,
    budget_b: int | None,
    settings: Settings,
) -> list[Paired]:
    """Per task and pooled over tasks (seed by seed), ``a - b``."""
    rows, per_seed = [], {}
    for task in tasks:
        scores_a, note_a = seed_scores(runs, task, backbone, a, budget_a, settings)
        scores_b, note_b = seed_scores(runs, task, backbone, b, budget_b, settings)
        seeds = sorted(set(scores_a) & set(scores_b))
        rows.append(Paired(task, a, b, tuple(scores_a[s] - scores_b[s] for s in seeds), note_a or note_b))
        for s in seeds:
            per_seed.setdefault(s, {})[task] = scores_a[s] - scores_b[s]
    # pooled: a seed counts once, its differences averaged over the tasks it has for both methods
    complete = {s: d for s, d in per_seed.items() if len(d) == len(tasks)}
    note = f"seeds with every task: {sorted(complete)}" if complete else "no seed has every task for both"
    rows.append(
        Paired("all tasks", a, b, tuple(statistics.mean(d.values()) for _, d in sorted(complete.items())), note)
    )
    pairs = tuple(d[task] for _, d in sorted(per_seed.items()) for task in tasks if task in d)
    rows.append(Paired("all pairs", a, b, pairs, "each (task, seed) pair once"))
    return rows


def to_markdown(rows: list[Paired]) -> str:
    lines = [
        "| a − b | task | n seeds | mean Δ (points) | 95 % CI | p (paired t) | verdict |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for row in rows:
        interval = row.interval()
        ci = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-"
        mean = f"{row.mean:+.2f}" if row.mean is not None else "-"
        p = row.p_value()
        p_text = "-" if p is None else f"{p:.3f}"
        verdict = row.verdict() + (f" ({row.note})" if row.note and row.task not in ("all tasks", "all pairs") else "")
        lines.append(f"| {row.a} − {row.b} | {row.task} | {row.n} | {mean} | {ci} | {p_text} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="the folder holding runs/ (default: %(default)s)")
    parser.add_argument("--backbone", required=True, help="e.g. minilm or roberta-base")
    parser.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2", help="comma-separated (default: %(default)s)")
    parser.add_argument("--a", default="dora", help="the method under test (default: %(default)s)")
    parser.add_argument(
        "--b",
        default="lora,adalora,houlsby,pfeiffer,bitfit,full_ft",
        help="comma-separated methods to compare it with (default: %(default)s)",
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
        tables = []
        for b in args.b.split(","):
            rows = compare(
                runs,
                args.tasks.split(","),
                args.backbone,
                args.a,
                b,
                None if args.a in unsized else args.budget,
                None if b in unsized else args.budget,
                settings,
            )
            tables.append(to_markdown(rows))
        text = "\n\n".join(tables)
        print(text)
        if args.out:
            write_text_atomic(args.out, text + "\n")
    except UserError as err:
        print(f"dora-bench-compare: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
