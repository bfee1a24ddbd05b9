"""A study's analysis, written before its runs and computed from its records: ``<results>/analysis.md``.

The study file (``conf/study/*.yaml``, run by ``dora-bench-study``) declares an ``analysis:`` block
before any run starts: the results table's rows and tasks, the paired comparisons with the tasks
each pools and the family each belongs to for Holm's correction. This module turns that plan and
the records into the write-up's numbers; nothing in it chooses a task, a pooling or a family from
the results. A comparison the plan marks ``post_hoc`` is computed like the others and labelled as
chosen after seeing the data.

Cells are named as record paths name them: ``method[-variant][@budget]`` (``dora``, ``dora-random``,
``dora-b2rate@2``); without ``@`` a method that ``budget=`` sizes takes the plan's budget, Full FT and
BitFit none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dora_bench.errors import ConfigError
from dora_bench.report.cells import RunRecord, Settings, aggregate, by_cell, metric
from dora_bench.report.compare import Comparison, compare, holm_table, split_cell_label, to_markdown
from dora_bench.report.diagnostics import diagnose_all
from dora_bench.report.diagnostics import to_markdown as diagnostics_markdown

UNSIZED = ("full_ft", "bitfit")  # the methods whose records say budget: null


@dataclass(frozen=True)
class CellSpec:
    method: str
    variant: str | None
    budget: int | None

    @classmethod
    def parse(cls, text: str, default_budget: int) -> CellSpec:
        name, _, budget = str(text).partition("@")
        method, variant = split_cell_label(name)
        if budget in ("", None):
            size = None if method in UNSIZED else default_budget
        else:
            size = None if budget == "-" else int(budget)
        return cls(method, variant, size)

    @property
    def label(self) -> str:
        return f"{self.method}{'-' + self.variant if self.variant else ''}"

    def key(self, task: str, backbone: str) -> tuple:
        return (task, backbone, self.method, self.variant, self.budget)


@dataclass(frozen=True)
class ComparisonSpec:
    a: CellSpec
    b: CellSpec
    tasks: tuple[str, ...]
    family: str
    post_hoc: str | None = None  # why this pooling was chosen after seeing the data; None: declared beforehand


@dataclass(frozen=True)
class AnalysisPlan:
    title: str
    backbone: str
    budget: int
    seeds: int  # complete seeds every cell should have
    tasks: tuple[str, ...]  # the results table's columns
    rows: tuple[CellSpec, ...]  # the results table's rows
    comparisons: tuple[ComparisonSpec, ...] = ()
    chance: dict[str, tuple[int, int]] = field(default_factory=dict)  # task -> (majority count, dev size)
    names: dict[str, str] = field(default_factory=dict)  # row label -> display name

    @classmethod
    def from_dict(cls, raw: dict[str, Any], title: str) -> AnalysisPlan:
        budget = int(raw.get("budget", 8))
        tasks = tuple(raw["tasks"])
        comparisons = []
        for entry in raw.get("comparisons", []):
            for b in [entry["b"]] if isinstance(entry["b"], str) else entry["b"]:
                comparisons.append(
                    ComparisonSpec(
                        CellSpec.parse(entry["a"], budget),
                        CellSpec.parse(b, budget),
                        tuple(entry.get("tasks", tasks)),
                        str(entry.get("family", "main")),
                        entry.get("post_hoc"),
                    )
                )
        return cls(
            title=title,
            backbone=raw["backbone"],
            budget=budget,
            seeds=int(raw.get("seeds", 5)),
            tasks=tasks,
            rows=tuple(CellSpec.parse(r, budget) for r in raw["rows"]),
            comparisons=tuple(comparisons),
            chance={t: (int(k), int(n)) for t, (k, n) in (raw.get("chance") or {}).items()},
            names=dict(raw.get("names") or {}),
        )


def plan_of_study_file(path: str | Path) -> AnalysisPlan:
    """The analysis a study file declares, for building its page outside ``dora-bench-study``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no study file at {path}: pass a yaml like conf/study/minilm_long.yaml")
    raw = yaml.safe_load(path.read_text()) or {}
    if not raw.get("analysis"):
        raise ConfigError(f"{path} declares no analysis: block, so there are no declared comparisons to show")
    return AnalysisPlan.from_dict(raw["analysis"], str(raw.get("name", path.stem)))


@dataclass(frozen=True)
class StageProgress:
    """What the driver knows of one stage: its runs done and the ones not (yet) run."""

    name: str
    done: int
    total: int
    missing: tuple[str, ...] = ()


