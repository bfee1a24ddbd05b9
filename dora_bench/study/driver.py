"""``dora-bench-study``: run a study file's stages in priority order, resumably, on several workers.

    dora-bench-study conf/study/minilm_long.yaml                  # every stage, 2 workers on a CPU box
    dora-bench-study conf/study/minilm_long.yaml --stage gate     # one stage (repeatable)
    dora-bench-study conf/study/minilm_long.yaml plan             # what is done and what is left, nothing run
    dora-bench-study conf/study/minilm_long.yaml report           # analysis.md and the tables from the records
    dora-bench-study conf/study/minilm_long.yaml commit           # git-commit the complete runs and the report

Each run is one ``dora-bench`` process with the stage's overrides; a run whose record is complete is
skipped, so a study stopped anywhere (a session's end, a crash, Ctrl-C) goes on where it stopped.
Two drivers on one folder share the work: each run claims its folder (``records.claim``). Workers:
one per core on a CPU box (each run on one thread, as the study files say), ``--runs-per-gpu`` per GPU
on a GPU box (each worker sees one GPU through CUDA_VISIBLE_DEVICES). After every completed run the
study's tables, allocation diagnostics, ``analysis.md`` and report page are written again, so they
always show where the study stands; a progress line gives the runs done and left with an ETA from
the measured run times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from dora_bench import records
from dora_bench.errors import UserError
from dora_bench.records import flatten_config
from dora_bench.report.cells import RunRecord, Settings, is_bookkeeping, load_runs, own_rate_only
from dora_bench.report.study import StageProgress, analysis_markdown, pick_rates, rates_at_chance
from dora_bench.study.plan import RunSpec, Stage, Study, expand, load_study, pick_sources

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# -- where a run's record goes ---------------------------------------------------------------------


class RecordPaths:
    """The record path of a run's overrides, as ``train`` will choose it (the composed config)."""

    def __init__(self) -> None:
        from hydra import initialize_config_dir

        from dora_bench.configs import conf_dir
        from dora_bench.run.launch import register_resolvers

        register_resolvers()
        self._context = initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3")
        self._context.__enter__()
        self._known: dict[tuple[str, ...], Path] = {}
        self.configs: dict[Path, dict[str, Any]] = {}  # record path -> the config its run will have
        self.cells: dict[Path, tuple] = {}  # record path -> its cell (task, backbone, method, variant, budget)

    def __call__(self, spec: RunSpec) -> Path:
        if spec.overrides not in self._known:
            from hydra import compose

            from dora_bench.methods import method_class

            overrides = [o[1:] if o.startswith("+experiment=") else o for o in spec.overrides]
            cfg = compose(config_name="config", overrides=overrides)
            budget = int(cfg.budget) if method_class(cfg.method.name).uses_budget else None
            folder = records.run_dir_of(cfg, budget)
            self._known[spec.overrides] = folder / records.RECORD_NAME
            self.configs[folder / records.RECORD_NAME] = OmegaConf.to_container(cfg, resolve=True)
            cell = (cfg.task.name, cfg.backbone.name, cfg.method.name, cfg.variant, budget)
            self.cells[folder / records.RECORD_NAME] = cell
        return self._known[spec.overrides]

    def close(self) -> None:
        self._context.__exit__(None, None, None)


# -- the plan against the records ----------------------------------------------------------------


def read_picks(study: Study) -> dict[str, Any] | None:
    return yaml.safe_load(study.picks_path.read_text()) if study.picks_path.is_file() else None


def finished_runs(study: Study, stage: Stage, data_dir: str | None, paths: RecordPaths) -> list[RunRecord] | None:
    """A stage's records once every run of it has finished (complete or failed); None while any has not."""
    record_paths = [paths(spec) for spec in expand(study, stage, read_picks(study), data_dir)]
    found = [(path, records.read_record(path)) for path in record_paths]
    if any(record is None or record.get("status") not in ("complete", "failed") for _, record in found):
        return None
    return [RunRecord(path, record) for path, record in found]


