"""A study file: stages of runs in priority order, and the analysis declared before any of them runs.

    name: MiniLM, 1,000 steps                 # the write-up's title
    results_dir: results/minilm-long          # records, tables, analysis.md, logs
    data_dir: ../shared/data/glue_data        # passed as task.data_dir (null: the task's own)
    overrides: [experiment=minilm_long]       # every run of every stage
    stages:                                   # in priority order: a study cut short has the first ones
      - name: rates                           # a rate sweep: its records go to their own folder
        results_dir: results/minilm-long/lr_check
        tag: lr_{trainer_lr}                  # each run's variant, from its grid values ('.' reads '_')
        grid:                                 # a product of values, or a list of products
          - {method: [dora, adalora], trainer.lr: [1.0e-2, 3.0e-3], task: [stsb], seed: [100]}
      - name: pick                            # one rate per method from a sweep -> <results_dir>/lr_picks.yaml
        pick: {from: rates, tasks: [stsb]}    # once all its runs finished; not_at_chance: [stages] rules out
                                              # a rate that left a run of those stages at chance;
                                              # from: [sweep, edge] reads several stages' runs
      - name: arms
        rates: picked                         # lr_picks={...} from the pick stage
        grid: {seed: [0, 1, 2], task: [stsb, sst2], method: [dora, lora]}
        overrides: []                         # this stage's own (e.g. +experiment/ablation=random)
    analysis: {...}                           # dora_bench.report.study.AnalysisPlan

A grid's first key is the outermost loop, so ``seed`` first gives every cell a seed before any gets two.
A value that is itself a list is a group of overrides taken together (an arm of a study:
``arm: [[method=dora], [method=dora, +experiment/ablation=random], [method=lora]]``), and a null value
adds nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dora_bench.errors import ConfigError
from dora_bench.report.study import AnalysisPlan

PICKS_NAME = "lr_picks.yaml"
PICK_KEYS = {"from", "tasks", "budget", "not_at_chance"}


@dataclass(frozen=True)
class RunSpec:
    """One run: the command line's overrides, and the stage that asked for it."""

    stage: str
    overrides: tuple[str, ...]
    values: tuple[tuple[str, Any], ...]  # the grid's values, for logs and the plan listing

    @property
    def label(self) -> str:
        return " ".join(" ".join(grid_overrides(k, v)) for k, v in self.values if v is not None)


def pick_sources(stage: Stage) -> list[str]:
    """The stages a pick reads: ``from`` names one, or lists several (a sweep and the rates added to it)."""
    named = (stage.pick or {}).get("from")
    return list(named) if isinstance(named, list) else [named]


@dataclass(frozen=True)
class Stage:
    name: str
    grid: tuple[dict[str, list[Any]], ...] = ()
    overrides: tuple[str, ...] = ()
    results_dir: str | None = None  # None: the study's
    tag: str | None = None  # a variant made from the grid's values, e.g. "lr_{trainer_lr}" ('.' reads '_')
    rates: str | None = None  # "picked": pass the pick stage's lr_picks
    pick: dict[str, Any] | None = None  # a pick stage: {from: <stage>, tasks: [...], not_at_chance: [...]}


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    results_dir: Path
    data_dir: str | None
    overrides: tuple[str, ...]
    stages: tuple[Stage, ...]
    analysis: AnalysisPlan | None
    workers: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def picks_path(self) -> Path:
        return self.results_dir / PICKS_NAME

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"{self.path} has no stage {name!r}: its stages are {', '.join(s.name for s in self.stages)}")

    def stage_results_dir(self, stage: Stage) -> Path:
        return Path(stage.results_dir) if stage.results_dir else self.results_dir


def load_study(path: str | Path) -> Study:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no study file at {path}: pass a yaml like conf/study/demo.yaml")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - {"name", "results_dir", "data_dir", "overrides", "stages", "analysis", "workers"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}: see dora_bench/study/plan.py for the format")
    for key in ("name", "results_dir", "stages"):
        if key not in raw:
            raise ConfigError(f"{path} has no '{key}': every study names itself, its results_dir and its stages")
    stages = []
    for entry in raw["stages"]:
        known = {"name", "grid", "overrides", "results_dir", "tag", "rates", "pick"}
        if "name" not in entry or set(entry) - known:
            raise ConfigError(f"{path}: a stage needs a name and only {', '.join(sorted(known))}; got {sorted(entry)}")
        grid = entry.get("grid") or []
        grid = [grid] if isinstance(grid, dict) else list(grid)
        if not grid and "pick" not in entry:
            raise ConfigError(f"{path}: stage {entry['name']!r} has neither a grid nor a pick")
        if entry.get("rates") not in (None, "picked"):
            raise ConfigError(f"{path}: stage {entry['name']!r}: rates must be 'picked' or absent")
        stages.append(
            Stage(
                name=str(entry["name"]),
                grid=tuple({str(k): v if isinstance(v, list) else [v] for k, v in g.items()} for g in grid),
                overrides=tuple(entry.get("overrides") or ()),
                results_dir=entry.get("results_dir"),
                tag=entry.get("tag"),
                rates=entry.get("rates"),
                pick=entry.get("pick"),
            )
        )
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: stage names repeat ({', '.join(names)}): name each stage once")
    for stage in stages:
        if not stage.pick:
            continue
        if set(stage.pick) - PICK_KEYS:
            raise ConfigError(f"{path}: stage {stage.name!r}: a pick takes only {', '.join(sorted(PICK_KEYS))}")
        for source in pick_sources(stage):
            if source not in names:
                raise ConfigError(f"{path}: stage {stage.name!r} picks from {source!r}, which is no stage")
        for guard in stage.pick.get("not_at_chance") or ():
            if guard not in names:
                raise ConfigError(f"{path}: stage {stage.name!r}: not_at_chance names {guard!r}, which is no stage")
    analysis = AnalysisPlan.from_dict(raw["analysis"], raw["name"]) if raw.get("analysis") else None
    return Study(
        path=path,
        name=str(raw["name"]),
        results_dir=Path(raw["results_dir"]),
        data_dir=raw.get("data_dir"),
        overrides=tuple(raw.get("overrides") or ()),
        stages=tuple(stages),
        analysis=analysis,
        workers=raw.get("workers"),
        raw=raw,
    )


def grid_overrides(key: str, value: Any) -> list[str]:
    """The overrides one grid value stands for: ``key=value``; a list: its items as they are; null: none."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [f"{key}={value}"]


def expand(study: Study, stage: Stage, picks: dict[str, Any] | None, data_dir: str | None) -> list[RunSpec]:
    """The runs of a grid stage, in priority order (the first grid key is the outermost loop)."""
    base = [*study.overrides, *stage.overrides, f"results_dir={study.stage_results_dir(stage)}"]
    if data_dir:
        base.append(f"task.data_dir={data_dir}")
    if stage.rates == "picked":
        if not picks:
            return []  # the pick stage has not run: nothing of this stage can run yet
        rates = ",".join(f"{m}:{lr}" for m, lr in picks["lr_picks"].items())
        base += [f"lr_picks={{{rates}}}", f"lr_picks_source='{picks['lr_picks_source']}'"]
    runs = []
    for product in stage.grid:
        keys = list(product)
        for values in itertools.product(*(product[k] for k in keys)):
            pairs = tuple(zip(keys, values))
            overrides = [*base, *(o for k, v in pairs for o in grid_overrides(k, v))]
            if stage.tag:
                overrides.append(f"variant={stage.tag.format(**{k.replace('.', '_'): v for k, v in pairs})}")
            runs.append(RunSpec(stage.name, tuple(overrides), pairs))
    return runs
