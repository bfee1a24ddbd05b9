"""What may pool into one cell: seeds without an eligible epoch, records that learnt from other
data or at another precision, ablation records whose settings contradict their row."""

from __future__ import annotations

import pytest
from test_tables import csv_cells, write_run  # pytest puts tests/report on sys.path

from dora_bench import records
from dora_bench.report.cells import Settings, load_runs
from dora_bench.report.render import to_markdown
from dora_bench.report.tables import table2, table5, table6


def edit(path, change) -> None:
    """Rewrite one record on disk: ``change(record)`` edits it in place."""
    record = records.read_record(path)
    change(record)
    records.write_json_atomic(path, record)


def lora_rte(root, *seeds_and_scores, **fields):
    return [write_run(root, task="rte", method="lora", seed=s, best=v, **fields) for s, v in seeds_and_scores]


# -- 1. seeds whose best epoch is not eligible ----------------------------------------------------


@pytest.fixture
def one_ineligible_seed(tmp_path):
    """LoRA on RTE: seeds 0 and 1 as usual (70, 72); seed 2 (74) never reached an eligible epoch."""
    lora_rte(tmp_path, (0, 0.70), (1, 0.72))
    write_run(tmp_path, task="rte", method="lora", seed=2, best=0.74, countable=False)
    return tmp_path


def test_a_seed_without_an_eligible_epoch_is_shown_and_left_out(one_ineligible_seed):
    table = table2(load_runs(one_ineligible_seed), Settings(seeds=3))
    cell = csv_cells(table)[("LoRA 8", "RTE")]
    # (70 + 72) / 2 = 71: seed 2's 74 is not in the statistic; with it the mean would be 72
    assert (float(cell["value"]), int(cell["n"]), cell["state"]) == (71.0, 2, "incomplete")
    assert cell["ineligible"] == "2"
    markdown = to_markdown(table)
    row = next(line for line in markdown.splitlines() if line.startswith("| LoRA | 8 "))
    assert "71.00† ± 1.41 (n=2/3, 1 without an eligible epoch, left out)" in row
    assert "**" not in row  # never bold
    assert any(note.startswith("†") and "left out" in note for note in table.notes)


def test_ineligible_seeds_are_counted_when_asked(one_ineligible_seed):
    settings = Settings(seeds=3, count_ineligible=True)
    table = table2(load_runs(one_ineligible_seed), settings)
    cell = csv_cells(table)[("LoRA 8", "RTE")]
    assert (float(cell["value"]), int(cell["n"])) == (72.0, 3)  # (70 + 72 + 74) / 3
    # all seeds are there, but a cell with a flagged seed is not compared (no bold)
    assert cell["best"] == "False" and "1 without an eligible epoch, counted" in to_markdown(table)
    assert "counted" in settings.describe()


# -- 2. records that learnt from different data or at different precision -----------------------


def refusal(table, row="LoRA 8", column="RTE") -> str:
    cell = csv_cells(table)[(row, column)]
    assert cell["state"] == "refused", cell
    return next(note for note in table.notes if f"{row} / {column}: refused" in note)


def test_fp32_and_bf16_seeds_are_refused(tmp_path):
    lora_rte(tmp_path, (0, 0.70))
    lora_rte(tmp_path, (1, 0.72), precision="bf16-autocast")
    note = refusal(table2(load_runs(tmp_path), Settings(seeds=2)))
    assert "precision: fp32, bf16-autocast" in note


def test_precision_is_compared_as_the_record_says_not_as_requested(tmp_path):
    # `auto` on a CPU trained in fp32: the same arithmetic under two spellings of trainer.precision pools
    first, second = lora_rte(tmp_path, (0, 0.70), (1, 0.72))
    for path, requested in ((first, "auto"), (second, "fp32")):
        edit(path, lambda r, p=requested: r["config"]["trainer"].update(precision=p))
    assert csv_cells(table2(load_runs(tmp_path), Settings(seeds=2)))[("LoRA 8", "RTE")]["state"] == "ok"


def test_different_dev_set_sizes_are_refused(tmp_path):
    lora_rte(tmp_path, (0, 0.70))
    lora_rte(tmp_path, (1, 0.72), eval_examples=200)
    assert "eval_examples: 277, 200" in refusal(table2(load_runs(tmp_path), Settings(seeds=2)))


def test_data_content_decides_not_its_path(tmp_path):
    # write_run gives every seed its own task.data_dir (/data/<seed>), as two machines would
    lora_rte(tmp_path, (0, 0.70), (1, 0.72))
    assert csv_cells(table2(load_runs(tmp_path), Settings(seeds=2)))[("LoRA 8", "RTE")]["state"] == "ok"
    lora_rte(tmp_path, (2, 0.74), data_fingerprint="ffff00")
    assert "data_fingerprint: a1b2c3, a1b2c3, ffff00" in refusal(table2(load_runs(tmp_path), Settings(seeds=3)))


