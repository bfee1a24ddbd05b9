"""The study driver: a study file's stages expand in priority order, a pick feeds the stages after it,
a stopped study resumes where it stopped, and the analysis is the one the file declared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dora_bench.errors import ConfigError, UserError
from dora_bench.report.cells import RunRecord
from dora_bench.report.study import AnalysisPlan, CellSpec, learnt_nothing, pick_rates, rates_at_chance
from dora_bench.study.driver import Planned, RecordPaths, eta_minutes, plan_runs, run_minutes, write_picks
from dora_bench.study.plan import RunSpec, expand, load_study
from support import REPO

STUDY = {
    "name": "Tiny study",
    "results_dir": "out",
    "workers": 2,
    "overrides": ["task=demo", "backbone=tiny", "trainer.max_steps=20", "trainer.cpu_threads=1",
                  "trainer.progress=false", "trainer.checkpoint=false"],
    "stages": [
        {"name": "sweep", "results_dir": "out/sweep", "tag": "lr_{trainer_lr}",
         "grid": {"method": ["lora"], "trainer.lr": [1.0e-4, 1.0e-2], "seed": [100]}},
        {"name": "pick", "pick": {"from": "sweep", "tasks": ["demo"]}},
        {"name": "grid", "rates": "picked", "grid": {"seed": [0, 1], "method": ["lora", "bitfit"]}},
    ],
    "analysis": {"backbone": "tiny", "budget": 2, "seeds": 2, "tasks": ["demo"], "rows": ["lora", "bitfit"],
                 "comparisons": [{"a": "lora", "b": "bitfit", "family": "main"}]},
}  # fmt: skip


def write_study(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_a_grid_expands_with_its_first_key_outermost_and_groups_taken_together(tmp_path):
    arms = [["method=dora"], ["method=dora", "+experiment/ablation=random"]]
    stage = {"name": "arms", "grid": {"seed": [0, 1], "arm": arms, "extra": [None]}}
    study = load_study(write_study(tmp_path, {**STUDY, "stages": [stage]}))
    runs = expand(study, study.stages[0], None, "/data")
    assert [r.label for r in runs] == [
        "seed=0 method=dora",
        "seed=0 method=dora +experiment/ablation=random",
        "seed=1 method=dora",
        "seed=1 method=dora +experiment/ablation=random",
    ]
    assert runs[1].overrides[-3:] == ("seed=0", "method=dora", "+experiment/ablation=random")
    assert "task.data_dir=/data" in runs[0].overrides and "results_dir=out" in runs[0].overrides


def test_a_tag_names_each_run_s_variant_and_picked_rates_wait_for_the_pick(tmp_path):
    study = load_study(write_study(tmp_path, STUDY))
    sweep = expand(study, study.stage("sweep"), None, None)
    assert [o for r in sweep for o in r.overrides if o.startswith("variant=")] == [
        "variant=lr_0.0001",
        "variant=lr_0.01",
    ]
    assert expand(study, study.stage("grid"), None, None) == []  # no picks yet: nothing of it can run
    picked = expand(study, study.stage("grid"), {"lr_picks": {"lora": 0.01}, "lr_picks_source": "s"}, None)
    assert "lr_picks={lora:0.01}" in picked[0].overrides and "lr_picks_source='s'" in picked[0].overrides


GRID_A = {"name": "a", "grid": {"seed": [0]}}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"stages": [{"name": "a", "grid": {}}]}, "neither a grid nor a pick"),
        ({"stages": [{"name": "a", "pick": {"from": "b"}}]}, "picks from 'b', which is no stage"),
        (
            {"stages": [{"name": "a", "grid": {"seed": [0]}}, {"name": "a", "grid": {"seed": [1]}}]},
            "name each stage once",
        ),
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"stages": [GRID_A, {"name": "p", "pick": {"from": "a", "not_at_chance": ["b"]}}]}, "names 'b', which is no"),
        ({"stages": [GRID_A, {"name": "p", "pick": {"from": "a", "rule": 1}}]}, "a pick takes only"),
    ],
)
def test_bad_study_files_are_refused_in_one_line(tmp_path, change, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_study(write_study(tmp_path, {**STUDY, **change}))


def record(method: str, lr: float, score: float | None, task: str = "stsb", budget: int | None = 8) -> RunRecord:
    status = "complete" if score is not None else "failed"
    best = {"metrics": {"pearson": score}} if score is not None else None
    return RunRecord(Path(f"/x/{method}{lr}"), {"method": method, "task": task, "budget": budget, "status": status,
                                          "main_metric": "pearson", "best": best, "extras": {"lr": lr}})  # fmt: skip


def test_pick_takes_the_best_rate_ties_to_the_lower_and_ignores_failed_rates_and_other_budgets():
    runs = [record("dora", 1e-3, 0.80), record("dora", 3e-3, 0.85), record("dora", 1e-2, None),
            record("lora", 1e-3, 0.82), record("lora", 3e-3, 0.82), record("lora", 1e-2, 0.99, budget=2)]  # fmt: skip
    found = pick_rates(runs, ["stsb"], budget=8)
    assert found.picks == {"dora": 3e-3, "lora": 1e-3}
    assert found.missing == ("dora lr 0.01",)
    assert "| dora | 0.003 | 85.00 | 85.00 | **yes** |" in found.table


def test_eta_guesses_each_run_from_its_own_task_and_method():
    def planned(task, method):
        return Planned(RunSpec("s", (f"task={task}", f"method={method}"), ()), Path("/none"))

    finished = [(planned("stsb", "dora"), 20.0), (planned("stsb", "lora"), 10.0), (planned("sst2", "dora"), 6.0)]
    left = [planned("stsb", "dora"), planned("stsb", "adalora"), planned("cola", "dora")]
    # 20 (same task and method) + 15 (same task) + 12 (all runs) over 2 workers
    assert eta_minutes(left, finished, 2) == pytest.approx((20 + 15 + 12) / 2)
    assert eta_minutes(left, [], 2) is None


def test_a_resumed_run_gives_no_run_time_to_the_eta():
    whole = {"started_at": "2026-12-03T20:00:00+00:00", "finished_at": "2026-12-03T20:30:00+00:00", "extras": {}}
    assert run_minutes(whole) == pytest.approx(30.0) and run_minutes(whole, measured=28.0) == 28.0
    # stopped at step 1,500 overnight, finished the next day in 10 minutes: neither 10 nor a day is its cost
    resumed = {**whole, "finished_at": "2026-12-04T09:10:00+00:00", "extras": {"resumed": [{"step": 1500}]}}
    assert run_minutes(resumed) is None and run_minutes(resumed, measured=10.0) is None
    assert run_minutes({"extras": {}}) is None  # no times in the record


def test_cells_and_constant_predictors_of_either_class():
    plan = AnalysisPlan.from_dict({"backbone": "m", "tasks": ["rte"], "rows": ["dora"], "chance": {"rte": [146, 277]}},
                                  "t")  # fmt: skip
    assert learnt_nothing(plan, "rte", 100 * 146 / 277) and learnt_nothing(plan, "rte", 100 * 131 / 277)
    assert not learnt_nothing(plan, "rte", 50.0)
    assert CellSpec.parse("dora-b2rate@2", 8) == CellSpec("dora", "b2rate", 2)
    assert CellSpec.parse("bitfit", 8) == CellSpec("bitfit", None, None)
    assert CellSpec.parse("dora-no_pruning", 8).label == "dora-no_pruning"


def drive(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # mutmut's MUTANT_UNDER_TEST ("stats" while it maps tests to functions) would make the driver look for
    # mutmut's config from tmp_path and fail: the driver runs unmutated (mutmut sees no subprocess anyway)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("MUTANT_UNDER_TEST", None)
    command = [sys.executable, "-m", "dora_bench.study.driver", str(tmp_path / "study.yaml"), *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)


def test_a_small_study_runs_resumes_and_reports_as_declared(tmp_path):
    write_study(tmp_path, STUDY)
    first = drive(tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    lines = [line for line in first.stdout.splitlines() if line.startswith("[study]")]
    assert lines[0].startswith("[study] Tiny study: 0 of 2 runs complete, 2 to run on 2 worker(s)")
    # the sweep's two runs, then the grid its pick opened: progress counted over all six
    assert any(line.startswith("[study] Tiny study: 2 of 6 runs complete, 4 to run") for line in lines), lines
    assert lines[-1].endswith("6 of 6 complete, 0 left; ETA 0 min"), lines
    picks = yaml.safe_load((tmp_path / "out" / "lr_picks.yaml").read_text())
    assert set(picks["lr_picks"]) == {"lora"} and picks["complete"]
    for method, budget in (("lora", "b2"), ("bitfit", "b-")):
        for seed in (0, 1):
            assert (
                tmp_path / "out" / "runs" / "demo" / "tiny" / method / budget / f"seed{seed}" / "record.json"
            ).is_file()
    analysis = (tmp_path / "out" / "analysis.md").read_text()
    assert "| lora − bitfit | demo | 2 |" in analysis
    assert "- stage `sweep`: 2 of 2 runs complete" in analysis and "- stage `grid`: 4 of 4 runs complete" in analysis
    # the sweep's seed 100 sits in its own folder: no seed the grid's lora cell lacks
    assert "fewer complete seeds than their stages plan:\n\nNone." in analysis
    assert (tmp_path / "out" / "tables" / "all_cells.md").is_file()
    page = (tmp_path / "out" / "report" / "index.html").read_text()  # its status counts seeds by the plan too
    assert "the seeds its study's stages plan for it" in page and "short of seeds" not in page

    again = drive(tmp_path)  # nothing left: every complete record is skipped
    assert again.returncode == 0
    assert [line for line in again.stdout.splitlines() if line.startswith("[study]")] == [
        "[study] Tiny study: 6 of 6 runs complete, nothing to run"
    ]
    plan = drive(tmp_path, "plan")
    assert plan.stdout.count("done  ") == 6 and "left  " not in plan.stdout

    # the same study asking for longer runs: the records there were made otherwise, so none counts as done
    write_study(
        tmp_path, {**STUDY, "overrides": [o.replace("max_steps=20", "max_steps=30") for o in STUDY["overrides"]]}
    )
    longer = drive(tmp_path, "plan")
    assert longer.returncode == 2 and "were made with other settings" in longer.stderr
    assert "trainer.max_steps: 20 there, 30 here" in longer.stderr


def test_a_rate_that_left_a_run_at_chance_is_not_eligible_however_good_its_mean():
    plan = {"backbone": "m", "tasks": ["sst2"], "rows": ["dora"], "chance": {"sst2": [444, 872]}}
    plan = AnalysisPlan.from_dict(plan, "t")
    guard = [record("dora", 1e-2, 444 / 872, task="sst2"), record("dora", 1e-2, 0.87, task="sst2"),
             record("dora", 3e-3, 0.5, task="sst2"), record("lora", 1e-3, 428 / 872, task="sst2"),
             record("adalora", 1e-2, 0.0)]  # fmt: skip
    at_chance = rates_at_chance(plan, guard)
    assert at_chance == {"dora": {1e-2: ["sst2 seed None (50.92)"]}, "lora": {1e-3: ["sst2 seed None (49.08)"]},
                         "adalora": {1e-2: ["stsb seed None (0.00)"]}}  # fmt: skip
    sweep = [record("dora", 1e-2, 0.868), record("dora", 3e-3, 0.863), record("lora", 1e-3, 0.85),
             record("adalora", 1e-2, 0.80)]  # fmt: skip
    found = pick_rates(sweep, ["stsb"], at_chance=at_chance)
    assert found.picks == {"dora": 3e-3}  # 1e-2's better mean does not count
    assert found.unpicked == ("lora", "adalora")  # their only rate is ruled out: nothing to pick
    assert "| dora | 0.01 | 86.80 | 86.80 | not eligible: at chance in sst2 seed None (50.92) |" in found.table
    assert pick_rates(sweep, ["stsb"]).picks == {"dora": 1e-2, "lora": 1e-3, "adalora": 1e-2}  # no guard: the means


def fake_record(path: Path, method: str, lr: float, task: str, score: float | None, seed: int, status: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    best = {"metrics": {"accuracy": score}} if score is not None else None
    path.write_text(json.dumps({"method": method, "task": task, "seed": seed, "budget": 2, "status": status,
                                "main_metric": "accuracy", "best": best, "extras": {"lr": lr}}))  # fmt: skip


def test_the_pick_waits_for_every_run_of_its_sweep_and_rules_out_rates_at_chance_in_the_named_stages(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    stages = [
        {"name": "gate", "results_dir": "out/gate", "grid": {"method": ["lora"], "trainer.lr": [1.0e-2], "seed": [7]}},
        {"name": "sweep", "results_dir": "out/sweep", "tag": "lr_{trainer_lr}",
         "grid": [{"method": ["lora"], "trainer.lr": [1.0e-3, 1.0e-2], "seed": [100]},
                  {"method": ["bitfit"], "trainer.lr": [1.0e-3], "seed": [100]}]},
        {"name": "pick", "pick": {"from": "sweep", "tasks": ["demo"], "not_at_chance": ["gate", "sweep"]}},
        {"name": "grid", "rates": "picked", "grid": {"seed": [0], "method": ["lora", "bitfit"]}},
    ]  # fmt: skip
    plan = {**STUDY["analysis"], "chance": {"demo": [30, 60]}}
    study = load_study(write_study(tmp_path, {**STUDY, "stages": stages, "analysis": plan}))
    paths = RecordPaths()
    try:
        sweep = [paths(s) for s in expand(study, study.stage("sweep"), None, None)]
        (gate,) = [paths(s) for s in expand(study, study.stage("gate"), None, None)]
        fake_record(sweep[0], "lora", 1e-3, "demo", 0.70, 100, "complete")
        fake_record(sweep[1], "lora", 1e-2, "demo", 0.90, 100, "complete")
        fake_record(sweep[2], "bitfit", 1e-3, "demo", None, 100, "running")
        # bitfit's run has not finished: no pick, so no arm can start with lora's rate alone
        assert write_picks(study, study.stage("pick"), None, paths) is None
        assert plan_runs(study, list(study.stages), None, paths)[-1].spec.stage == "sweep"
        fake_record(sweep[2], "bitfit", 1e-3, "demo", 0.60, 100, "complete")
        fake_record(gate, "lora", 1e-2, "demo", None, 7, "running")
        assert write_picks(study, study.stage("pick"), None, paths) is None  # the guard stage must finish too
        fake_record(gate, "lora", 1e-2, "demo", 0.5, 7, "complete")  # 30 of 60: a constant predictor
        picks = write_picks(study, study.stage("pick"), None, paths)
        assert picks["lr_picks"] == {"lora": 1e-3, "bitfit": 1e-3}
        assert "not eligible: at chance in demo seed 7 (50.00), stage gate" in "\n".join(picks["sweep_table"])
        assert "is not eligible" in picks["lr_picks_source"]
        grid = [p for p in plan_runs(study, list(study.stages), None, paths) if p.spec.stage == "grid"]
        assert [o for p in grid for o in p.spec.overrides if o.startswith("lr_picks=")] == [
            "lr_picks={lora:0.001,bitfit:0.001}"
        ] * 2
        # lora's other rate at chance in the sweep itself: no lora rate is left
        fake_record(sweep[0], "lora", 1e-3, "demo", 0.5, 100, "complete")
        with pytest.raises(UserError, match="no eligible rate for lora in stage\\(s\\) sweep "):
            write_picks(study, study.stage("pick"), None, paths)
    finally:
        paths.close()


def test_a_pick_from_several_stages_waits_for_all_and_ranks_their_rates_together(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stages = [
        {"name": "sweep", "results_dir": "out/sweep", "tag": "lr_{trainer_lr}",
         "grid": {"method": ["lora"], "trainer.lr": [1.0e-3, 1.0e-2], "seed": [100]}},
        {"name": "edge", "results_dir": "out/sweep", "tag": "lr_{trainer_lr}",
         "grid": {"method": ["lora"], "trainer.lr": [3.0e-2], "seed": [100]}},
        {"name": "pick", "pick": {"from": ["sweep", "edge"], "tasks": ["demo"]}},
    ]  # fmt: skip
    study = load_study(write_study(tmp_path, {**STUDY, "stages": stages}))
    paths = RecordPaths()
    try:
        low, mid = [paths(s) for s in expand(study, study.stage("sweep"), None, None)]
        (edge,) = [paths(s) for s in expand(study, study.stage("edge"), None, None)]
        fake_record(low, "lora", 1e-3, "demo", 0.70, 100, "complete")
        fake_record(mid, "lora", 1e-2, "demo", 0.90, 100, "complete")
        assert write_picks(study, study.stage("pick"), None, paths) is None  # the edge has not run
        fake_record(edge, "lora", 3e-2, "demo", 0.20, 100, "complete")
        picks = write_picks(study, study.stage("pick"), None, paths)
        assert picks["lr_picks"] == {"lora": 1e-2}
        # the edge's rate is a row of the table, so the pick is no longer the top of the rates tried
        assert picks["sweep_table"][-2:] == [
            "| lora | 0.01 | 90.00 | 90.00 | **yes** |",
            "| lora | 0.03 | 20.00 | 20.00 |  |",
        ]
        assert "stage sweep + edge" in picks["lr_picks_source"]
        fake_record(edge, "lora", 3e-2, "demo", 0.95, 100, "complete")
        assert write_picks(study, study.stage("pick"), None, paths)["lr_picks"] == {"lora": 3e-2}
    finally:
        paths.close()


def test_a_pick_from_a_stage_that_does_not_exist_is_refused(tmp_path):
    stages = [{"name": "sweep", "grid": {"method": ["lora"], "seed": [100]}},
              {"name": "pick", "pick": {"from": ["sweep", "edge"], "tasks": ["demo"]}}]  # fmt: skip
    with pytest.raises(ConfigError, match="picks from 'edge', which is no stage"):
        load_study(write_study(tmp_path, {**STUDY, "stages": stages}))


def test_a_cell_is_short_of_the_seeds_its_stages_plan_not_of_the_study_s_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the study's results_dir, out, is relative: as the driver runs it
    from dora_bench.report.cells import RunRecord
    from dora_bench.report.study import analysis_markdown
    from dora_bench.study.driver import planned_seeds

    study = load_study(write_study(tmp_path, {**STUDY, "analysis": {**STUDY["analysis"], "seeds": 5}}))
    lora, bitfit = ("demo", "tiny", "lora", None, 2), ("demo", "tiny", "bitfit", None, None)
    planned = [
        Planned(RunSpec("grid", (), ()), tmp_path / f"out/runs/{cell[2]}/seed{seed}/record.json", {"seed": seed}, cell)
        for cell, seeds in ((lora, (0, 1, 2)), (bitfit, (0, 1, 2, 3, 4)))
        for seed in seeds
    ] + [Planned(RunSpec("sweep", (), ()), tmp_path / "out/sweep/runs/x/record.json", {"seed": 100}, lora)]
    seeds = planned_seeds(study, planned)
    assert seeds == {lora: {0, 1, 2}, bitfit: {0, 1, 2, 3, 4}}  # the sweep's own folder does not count
    done = [
        RunRecord(tmp_path / f"{m}{s}.json", {"task": "demo", "backbone": "tiny", "method": m, "variant": None,
                                             "budget": b, "seed": s, "status": "complete", "main_metric": "accuracy",
                                             "best": {"metrics": {"accuracy": 0.8}}})
        for m, b in (("lora", 2), ("bitfit", None)) for s in (0, 1, 2)
    ]  # fmt: skip
    text = analysis_markdown(study.analysis, done, planned_seeds=seeds)
    assert "- demo / bitfit: 3 of 5 seeds" in text and "- demo / lora:" not in text  # lora has its 3 of 3
    assert "- demo / lora: 3 of 5 seeds" in analysis_markdown(study.analysis, done)  # without a plan: the default
    unplanned = analysis_markdown(study.analysis, done, planned_seeds={bitfit: {0, 1, 2}})
    assert "than their stages plan:\n\nNone." in unplanned  # no stage runs lora here: not short of anything
