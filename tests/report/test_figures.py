"""Figures from hand-made records: Figure 2 from rank grids, the budget schedule, learning curves."""

from __future__ import annotations

import json

import pytest
from test_tables import write_run  # pytest puts tests/ on sys.path

from dora_bench import records
from dora_bench.methods.shared.allocation import allocation_grid
from dora_bench.report.cells import load_runs
from dora_bench.report.figures import mean_grid, pool_allocations, seed_points, write_figures

TYPES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ranks(budget: int, seed: int, layers: int = 12) -> dict[str, int]:
    """A made-up allocation: more rank in the middle layers, shifted by the seed."""
    return {
        f"roberta.encoder.layer.{i}.{t}": max(0, budget + (1 if 3 <= i <= 8 else -1) + (seed + j) % 2 - 1)
        for i in range(layers)
        for j, t in enumerate(TYPES)
    }


@pytest.fixture
def allocation_runs(tmp_path):
    for method in ("dora", "adalora"):
        for budget in (2, 8):
            for seed in (0, 1):
                extras = {
                    "rank_allocation_grid": allocation_grid(ranks(budget, seed)),
                    "total_steps": 100,
                    "budget_schedule": [{"step": 0, "kept": 72 * 3 * budget // 2}, {"step": 50, "kept": 72 * budget}],
                }
                path = write_run(
                    tmp_path, task="sst2", method=method, seed=seed, best=0.9, budget=budget, extras=extras
                )
                (path.parent / "metrics.jsonl").write_text(
                    "".join(json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3}) + "\n" for s in range(1, 21))
                )
    return tmp_path


def test_figure2_and_friends_are_written(allocation_runs):
    written = {p.relative_to(allocation_runs / "figures").as_posix() for p in write_figures(allocation_runs)}
    assert "figure2_allocation_sst2_roberta-base.png" in written
    assert {"budget_schedule/sst2_roberta-base_b2.png", "budget_schedule/sst2_roberta-base_b8.png"} <= written
    assert {"seed_scores_roberta-base_b2.png", "seed_scores_roberta-base_b8.png"} <= written
    assert "curves/sst2/roberta-base/dora_b8.png" in written and len(written) == 1 + 2 + 2 + 4
    figure = allocation_runs / "figures" / "figure2_allocation_sst2_roberta-base.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC and figure.stat().st_size > 50_000  # 4 panels of 12 x 6 cells


def test_seed_points_keep_every_seed_and_put_unbudgeted_methods_under_each_budget(tmp_path):
    for seed, (dora, lora) in enumerate([(0.81, 0.80), (0.79, 0.82)]):
        write_run(tmp_path, task="rte", method="dora", seed=seed, best=dora, budget=2)
        write_run(tmp_path, task="rte", method="lora", seed=seed, best=lora, budget=8)
    write_run(tmp_path, task="rte", method="bitfit", seed=0, best=0.70)
    write_run(tmp_path, task="rte", method="dora", seed=3, best=0.60, budget=8, countable=False)
    write_run(tmp_path, task="rte", method="dora", seed=4, best=0.99, budget=8, variant="nodem")  # not plain
    write_run(tmp_path, task="rte", method="lora", seed=5, best=0.99, budget=8, status="failed")
    runs = [run for run in load_runs(tmp_path) if run.complete and run.key[3] is None]
    points = seed_points(runs)
    assert set(points) == {("roberta-base", 2), ("roberta-base", 8)}
    assert points[("roberta-base", 2)]["rte"] == {
        "dora": {0: (pytest.approx(81.0), True), 1: (pytest.approx(79.0), True)},
        "bitfit": {0: (pytest.approx(70.0), True)},  # no budget: beside every budget's methods
    }
    b8 = points[("roberta-base", 8)]["rte"]
    assert b8["dora"] == {3: (pytest.approx(60.0), False)}  # hollow in the figure: no eligible epoch
    assert set(b8["lora"]) == {0, 1} and set(b8["bitfit"]) == {0}
    written = {p.name for p in write_figures(tmp_path)}
    assert {"seed_scores_roberta-base_b2.png", "seed_scores_roberta-base_b8.png"} <= written


def test_mean_grid_averages_seeds_cell_by_cell():
    a = {"rows": ["0", "1"], "columns": ["Wq", "Wk"], "values": [[2, 4], [None, 1]]}
    b = {"rows": ["0", "1"], "columns": ["Wq", "Wk"], "values": [[3, 4], [5, 0]]}
    # (2+3)/2 = 2.5, (4+4)/2 = 4, None where a seed has no such module, (1+0)/2 = 0.5
    assert mean_grid([a, b])["values"] == [[2.5, 4.0], [None, 0.5]]


def test_runs_without_grids_get_curves_only(tmp_path):
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.7)
    written = write_figures(tmp_path)
    assert [p.name for p in written] == ["lora_b8.png"]
    assert not load_runs(tmp_path)[0].path.with_name("metrics.jsonl").exists()  # no loss panel needed
    assert records.is_complete(load_runs(tmp_path)[0].path)


def set_config(path, key: str, value) -> None:
    """Change one ``method.<key>`` of a written record's resolved config."""
    record = records.read_record(path)
    record["config"]["method"][key] = value
    records.write_json_atomic(path, record)


def test_figure2_refuses_seeds_made_with_different_configs(allocation_runs, capsys):
    # DoRA b8 seed 1 was run with AdaLoRA's schedule but no variant tag: it must not be averaged with seed 0
    run_dir = dict(task="sst2", backbone="roberta-base", variant=None, seed=1)
    set_config(
        records.run_dir(allocation_runs, method="dora", budget=8, **run_dir) / records.RECORD_NAME,
        "schedule",
        "adalora",
    )
    for method in ("dora", "adalora"):  # and both budget-2 panels: a column with nothing to draw
        set_config(
            records.run_dir(allocation_runs, method=method, budget=2, **run_dir) / records.RECORD_NAME, "dem_coef", 0.0
        )
    pooled = pool_allocations(load_runs(allocation_runs))
    dora = pooled[("dora", 8)]
    assert dora.grid is None and dora.differing == ("method.schedule",) and "method.schedule" in dora.refused
    assert pooled[("dora", 2)].grid is None and pooled[("adalora", 2)].grid is None
    # AdaLoRA b8 still pools: layer 0 has ranks 6, 7, 6, ... in seed 0 and 7, 6, 7, ... in seed 1 -> 6.5 each
    assert pooled[("adalora", 8)].seeds == (0, 1) and pooled[("adalora", 8)].grid["values"][0] == [6.5] * 6

    written = write_figures(allocation_runs)
    figure = allocation_runs / "figures" / "figure2_allocation_sst2_roberta-base.png"
    assert figure in written and figure.read_bytes()[:8] == PNG_MAGIC
    err = capsys.readouterr().err
    assert "dora bT=8 refused" in err and "method.schedule" in err and "adalora bT=8" not in err


def test_figure2_counts_failed_records_when_deciding_to_pool(allocation_runs):
    # as in the tables, a failed record made with other settings means the cell's settings are mixed
    write_run(allocation_runs, task="sst2", method="dora", seed=2, best=0.0, budget=8, status="failed", lr=5e-4)
    assert "method.lr" in pool_allocations(load_runs(allocation_runs))[("dora", 8)].refused