def test_older_records_without_a_fingerprint_compare_their_data_paths(tmp_path):
    first, second = lora_rte(tmp_path, (0, 0.70), (1, 0.72), data_fingerprint=None)
    note = refusal(table2(load_runs(tmp_path), Settings(seeds=2)))  # /data/0 vs /data/1, content unknown
    assert "task.data_dir: /data/0, /data/1" in note
    edit(second, lambda r: r["config"]["task"].update(data_dir="/data/0"))
    assert csv_cells(table2(load_runs(tmp_path), Settings(seeds=2)))[("LoRA 8", "RTE")]["state"] == "ok"


def test_bookkeeping_still_pools(tmp_path):
    paths = lora_rte(tmp_path, (0, 0.70), (1, 0.72))
    edit(paths[1], lambda r: (r.update(device="cuda:3 (A100)"), r["config"].update(cache_dir="/elsewhere")))
    assert csv_cells(table2(load_runs(tmp_path), Settings(seeds=2)))[("LoRA 8", "RTE")]["state"] == "ok"


def test_only_the_methods_own_picked_rate_must_agree(tmp_path):
    # seeds 0-1 ran when the sweep had picked LoRA's and DoRA's rates, seed 2 after it had all of them
    picks = {"lora": 3e-3, "dora": 1e-2}
    paths = lora_rte(tmp_path, (0, 0.70), (1, 0.72), (2, 0.74))
    for path in paths[:2]:
        edit(path, lambda r: r["config"].update(lr_picks=dict(picks)))
    edit(paths[2], lambda r: r["config"].update(lr_picks={**picks, "houlsby": 3e-3, "bitfit": 3e-3}))
    assert csv_cells(table2(load_runs(tmp_path), Settings(seeds=3)))[("LoRA 8", "RTE")]["state"] == "ok"
    edit(paths[2], lambda r: r["config"].update(lr_picks={**picks, "lora": 1e-3}))  # LoRA's own rate moved
    assert "lr_picks.lora: 0.003, 0.003, 0.001" in refusal(table2(load_runs(tmp_path), Settings(seeds=3)))


# -- 3. ablation rows check the setting they claim -----------------------------------------------


def test_table5_refuses_a_record_whose_dem_coef_contradicts_its_row(tmp_path):
    write_run(tmp_path, task="cola", method="dora", seed=0, best=0.65, method_config={"dem_coef": 0.3})
    write_run(tmp_path, task="cola", method="dora", seed=0, best=0.61, variant="nodem", method_config={"dem_coef": 0})
    cells = csv_cells(table5(load_runs(tmp_path), Settings(seeds=1)))
    assert cells[("with DEM", "CoLA")]["state"] == cells[("without DEM", "CoLA")]["state"] == "ok"
    # a "nodem" record that ran with DEM on (the override was forgotten): not a without-DEM seed
    write_run(tmp_path, task="cola", method="dora", seed=1, best=0.66, variant="nodem", method_config={"dem_coef": 0.3})
    table = table5(load_runs(tmp_path), Settings(seeds=1))
    assert csv_cells(table)[("without DEM", "CoLA")]["state"] == "refused"
    assert any("method.dem_coef=0.3" in note and "seed1" in note for note in table.notes)
    # and a plain record with DEM off is no with-DEM seed either
    write_run(tmp_path, task="cola", method="dora", seed=1, best=0.60, method_config={"dem_coef": 0.0})
    assert csv_cells(table5(load_runs(tmp_path), Settings(seeds=1)))[("with DEM", "CoLA")]["state"] == "refused"


def test_table6_refuses_a_record_whose_init_budget_contradicts_its_row(tmp_path):
    def b0(seed, variant, configured, started):
        extras = {"init_budget": started} if started is not None else {}
        method_config = {"init_budget": configured, "final_budget": 2}
        return write_run(
            tmp_path,
            task="mrpc",
            method="dora",
            seed=seed,
            best=0.8,
            budget=2,
            variant=variant,
            extras=extras,
            method_config=method_config,
        )

    b0(0, "b0_4", 4, 4)
    b0(0, None, None, None)  # plain DoRA: init_budget null -> ceil(1.5 x 2) = 3
    cells = csv_cells(table6(load_runs(tmp_path), Settings(seeds=1)))
    assert cells[("4", "MRPC")]["state"] == cells[("3", "MRPC")]["state"] == "ok"
    b0(0, "b0_4", 6, None)  # rerun configured for b0 = 6, but filed under b0_4
    b0(0, None, None, 4)  # rerun that started from 4 (its extras say), filed as plain DoRA
    cells = csv_cells(table6(load_runs(tmp_path), Settings(seeds=1)))
    assert cells[("4", "MRPC")]["state"] == cells[("3", "MRPC")]["state"] == "refused"