# -- pieces ------------------------------------------------------------------------------------


def cell_text(runs: list[RunRecord], settings: Settings) -> tuple[str, float | None]:
    """``mean ± std (n)`` of a cell's seeds and its mean; ``refused`` or ``—`` where there is none."""
    cell = aggregate(runs, metric(), settings)
    if cell.refused:
        return "refused", None
    values = list(cell.scores.values())
    if not values:
        return "—", None
    std = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{std} ({len(values)})", statistics.mean(values)


def constant_scores(plan: AnalysisPlan, task: str) -> tuple[float, ...]:
    """The main metric x100 of a constant predictor: 0 (Matthews, Pearson) or either class's dev share."""
    if task not in plan.chance:
        return (0.0,)
    k, n = plan.chance[task]
    return (100 * k / n, 100 * (n - k) / n)


def learnt_nothing(plan: AnalysisPlan, task: str, score: float) -> bool:
    return any(abs(score - c) < 1e-7 for c in constant_scores(plan, task))


def rates_of(runs: list[RunRecord]) -> str:
    rates = sorted({float(r.record.get("extras", {}).get("lr") or 0) for r in runs if r.complete} - {0.0})
    return ", ".join(f"{lr:.0e}".replace("e-0", "e-") for lr in rates)


def results_table(plan: AnalysisPlan, runs: list[RunRecord]) -> list[str]:
    settings = Settings(seeds=plan.seeds)
    cells = by_cell(runs)
    lines = [
        "| method | lr | " + " | ".join(plan.tasks) + " | avg |",
        "|---|---|" + "---:|" * (len(plan.tasks) + 1),
    ]
    for row in plan.rows:
        texts, means, used = [], [], []
        for task in plan.tasks:
            group = cells.get(row.key(task, plan.backbone), [])
            used += group
            text, mean = cell_text(group, settings)
            texts.append(text)
            if mean is not None:
                means.append(mean)
        avg = f"{statistics.mean(means):.2f}" if len(means) == len(plan.tasks) else "—"
        name = plan.names.get(row.label, row.label) + ("" if row.budget in (None, plan.budget) else f" (b{row.budget})")
        lines.append(f"| {name} | {rates_of(used)} | " + " | ".join(texts) + f" | {avg} |")
    if plan.chance:
        chance = [
            f"{100 * max(k, n - k) / n:.2f}" if (k, n) != (0, 1) else ""
            for k, n in (plan.chance.get(t, (0, 1)) for t in plan.tasks)
        ]
        lines.append("| majority class | | " + " | ".join(chance) + " | |")
    return lines


def flat_runs(plan: AnalysisPlan, runs: list[RunRecord]) -> list[str]:
    found = []
    for run in runs:
        best, task = run.record.get("best"), run.key[0]
        if run.complete and best and task in plan.tasks:
            score = 100 * best["metrics"].get(run.record["main_metric"], float("nan"))
            if learnt_nothing(plan, task, score):
                label = f"{run.key[2]}{'-' + run.key[3] if run.key[3] else ''} b{run.key[4] or '-'}"
                found.append(f"- {task} / {label} / seed {run.record.get('seed')}: {score:.2f}")
    return sorted(found)


@dataclass(frozen=True)
class Declared:
    """One declared comparison computed from the records: a row per task, then the pooled row."""

    spec: ComparisonSpec
    rows: tuple[Comparison, ...]

    @property
    def pooled(self) -> Comparison:
        return self.rows[-1]

    def budgets(self, plan: AnalysisPlan) -> str:
        """`` (budgets 2 / 2)`` where a side is not at the plan's budget, else empty."""
        a, b = self.spec.a.budget, self.spec.b.budget
        return "" if a == b == plan.budget else f" (budgets {a} / {b})"


def declared_comparisons(plan: AnalysisPlan, runs: list[RunRecord]) -> list[Declared]:
    """The plan's comparisons, in the order it declares them, each computed from the records."""
    return [
        Declared(
            spec,
            tuple(
                compare(
                    runs,
                    list(spec.tasks),
                    plan.backbone,
                    spec.a.method,
                    spec.b.method,
                    spec.a.budget,
                    spec.b.budget,
                    Settings(seeds=1),
                    variant_a=spec.a.variant,
                    variant_b=spec.b.variant,
                )
            ),
        )
        for spec in plan.comparisons
    ]


def by_family(declared: list[Declared]) -> dict[str, list[Declared]]:
    """Holm's families, in the order their first comparison is declared."""
    families: dict[str, list[Declared]] = {}
    for d in declared:
        families.setdefault(d.spec.family, []).append(d)
    return families


