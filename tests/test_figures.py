"""Figures from hand-made records: Figure 2 from rank grids, the budget schedule, learning curves."""

from __future__ import annotations

import json

import pytest

from dora_bench import records
from dora_bench.allocation import allocation_grid
from dora_bench.figures import mean_grid, write_figures
from dora_bench.tables import load_runs
from test_tables import write_run  # pytest puts tests/ on sys.path

TYPES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ranks(budget: int, seed: int, layers: int = 12) -> dict[str, int]:
    """A made-up allocation: more rank in the middle layers, shifted by the seed."""
    return {f"roberta.encoder.layer.{i}.{t}": max(0, budget + (1 if 3 <= i <= 8 else -1) + (seed + j) % 2 - 1)
            for i in range(layers) for j, t in enumerate(TYPES)}


@pytest.fixture
def allocation_runs(tmp_path):
    for method in ("dora", "adalora"):
        for budget in (2, 8):
            for seed in (0, 1):
                extras = {"rank_allocation_grid": allocation_grid(ranks(budget, seed)), "total_steps": 100,
                          "budget_schedule": [{"step": 0, "kept": 72 * 3 * budget // 2},
                                              {"step": 50, "kept": 72 * budget}]}
                path = write_run(tmp_path, task="sst2", method=method, seed=seed, best=0.9, budget=budget,
                                 extras=extras)
                (path.parent / "metrics.jsonl").write_text("".join(
                    json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3}) + "\n" for s in range(1, 21)))
    return tmp_path


def test_figure2_and_friends_are_written(allocation_runs):
    written = {p.relative_to(allocation_runs / "figures").as_posix() for p in write_figures(allocation_runs)}
    assert "figure2_allocation_sst2_roberta-base.png" in written
    assert {"budget_schedule/sst2_roberta-base_b2.png", "budget_schedule/sst2_roberta-base_b8.png"} <= written
    assert "curves/sst2/roberta-base/dora_b8.png" in written and len(written) == 1 + 2 + 4
    figure = allocation_runs / "figures" / "figure2_allocation_sst2_roberta-base.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC and figure.stat().st_size > 50_000  # 4 panels of 12 x 6 cells


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