def write_picks(study: Study, stage: Stage, data_dir: str | None, paths: RecordPaths) -> dict[str, Any] | None:
    """A pick stage: one rate per method from the sweep stages' records -> ``<results_dir>/lr_picks.yaml``.

    Nothing is picked before every run of the sweep has finished: a method whose runs are still to come
    would otherwise be left out of ``lr_picks`` and its arms would train at its published rate. With
    ``not_at_chance: [stages]`` (which must have finished too), a rate that left any run of those stages
    at chance is not eligible (``rates_at_chance``)."""
    sources = [study.stage(name) for name in pick_sources(stage)]
    named = " + ".join(s.name for s in sources)
    tasks = list(stage.pick.get("tasks") or [])
    runs = []
    for source in sources:
        done = finished_runs(study, source, data_dir, paths)
        if not done:
            return None
        runs += done
    at_chance: dict[str, dict[float, list[str]]] = {}
    for name in stage.pick.get("not_at_chance") or ():
        guard = finished_runs(study, study.stage(name), data_dir, paths)
        if guard is None:
            return None  # what it rules out is not known yet
        for method, rates in rates_at_chance(study.analysis, guard).items():
            for lr, where in rates.items():
                at_chance.setdefault(method, {}).setdefault(lr, []).extend(f"{w}, stage {name}" for w in where)
    found = pick_rates(runs, tasks, stage.pick.get("budget"), at_chance)
    if found.unpicked:
        raise UserError(
            f"stage {stage.name!r}: no eligible rate for {', '.join(found.unpicked)} in stage(s) {named} "
            f"(every rate failed or left a run at chance): add a lower rate to its grid"
        )
    saved = read_picks(study)
    if saved and saved.get("lr_picks") == found.picks and saved.get("sweep_table") == list(found.table):
        return saved  # the same rates: the runs made with them keep naming this file's source
    guards = stage.pick.get("not_at_chance")
    ruled = f" (a rate that left a run at chance in {', '.join(guards)} is not eligible)" if guards else ""
    picks = {
        "lr_picks": found.picks,
        "lr_picks_source": f"{study.name}, stage {named}: best mean of {' + '.join(tasks)} main metrics"
        f"{ruled}; {study.picks_path}",
        "complete": not found.missing,
        "sweep_table": list(found.table),
    }
    records.write_text_atomic(study.picks_path, yaml.safe_dump(picks, sort_keys=False))
    return picks


@dataclass
class Planned:
    spec: RunSpec
    record: Path
    config: dict[str, Any] | None = None  # the config the run will have; None: not checked
    cell: tuple | None = None  # (task, backbone, method, variant, budget), as its record's key

    @property
    def done(self) -> bool:
        return records.is_complete(self.record)

    def mismatch(self) -> list[str]:
        """What a complete record at this run's path was made with that this run would not be: the config
        keys both have that decide what a run learns (``cells.differences``' rule); empty when it is this run's."""
        found = records.read_record(self.record) if self.config is not None else None
        if not found or found.get("status") != "complete":
            return []
        theirs, ours = (own_rate_only(flatten_config(c)) for c in (found.get("config") or {}, self.config))
        # a key only one side has is a setting added or dropped since (its default kept the old behaviour)
        keys = {k for k in set(theirs) & set(ours) if not is_bookkeeping(k) and k != "seed"}
        return sorted(f"{k}: {theirs.get(k)} there, {ours.get(k)} here" for k in keys if theirs.get(k) != ours.get(k))


def plan_runs(study: Study, stages: list[Stage], data_dir: str | None, paths: RecordPaths) -> list[Planned]:
    """Every run of the chosen stages, in priority order; a stage after an unfinished pick has none yet."""
    planned, picks = [], read_picks(study)
    for stage in stages:
        if stage.pick:
            picks = write_picks(study, stage, data_dir, paths)
            continue
        for spec in expand(study, stage, picks, data_dir):
            path = paths(spec)
            planned.append(Planned(spec, path, paths.configs.get(path), paths.cells.get(path)))
    wrong = [(p, p.mismatch()) for p in planned]
    wrong = [(p, diff) for p, diff in wrong if diff]
    if wrong:
        first, diff = wrong[0]
        raise UserError(
            f"{len(wrong)} complete record(s) were made with other settings than the study asks for, e.g. "
            f"{first.record} ({'; '.join(diff[:3])}): move them aside (their own results_dir) or delete them"
        )
    return planned


def planned_runs(study: Study, stages: list[Stage], data_dir: str | None) -> list[Planned]:
    paths = RecordPaths()
    try:
        return plan_runs(study, stages, data_dir, paths)
    finally:
        paths.close()


def stage_progress(study: Study, planned: list[Planned]) -> list[StageProgress]:
    progress = []
    for stage in study.stages:
        mine = [p for p in planned if p.spec.stage == stage.name]
        if stage.pick:
            continue
        if not mine:
            progress.append(StageProgress(stage.name, 0, 0, ("waits for its rate picks",)))
            continue
        missing = tuple(p.spec.label for p in mine if not p.done)
        progress.append(StageProgress(stage.name, len(mine) - len(missing), len(mine), missing))
    return progress


# -- time ------------------------------------------------------------------------------------------