def comparison_sections(plan: AnalysisPlan, runs: list[RunRecord]) -> list[str]:
    lines: list[str] = []
    declared = declared_comparisons(plan, runs)
    for d in declared:
        spec = d.spec
        why = f" — **post hoc**: {spec.post_hoc}" if spec.post_hoc else ""
        lines += [
            f"**{spec.a.label} − {spec.b.label}**{d.budgets(plan)}, family *{spec.family}*, pooled over "
            f"{' + '.join(spec.tasks)}{why}:",
            "",
            to_markdown(list(d.rows)),
            "",
        ]
    for family, members in by_family(declared).items():
        pooled = [d.pooled for d in members]
        lines += [
            f"Family *{family}* in one line each (pooled rows):",
            "",
            to_markdown(pooled),
            "",
            *holm_table(pooled),
        ]
    return lines


def analysis_markdown(
    plan: AnalysisPlan,
    runs: list[RunRecord],
    progress: list[StageProgress] | None = None,
    command: str = "",
    sections: tuple[tuple[str, tuple[str, ...]], ...] = (),
    planned_seeds: dict[tuple, set[int]] | None = None,
) -> str:
    """The study's write-up numbers, in the order a reader asks for them; ``sections``: (title, lines)
    the driver adds, such as the rate sweep behind the picks. ``planned_seeds``: each cell's seeds as
    the study's stages plan them (a control arm may plan fewer than ``plan.seeds``, and a cell no
    stage runs none); absent, every cell of the table is expected to have ``plan.seeds``."""
    study_runs = [r for r in runs if r.key[1] == plan.backbone]
    lines = [
        f"# {plan.title}: what the records say",
        "",
        f"Generated by `{command}` from the records alone; the comparisons, their poolings and "
        "families were written in the study file before its runs. Dev score x100 at each run's best eligible "
        "evaluation, mean ± sample std over the complete seeds (n).",
        "",
        *results_table(plan, study_runs),
        "",
        "## Runs that learnt nothing the metric can see",
        "",
        "A constant predictor of either class (the dev set's majority or minority share) or exactly 0 "
        "(Matthews, Pearson). They stay in every comparison: not learning within the budget of steps is an outcome.",
        "",
        *(flat_runs(plan, study_runs) or ["None."]),
        "",
        "## Paired comparisons, as declared (Δ in points, 95 % t-interval)",
        "",
        "Per task over the seeds both cells completed; the pooled row is the mean of the tasks' mean "
        "differences with a Welch-Satterthwaite t (`dora_bench/report/compare.py`).",
        "",
        *(comparison_sections(plan, study_runs) or ["No comparisons declared."]),
    ]
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    found = [d for d in diagnose_all(study_runs) if d.key[0] in plan.tasks]
    if found:
        lines += ["## Allocation diagnostics", "", *diagnostics_markdown(found).splitlines()[2:], ""]
    lines += ["## What ran and what did not", ""]
    for stage in progress or []:
        lines.append(f"- stage `{stage.name}`: {stage.done} of {stage.total} runs complete")
        lines += [f"  - not run: {m}" for m in stage.missing[:40]]
        if len(stage.missing) > 40:
            lines.append(f"  - … and {len(stage.missing) - 40} more")
    short = []
    cells = by_cell(study_runs)
    for row in plan.rows:
        for task in plan.tasks:
            key = row.key(task, plan.backbone)
            seeds = {r.record.get("seed") for r in cells.get(key, []) if r.complete}
            # with a plan, a cell no stage runs is no cell of this study (a budget-2 row on RTE)
            expected = plan.seeds if planned_seeds is None else len(planned_seeds.get(key, ()))
            if len(seeds) < expected:
                short.append(f"- {task} / {row.label}: {len(seeds)} of {expected} seeds")
    heading = (
        "Cells of the table with fewer complete seeds than their stages plan:"
        if planned_seeds is not None
        else f"Cells of the table with fewer than {plan.seeds} complete seeds:"
    )
    lines += ["", heading, "", *(short or ["None."]), ""]
    commits = sorted({r.record.get("git_commit") or "?" for r in study_runs})
    devices = sorted({r.record.get("device") or "?" for r in study_runs})
    precisions = sorted({r.record.get("precision") or "?" for r in study_runs})
    complete = sum(r.complete for r in study_runs)
    lines += [
        "## Where the records came from",
        "",
        f"{complete} complete records ({len(study_runs)} in all); devices: {', '.join(devices)}; precision: "
        f"{', '.join(precisions)}; code commits: {', '.join(commits)}.",
        "",
    ]
    return "\n".join(lines)