def run_minutes(record: dict[str, Any], measured: float | None = None) -> float | None:
    """How long the whole run took: ``measured`` (this driver's clock) or the record's start to finish.
    None for a run resumed from a checkpoint: its attempts' times are neither (the last attempt ran part
    of it, the record's span holds the pause), so it tells nothing of what a run costs."""
    if (record.get("extras") or {}).get("resumed"):
        return None
    if measured is not None:
        return measured
    try:
        start = dt.datetime.fromisoformat(record["started_at"])
        end = dt.datetime.fromisoformat(record["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds() / 60


def eta_minutes(left: list[Planned], finished: list[tuple[Planned, float]], workers: int) -> float | None:
    """Minutes until every run left is done: each run's time guessed from the finished runs of its
    (task, method), else of its task, else of all; the sum spread over the workers."""
    if not finished:
        return None

    def value(spec: RunSpec, key: str) -> Any:
        found = [o.split("=", 1)[1] for o in spec.overrides if o.startswith(f"{key}=")]
        return found[-1] if found else None  # the last one wins, as on the command line

    def guess(spec: RunSpec) -> float:
        for match in (("task", "method"), ("task",), ()):
            same = [m for p, m in finished if all(value(p.spec, k) == value(spec, k) for k in match)]
            if same:
                return statistics.mean(same)
        return 0.0

    return sum(guess(p.spec) for p in left) / max(1, workers)


def clock(minutes: float | None) -> str:
    if minutes is None:
        return "ETA after the first run"
    hours, rest = divmod(round(minutes), 60)
    return f"ETA {hours} h {rest:02d} min" if hours else f"ETA {rest} min"


# -- running ---------------------------------------------------------------------------------------


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def start_run(planned: Planned, slot: int, gpus: int, log_dir: Path) -> tuple[int, float]:
    """One ``dora-bench`` process; returns (exit status, minutes)."""
    env = {**os.environ, **OFFLINE}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (log_dir / f"{planned.spec.stage}-w{slot}.log").open("a") as log:
        log.write(f"\n[study] {dt.datetime.now().isoformat(timespec='seconds')} {planned.spec.label}\n")
        log.flush()
        status = subprocess.run(
            [sys.executable, "-m", "dora_bench.run.cli", *planned.spec.overrides],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        ).returncode
    return status, (time.perf_counter() - start) / 60


def planned_seeds(study: Study, planned: list[Planned]) -> dict[tuple, set[int]]:
    """Each cell's seeds as the stages plan them, over the runs whose records go to the study's own
    ``runs/`` (a rate check's seed 100 in its own folder is no seed of the arms)."""
    own = (study.results_dir / "runs").resolve()
    seeds: dict[tuple, set[int]] = {}
    for p in planned:
        if p.cell is not None and p.config is not None and p.record.resolve().is_relative_to(own):
            seeds.setdefault(p.cell, set()).add(p.config["seed"])
    return seeds


def refresh(study: Study, planned: list[Planned], command: str, quiet: bool = True) -> None:
    """The study's tables, allocation diagnostics, analysis.md and report page, from the records."""
    from dora_bench.report.page import write_report
    from dora_bench.report.tables import write_allocation_diagnostics, write_tables

    if not (study.results_dir / "runs").is_dir():
        return
    settings = Settings(seeds=study.analysis.seeds if study.analysis else 5)
    write_tables(study.results_dir, settings, quiet=quiet)
    write_allocation_diagnostics(study.results_dir, figures=not quiet, quiet=quiet)
    seeds = planned_seeds(study, planned)
    if study.analysis:
        picks = read_picks(study)
        sweep = (("The rates picked (lr_picks.yaml)", tuple(picks.get("sweep_table") or ())),) if picks else ()
        progress = stage_progress(study, planned)
        text = analysis_markdown(study.analysis, load_runs(study.results_dir), progress, command, sweep, seeds)
        records.write_text_atomic(study.results_dir / "analysis.md", text)
    write_report(study.results_dir, settings, study.analysis, seeds)


def run_study(study: Study, planned: list[Planned], workers: int, gpus: int, command: str) -> int:
    left = [p for p in planned if not p.done]
    finished: list[tuple[Planned, float]] = []
    for p in planned:  # the records already there tell how long a run takes
        minutes = run_minutes(records.read_record(p.record) or {}) if p.done else None
        if minutes is not None:
            finished.append((p, minutes))
    total, failed, lock = len(planned), [], threading.Lock()
    print(f"[study] {study.name}: {total - len(left)} of {total} runs complete, {len(left)} to run on "
          f"{workers} worker(s){f' over {gpus} GPU(s)' if gpus else ''}; {clock(eta_minutes(left, finished, workers))}",
          flush=True)  # fmt: skip
    queue = list(left)
    slots = list(range(workers))
    running: dict[Future, tuple[Planned, int]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while queue or running:
                while queue and slots:
                    nxt = queue.pop(0)
                    if nxt.done:  # another driver finished it meanwhile
                        continue
                    slot = slots.pop(0)
                    running[pool.submit(start_run, nxt, slot, gpus, study.results_dir / "logs")] = (nxt, slot)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item, slot = running.pop(future)
                    slots.append(slot)
                    status, minutes = future.result()
                    with lock:
                        if item.done:
                            whole = run_minutes(records.read_record(item.record) or {}, minutes)
                            if whole is not None:
                                finished.append((item, whole))
                            outcome = f"done in {minutes:.1f} min" + ("" if whole is not None else " (resumed)")
                        else:
                            failed.append(item)
                            record = records.read_record(item.record) or {}
                            outcome = f"not complete (exit {status}; {record.get('error') or 'see the log'})"
                        left = [p for p in planned if not p.done]
                        eta = clock(eta_minutes(left, finished, workers))
                        where = f"{total - len(left)} of {total} complete, {len(left)} left; {eta}"
                        print(f"[study] {item.spec.stage}: {item.spec.label}: {outcome}. {where}", flush=True)
                        refresh(study, planned, command)
        except KeyboardInterrupt:
            print("[study] interrupted: runs in progress end with this process; start again to resume", flush=True)
            raise
    return 1 if failed else 0


def commit(study: Study) -> int:
    """Commit the complete runs' folders (records, metrics, heatmaps: .gitignore keeps weights out), the
    logs and the study's tables and analysis; a session's background work ends with it."""
    roots = {study.results_dir, *(Path(s.results_dir) for s in study.stages if s.results_dir)}
    done = sorted({p.parent for root in roots for p in root.glob("runs/**/record.json") if records.is_complete(p)})
    extra = [
        p
        for p in (
            study.results_dir / n for n in ("logs", "tables", "figures", "analysis.md", "lr_picks.yaml", "report")
        )
        if p.exists()
    ]
    if not done and not extra:
        print("[study] nothing to commit")
        return 0
    paths = [str(p) for p in done + extra]
    subprocess.run(["git", "add", "--", *paths], check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], check=False).returncode == 0:
        print("[study] nothing new to commit")
        return 0
    message = f"{study.name}: {len(done)} complete runs so far (records, metrics, tables, analysis; logs)"
    return subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-study", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study file, e.g. conf/study/minilm_long.yaml")
    parser.add_argument("action", nargs="?", default="run", choices=("run", "plan", "report", "commit"))
    parser.add_argument("--stage", action="append", help="only this stage (repeatable); default: every stage")
    parser.add_argument(
        "--workers", type=int, help="runs at a time (default: the study's, else one per core or GPU slot)"
    )
    parser.add_argument("--runs-per-gpu", type=int, default=4, help="on a GPU box: runs sharing one GPU (default: 4)")
    parser.add_argument("--data-dir", help="overrides the study's data_dir (passed as task.data_dir)")
    args = parser.parse_args(argv)
    command = "dora-bench-study " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        study = load_study(args.study)
        stages = [study.stage(name) for name in args.stage] if args.stage else list(study.stages)
        data_dir = args.data_dir or study.data_dir
        if data_dir and not Path(data_dir).is_dir():
            raise UserError(f"data_dir {data_dir} is not a folder: pass --data-dir /path/to/glue_data")
        if args.action == "commit":
            return commit(study)
        if args.action == "report":
            refresh(study, planned_runs(study, stages, data_dir), command, quiet=False)
            print(f"[study] wrote {study.results_dir / 'analysis.md'} and the tables")
            return 0
        planned = planned_runs(study, stages, data_dir)
        if args.action == "plan":
            for p in planned:
                print(f"{'done' if p.done else 'left'}  {p.spec.stage}: {p.spec.label}  ({p.record})")
            for stage in stage_progress(study, planned):
                waits = f" ({stage.missing[0]})" if not stage.total and stage.missing else ""
                print(f"[study] {stage.name}: {stage.done} of {stage.total} complete{waits}")
            return 0
        gpus = gpu_count()
        workers = args.workers or study.workers or (gpus * args.runs_per_gpu if gpus else os.cpu_count() or 1)
        status = 0
        if all(p.done for p in planned):
            print(f"[study] {study.name}: {len(planned)} of {len(planned)} runs complete, nothing to run", flush=True)
        while any(not p.done for p in planned):
            status = max(status, run_study(study, planned, workers, gpus, command))
            again = planned_runs(study, stages, data_dir)  # a sweep that finished lets a pick open its stages
            if len(again) == len(planned) or status:
                planned = again
                break
            planned = again
        refresh(study, planned, command, quiet=False)
        return status
    except UserError as err:
        print(f"dora-bench-study: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