# -- picking one rate per method from a sweep ------------------------------------------------------


@dataclass(frozen=True)
class RatePicks:
    picks: dict[str, float]  # method -> the rate with the best mean main metric over the sweep's tasks
    table: tuple[str, ...]  # the sweep as a markdown table
    missing: tuple[str, ...]  # rates without a complete score on every task
    unpicked: tuple[str, ...] = ()  # methods of the sweep with no rate to pick (every rate failed or ruled out)


def run_rate(record: dict[str, Any]) -> float | None:
    """The rate a run trained at: the one it recorded, else its config's ``trainer.lr``."""
    lr = (record.get("extras") or {}).get("lr") or ((record.get("config") or {}).get("trainer") or {}).get("lr")
    return None if lr is None else float(lr)


def rates_at_chance(plan: AnalysisPlan | None, runs: list[RunRecord]) -> dict[str, dict[float, list[str]]]:
    """Per method and rate, the complete runs that ended at a constant predictor's score (``learnt_nothing``),
    each as ``"<task> seed <n> (<score>)"``: a rate that collapsed a run can't be trusted with a study's arms,
    however well its other runs did."""
    found: dict[str, dict[float, list[str]]] = {}
    for run in runs:
        record, lr = run.record, run_rate(run.record)
        if not (run.complete and record.get("best")) or lr is None:
            continue
        task = record.get("task")
        score = 100 * record["best"]["metrics"].get(record["main_metric"], float("nan"))
        at_chance = learnt_nothing(plan, task, score) if plan else abs(score) < 1e-7
        if at_chance:
            found.setdefault(record["method"], {}).setdefault(lr, []).append(
                f"{task} seed {record.get('seed')} ({score:.2f})"
            )
    return found


def pick_rates(
    runs: list[RunRecord],
    tasks: list[str],
    budget: int | None = None,
    at_chance: dict[str, dict[float, list[str]]] | None = None,
) -> RatePicks:
    """Per method, the rate whose mean main metric over ``tasks`` is best (ties: the lower rate); a rate
    counts only once every task has a complete score for it, and a failed run scores nothing. With
    ``budget``, only the records at that budget (and those of methods without one) count. A rate in
    ``at_chance`` (``rates_at_chance``: it left a run at chance) is not eligible, whatever its mean."""
    at_chance = at_chance or {}
    scores: dict[str, dict[float, dict[str, float | None]]] = {}
    for run in runs:
        record = run.record
        lr = run_rate(record)
        if lr is None or record.get("task") not in tasks or (budget and record.get("budget") not in (budget, None)):
            continue
        ok = run.complete and record.get("best")
        value = record["best"]["metrics"].get(record["main_metric"]) if ok else None
        scores.setdefault(record["method"], {}).setdefault(lr, {})[record["task"]] = value
    picks, missing = {}, []
    header = "| method | lr | " + " | ".join(tasks) + " | mean | picked |"
    lines = [header, "|---|---:|" + "---:|" * (len(tasks) + 2)]
    for method, rates in scores.items():
        means = {
            lr: statistics.mean(by_task[t] for t in tasks)
            for lr, by_task in sorted(rates.items())
            if all(by_task.get(t) is not None for t in tasks)
        }
        missing += [f"{method} lr {lr:g}" for lr in sorted(rates) if lr not in means]
        ruled_out = (at_chance.get(method) or {}).keys()
        eligible = sorted(lr for lr in means if lr not in ruled_out)
        if eligible:
            picks[method] = max(eligible, key=means.__getitem__)  # sorted: on a tie the lower rate wins
        for lr, by_task in sorted(rates.items()):
            cells = " | ".join("failed" if by_task.get(t) is None else f"{100 * by_task[t]:.2f}" for t in tasks)
            mean = f"{100 * means[lr]:.2f}" if lr in means else "-"
            edge = " (grid edge)" if picks.get(method) == lr and lr in (min(rates), max(rates)) else ""
            chosen = "**yes**" + edge if picks.get(method) == lr else ""
            if lr in ruled_out:
                chosen = "not eligible: at chance in " + ", ".join(at_chance[method][lr])
            lines.append(f"| {method} | {lr:g} | {cells} | {mean} | {chosen} |")
    unpicked = tuple(m for m in scores if m not in picks)
    return RatePicks(picks, tuple(lines), tuple(missing), unpicked)
