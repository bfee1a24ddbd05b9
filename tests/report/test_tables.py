"""Tables from hand-made records: the numbers, the switches, and what a gap looks like."""

from __future__ import annotations

import csv
import io
import math

import pytest

from dora_bench import records
from dora_bench.errors import ConfigError, UserError
from dora_bench.report.cells import Settings, load_runs, metric, minutes_per_epoch, trainable_params
from dora_bench.report.render import to_csv, to_latex, to_markdown
from dora_bench.report.tables import main, table2, table3, table5, table6, table9, write_tables

MAIN_METRIC = {"rte": "accuracy", "cola": "mcc", "mnli": "accuracy", "stsb": "pearson"}


def write_run(
    root,
    *,
    task,
    method,
    seed,
    best,
    last=None,
    budget=8,
    variant=None,
    backbone="roberta-base",
    status="complete",
    lr=1e-3,
    extras=None,
    epochs=None,
    method_config=None,
    precision="fp32",
    eval_examples=277,
    data_fingerprint="a1b2c3",
    countable=True,
):
    """A record as the loop writes it (records.new_record + the run_dir layout); scores are fractions.
    ``method_config``: more ``config.method`` keys; ``precision`` etc.: the record's own fields (None: absent);
    ``countable=False``: no epoch ended after the budget was final, so the best is the last, flagged."""
    uses_budget = method not in ("full_ft", "bitfit")
    budget = budget if uses_budget else None
    main = MAIN_METRIC.get(task, "accuracy")
    last = best if last is None else last
    config = {
        "task": {"name": task, "data_dir": f"/data/{seed}"},
        "method": {"name": method, "lr": lr, **(method_config or {})},
        "backbone": {"name": backbone},
        "budget": budget,
        "seed": seed,
        "variant": variant,
        "results_dir": str(root),
        "trainer": {"epochs": 3, "device": "cpu"},
    }
    record = records.new_record(
        task=task,
        method=method,
        variant=variant,
        budget=budget,
        seed=seed,
        backbone=backbone,
        config=config,
        main_metric=main,
        status=status,
    )
    if status == "complete":
        record.update(
            epochs=epochs
            or [
                {
                    "epoch": 1,
                    "step": 10,
                    "seconds": 30.0 + seed,
                    "train_loss": 0.5,
                    "countable": countable,
                    "metrics": {main: best},
                },
                {
                    "epoch": 2,
                    "step": 20,
                    "seconds": 90.0 + seed,
                    "train_loss": 0.4,
                    "countable": countable,
                    "metrics": {main: last},
                },
            ],
            best={"epoch": 1, "metrics": {main: best}, "countable": True}
            if countable
            else {"epoch": 2, "metrics": {main: last}, "countable": False},
            last={"epoch": 2, "metrics": {main: last}},
            trainable_params={"paper": 1_310_000, "total": 1_311_538},
            extras=extras or {},
        )
        # the fields setup() fills in once the data is read and the device picked
        facts = {"precision": precision, "eval_examples": eval_examples, "data_fingerprint": data_fingerprint}
        record.update({key: value for key, value in facts.items() if value is not None})
    elif status == "failed":
        record["error"] = "RuntimeError: CUDA out of memory"
    folder = records.run_dir(
        root, task=task, backbone=backbone, method=method, variant=variant, budget=budget, seed=seed
    )
    records.write_json_atomic(folder / records.RECORD_NAME, record)
    return folder / records.RECORD_NAME


@pytest.fixture
def results(tmp_path):
    """2 methods x 2 tasks at budget 8: LoRA and DoRA on RTE (3 seeds) and CoLA (2 seeds)."""
    scores = {
        ("lora", "rte"): [0.70, 0.72, 0.74],
        ("dora", "rte"): [0.75, 0.76, 0.80],
        ("lora", "cola"): [0.60, 0.64],
        ("dora", "cola"): [0.62, 0.66],
    }
    for (method, task), values in scores.items():
        for seed, value in enumerate(values):
            write_run(tmp_path, task=task, method=method, seed=seed, best=value, last=value - 0.01)
    return tmp_path


def csv_cells(table) -> dict[tuple[str, str], dict]:
    return {(line["row"], line["column"]): line for line in csv.DictReader(io.StringIO(to_csv(table)))}


def test_mean_and_sample_std_in_all_three_formats(results):
    table = table2(load_runs(results), Settings(seeds=3))
    cells = csv_cells(table)
    # LoRA RTE: 70, 72, 74 -> mean 72; deviations -2, 0, 2 -> var (4 + 0 + 4) / (3 - 1) = 4 -> std 2
    lora = cells[("LoRA 8", "RTE")]
    assert (float(lora["value"]), float(lora["spread"]), int(lora["n"])) == (72.0, 2.0, 3)
    # DoRA RTE: 75, 76, 80 -> mean 77; deviations -2, -1, 3 -> var (4 + 1 + 9) / 2 = 7 -> std sqrt(7)
    dora = cells[("DoRA 8", "RTE")]
    assert float(dora["value"]) == 77.0 and float(dora["spread"]) == pytest.approx(math.sqrt(7), abs=1e-4)
    # against the paper's 81.73: 77 - 81.73 = -4.73
    assert float(dora["paper"]) == 81.73 and float(dora["diff"]) == pytest.approx(-4.73)
    # DoRA CoLA: 62, 66 -> mean 64, std sqrt(((-2)^2 + 2^2) / 1) = 2.83; only 2 of the 3 seeds
    assert float(cells[("DoRA 8", "CoLA")]["value"]) == 64.0 and cells[("DoRA 8", "CoLA")]["state"] == "incomplete"

    markdown, latex = to_markdown(table), to_latex(table)
    assert "| 72.00 ± 2.00 |" in markdown and "| **77.00** ± 2.65 |" in markdown  # full: no remark; best bold
    assert "72.00 $\\pm$ 2.00" in latex and "\\textbf{77.00} $\\pm$ 2.65" in latex
    assert "81.73 (-4.73)" in markdown and "81.73 (-4.73)" in latex
    assert "\\toprule" in latex and "\\bottomrule" in latex
    assert "ddof=1" in markdown


def test_fewer_seeds_than_expected_are_marked_not_bold(results):
    markdown = to_markdown(table2(load_runs(results), Settings(seeds=3)))
    # CoLA has 2 of 3 seeds: shown with its count and never bold, though DoRA's 64 beats LoRA's 62
    assert "64.00 ± 2.83 (n=2/3)" in markdown and "**64.00**" not in markdown
    assert "62.00 ± 2.83 (n=2/3)" in markdown


def test_last_epoch_switch(results):
    best = csv_cells(table2(load_runs(results), Settings(seeds=3, epoch="best")))
    last = csv_cells(table2(load_runs(results), Settings(seeds=3, epoch="last")))
    # every run's last epoch is 0.01 (1 point x100) below its best
    assert float(last[("LoRA 8", "RTE")]["value"]) == pytest.approx(float(best[("LoRA 8", "RTE")]["value"]) - 1.0)
    assert "last epoch" in to_markdown(table2(load_runs(results), Settings(seeds=3, epoch="last")))


def test_median_with_range(tmp_path):
    for seed, value in enumerate([0.70, 0.72, 0.78]):
        write_run(tmp_path, task="rte", method="lora", seed=seed, best=value)
    table = table2(load_runs(tmp_path), Settings(seeds=3, stat="median"))
    line = csv_cells(table)[("LoRA 8", "RTE")]
    assert (float(line["value"]), float(line["spread"]), float(line["spread_high"])) == (72.0, 70.0, 78.0)
    assert "**72.00** [70.00, 78.00]" in to_markdown(table)  # the only full cell of its column: bold


def test_missing_failed_and_unfinished_are_shown(tmp_path):
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)
    write_run(tmp_path, task="rte", method="lora", seed=1, best=0.0, status="failed")
    write_run(tmp_path, task="cola", method="lora", seed=0, best=0.0, status="failed")
    write_run(tmp_path, task="cola", method="lora", seed=1, best=0.0, status="failed")
    write_run(tmp_path, task="mnli", method="lora", seed=0, best=0.0, status="running")
    table = table2(load_runs(tmp_path), Settings(seeds=5))
    markdown, cells = to_markdown(table), csv_cells(table)
    assert "70.00 (n=1/5, 1 failed)" in markdown  # one seed: no std, and the failure is said
    assert "failed (2)" in markdown  # CoLA: both runs failed, no number
    assert "unfinished (1)" in markdown  # MNLI: a record still running (or killed)
    assert cells[("LoRA 8", "QQP")]["state"] == "missing"
    assert (cells[("LoRA 8", "CoLA")]["failed"], cells[("LoRA 8", "MNLI")]["unfinished"]) == ("0 1", "0")
    assert (cells[("LoRA 8", "RTE")]["seeds"], cells[("LoRA 8", "RTE")]["failed"]) == ("0", "1")
    lora_row = next(line for line in markdown.splitlines() if line.startswith("| LoRA | 8 "))
    assert lora_row.count("—") >= 5  # RTE, CoLA, MNLI have something; the other 5 tasks don't
    assert "— |" in lora_row  # no Avg from incomplete rows


def test_config_mismatch_is_refused_with_keys_and_paths(tmp_path):
    first = write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, lr=1e-3)
    second = write_run(tmp_path, task="rte", method="lora", seed=1, best=0.72, lr=5e-4)
    table = table2(load_runs(tmp_path), Settings(seeds=2))
    markdown = to_markdown(table)
    assert "refused [1]" in markdown and "71.00" not in markdown
    note = next(n for n in table.notes if "refused" in n)
    assert "method.lr" in note and str(first) in note and str(second) in note
    assert "task.data_dir" not in note  # paths and bookkeeping differ too, and don't count


def test_write_tables_prints_the_refusal_note_unless_quiet(tmp_path, capsys):
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, lr=1e-3)
    write_run(tmp_path, task="rte", method="lora", seed=1, best=0.72, lr=5e-4)
    write_tables(tmp_path, Settings(seeds=2), quiet=True)  # a study refreshes after every run
    assert capsys.readouterr().err == ""
    write_tables(tmp_path, Settings(seeds=2))
    assert "table2: [1] LoRA 8 / RTE: refused" in capsys.readouterr().err


def test_a_refusal_note_lists_each_record_s_value_of_the_differing_keys(tmp_path):
    first = write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, lr=1e-3)
    second = write_run(tmp_path, task="rte", method="lora", seed=1, best=0.72, lr=5e-4)
    record = records.read_record(second)
    record["config"]["trainer"].update(warmup_ratio=0.1)  # a key only the second record has
    records.write_json_atomic(second, record)
    (note,) = table2(load_runs(tmp_path), Settings(seeds=2)).notes
    assert note == (
        "[1] LoRA 8 / RTE: refused, records that differ in method.lr, trainer.warmup_ratio "
        f"[method.lr: 0.001, 0.0005; trainer.warmup_ratio: <absent>, 0.1]: {first}, {second}"
    )
    # at most four keys are detailed; the rest are counted
    record["config"]["trainer"].update(a=1, b=2, c=3)
    records.write_json_atomic(second, record)
    (note,) = table2(load_runs(tmp_path), Settings(seeds=2)).notes
    # five keys differ (sorted: method.lr, trainer.a, .b, .c, .warmup_ratio): the fifth is counted only
    assert "trainer.c: <absent>, 3 (and 1 more)]" in note and "trainer.warmup_ratio:" not in note


def test_a_complete_record_without_the_column_s_metric_shows_n_a(tmp_path):
    path = write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)
    record = records.read_record(path)
    record["best"]["metrics"] = {"f1": 0.5}  # no accuracy
    records.write_json_atomic(path, record)
    table = table2(load_runs(tmp_path), Settings(seeds=1))
    assert csv_cells(table)[("LoRA 8", "RTE")]["state"] == "no value"
    assert "| LoRA | 8 | 1.31M | n/a |" in to_markdown(table)


def test_what_a_column_reads_from_a_record():
    record = {"main_metric": "accuracy", "best": {"metrics": {"accuracy": 0.5}}, "epochs": []}
    assert metric()(record, Settings()) == 50.0 and metric("f1")(record, Settings()) is None
    assert minutes_per_epoch(record, Settings()) is None  # no timed epoch: no value, not a crash
    assert minutes_per_epoch({"epochs": [{"seconds": 30.0}, {"seconds": 90.0}]}, Settings()) == 1.0
    # DoRA's and AdaLoRA's final count (kept components) wins over the count before training
    both = {"extras": {"final_trainable_params": 1_300}, "trainable_params": {"paper": 1_816}}
    assert trainable_params(both) == 1_300
    assert trainable_params({"trainable_params": {"paper": 1_816}}) == 1_816


def test_settings_and_unreadable_records_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^stat='mode' is not known: use stat=mean or stat=median$"):
        Settings(stat="mode")
    with pytest.raises(ConfigError, match=r"^epoch='first' is not known: use one of best, best_per_metric, last$"):
        Settings(epoch="first")
    with pytest.raises(ConfigError, match=r"^seeds=0 must be >= 1: the seeds each cell should have \(paper: 5\)$"):
        Settings(seeds=0)
    assert Settings(stat="median", epoch="last", seeds=3).describe() == (
        "median [min, max] over seeds of each run's last epoch; 3 seeds expected per cell; "
        "seeds without an eligible epoch (†) left out"
    )
    assert Settings().describe() == (
        "mean ± sample std (ddof=1) over seeds of each run's best dev epoch by its main metric (only epochs "
        "after the budget is final are eligible for DoRA and AdaLoRA); 5 seeds expected per cell; "
        "seeds without an eligible epoch (†) left out"
    )
    path = write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)
    record = records.read_record(path)
    records.write_json_atomic(path, {**record, "schema_version": 0})
    with pytest.raises(UserError, match=rf"^{path} has schema_version 0, these tables read 1: regenerate it"):
        load_runs(tmp_path)
    path.write_text("{not json")
    with pytest.raises(UserError, match=rf"^can't read {path} \(.*\): fix or remove it$"):
        load_runs(tmp_path)


def test_two_records_of_one_seed_in_a_cell_are_refused_not_pooled(tmp_path):
    # Seed 1 of LoRA on RTE twice (a copied folder, say): pooled, one value would silently
    # replace the other in the mean (70, 72 or 70, 80 -> 71 or 75), with n=2 of 2 seeds shown.
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)
    first = write_run(tmp_path, task="rte", method="lora", seed=1, best=0.72)
    copy = tmp_path / "runs" / "copied" / records.RECORD_NAME
    record = records.read_record(first)
    record["best"]["metrics"]["accuracy"] = 0.80
    records.write_json_atomic(copy, record)
    table = table2(load_runs(tmp_path), Settings(seeds=2))
    markdown, cells = to_markdown(table), csv_cells(table)
    lora = cells[("LoRA 8", "RTE")]
    assert lora["state"] == "refused" and lora["value"] == "" and lora["best"] == "False"
    assert "| LoRA | 8 | 1.31M | refused [1] |" in markdown
    assert "71.00" not in markdown and "75.00" not in markdown
    (note,) = [n for n in table.notes if "refused" in n]
    assert note == f"[1] LoRA 8 / RTE: refused, two records of the same seed: {copy}, " + ", ".join(
        str(p) for p in sorted((tmp_path / "runs" / "rte").rglob(records.RECORD_NAME))
    )


def test_avg_is_the_mean_of_the_eight_tasks(tmp_path):
    scores = {
        "rte": 0.80,
        "mrpc": 0.90,
        "stsb": 0.91,
        "cola": 0.64,
        "sst2": 0.95,
        "qnli": 0.93,
        "qqp": 0.91,
        "mnli": 0.88,
    }
    for task, value in scores.items():
        write_run(tmp_path, task=task, method="dora", seed=0, best=value, budget=2)
    table = table2(load_runs(tmp_path), Settings(seeds=1))
    # (80 + 90 + 91 + 64 + 95 + 93 + 91 + 88) / 8 = 692 / 8 = 86.5; the paper's DoRA b2 Avg is 86.38
    assert table.average_of(table.rows.index(next(r for r in table.rows if r.labels == ("DoRA", "2"))))[0] == 86.5
    assert "**86.50**" in to_markdown(table) and "86.38 (+0.12)" in to_markdown(table)


def test_budget_free_methods_read_budget_null_records(tmp_path):
    write_run(tmp_path, task="rte", method="full_ft", seed=0, best=0.79)
    cells = csv_cells(table2(load_runs(tmp_path), Settings(seeds=1)))
    full_ft = cells[("Full FT —", "RTE")]
    assert (float(full_ft["value"]), float(full_ft["paper"])) == (79.0, 78.63)


def test_ablation_tables_read_their_variants(tmp_path):
    write_run(tmp_path, task="cola", method="dora", seed=0, best=0.65, method_config={"dem_coef": 0.3})
    write_run(tmp_path, task="cola", method="dora", seed=0, best=0.61, variant="nodem", method_config={"dem_coef": 0})
    b0 = {"init_budget": None, "final_budget": 2}  # null: ceil(1.5 x 2) = 3
    write_run(tmp_path, task="mrpc", method="dora", seed=0, best=0.88, budget=2, method_config=b0)
    write_run(
        tmp_path,
        task="mrpc",
        method="dora",
        seed=0,
        best=0.77,
        budget=2,
        variant="b0_2",
        extras={"init_budget": 2},
        method_config={**b0, "init_budget": 2},
    )
    runs = load_runs(tmp_path)
    dem = csv_cells(table5(runs, Settings(seeds=1)))
    assert float(dem[("with DEM", "CoLA")]["value"]) == 65.0 and float(dem[("without DEM", "CoLA")]["value"]) == 61.0
    assert float(dem[("without DEM", "CoLA")]["paper"]) == 64.17
    init = table6(runs, Settings(seeds=1))
    cells = csv_cells(init)
    assert float(cells[("3", "MRPC")]["value"]) == 88.0 and float(cells[("2", "MRPC")]["value"]) == 77.0
    assert not init.notes


def test_efficiency_table_is_lower_better_and_not_scaled(tmp_path):
    for method, peak in (("lora", 4000.0), ("dora", 4100.0)):
        write_run(tmp_path, task="qnli", method=method, seed=0, best=0.9, variant="epoch1")
        path = (
            records.run_dir(
                tmp_path, task="qnli", backbone="roberta-base", method=method, variant="epoch1", budget=8, seed=0
            )
            / records.RECORD_NAME
        )
        record = records.read_record(path)
        record["peak_gpu_mib"] = peak
        records.write_json_atomic(path, record)
    table = table9(load_runs(tmp_path), Settings(seeds=1))
    cells = csv_cells(table)
    # seed 0's epochs took 30 s and 90 s: (30 + 90) / 2 / 60 = 1 minute per epoch
    assert float(cells[("LoRA", "min/epoch")]["value"]) == 1.0
    assert float(cells[("LoRA", "GPU MiB")]["value"]) == 4000.0 and cells[("LoRA", "GPU MiB")]["best"] == "True"
    assert cells[("DoRA", "GPU MiB")]["best"] == "False"


def test_main_writes_every_format_and_refuses_bad_arguments(results, capsys):
    assert main(["--results-dir", str(results), "--seeds", "3", "--no-figures"]) == 0
    names = {p.name for p in (results / "tables").iterdir()}
    for table in ("table2", "table3", "table4", "table5", "table6", "table9"):
        assert {f"{table}.md", f"{table}.tex", f"{table}.csv"} <= names
    assert {"all_cells.md", "all_cells.csv", "all_runs.csv"} <= names
    all_runs = list(csv.DictReader((results / "tables" / "all_runs.csv").open()))
    assert len(all_runs) == 10 and {line["status"] for line in all_runs} == {"complete"}
    with pytest.raises(SystemExit) as exit_:
        main(["--results-dir", str(results), "--stat", "mode"])
    assert exit_.value.code == 2 and "invalid choice: 'mode'" in capsys.readouterr().err
    assert main(["--results-dir", str(results / "nowhere")]) == 2
    assert "no runs at" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        Settings(epoch="first")


def test_budget_free_runs_made_at_different_budgets_still_pool(tmp_path):
    # Full FT's seed 0 came from a budget-2 sweep, seed 1 from a budget-8 one: the same run settings
    for seed, budget in ((0, 2), (1, 8)):
        path = write_run(tmp_path, task="rte", method="full_ft", seed=seed, best=0.78 + seed / 100)
        record = records.read_record(path)
        record["config"]["budget"] = budget
        records.write_json_atomic(path, record)
    cells = csv_cells(table2(load_runs(tmp_path), Settings(seeds=2)))
    assert cells[("Full FT —", "RTE")]["state"] == "ok" and float(cells[("Full FT —", "RTE")]["value"]) == 78.5


def test_params_column_counts_complete_records_only(tmp_path):
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)  # paper count 1,310,000
    for seed, status in ((1, "failed"), (2, "failed"), (3, "running")):
        # a run that stopped early may hold another count (e.g. DoRA's before pruning): it must not count
        path = write_run(tmp_path, task="rte", method="lora", seed=seed, best=0.70, status=status)
        record = records.read_record(path)
        record["trainable_params"] = {"paper": 5_000_000, "total": 5_001_538}
        records.write_json_atomic(path, record)
    table = table2(load_runs(tmp_path), Settings(seeds=1))
    lora = next(i for i, row in enumerate(table.rows) if row.labels == ("LoRA", "8"))
    assert table.params[lora][0] == 1_310_000  # with every record: the median of 1.31M, 5M, 5M, 5M is 5M
    assert "| LoRA | 8 | 1.31M |" in to_markdown(table)


def test_captions_say_which_learning_rate_each_method_ran_at(tmp_path):
    rates = {"dora": (1.2e-3, "task.lr"), "lora": (5e-4, "method.lr_by_task.rte"), "houlsby": (3e-4, "method.lr")}
    for method, (lr, source) in rates.items():
        write_run(tmp_path, task="rte", method=method, seed=0, best=0.7, lr=lr, extras={"lr": lr, "lr_source": source})
    write_run(
        tmp_path,
        task="cola",
        method="lora",
        seed=0,
        best=0.6,
        lr=4e-4,
        extras={"lr": 4e-4, "lr_source": "method.lr_by_task.cola"},
    )
    table = table2(load_runs(tmp_path), Settings(seeds=1))
    assert "DoRA task.lr (DoRA's, paper Table 8) 1.2e-3" in table.caption
    assert "LoRA method.lr_by_task (per task) 4e-4/5e-4" in table.caption  # CoLA and RTE
    assert "H-Adapter method.lr (one rate for every task) 3e-4" in table.caption
    assert "method.lr\\_by\\_task (per task)" in to_latex(table)
    cells = csv_cells(table)
    assert (cells[("LoRA 8", "RTE")]["lr"], cells[("LoRA 8", "RTE")]["lr_source"]) == (
        "0.0005",
        "method.lr_by_task.rte",
    )
    assert "Learning rates" not in table2(load_runs(tmp_path), Settings(seeds=1), backbone="tiny").caption  # no runs


def test_captions_name_only_the_rates_of_cells_the_table_shows(tmp_path):
    write_run(
        tmp_path, task="rte", method="lora", seed=0, best=0.7, lr=5e-4, extras={"lr": 5e-4, "lr_source": "method.lr"}
    )
    for seed, lr in ((0, 3e-4), (1, 7e-4)):  # two rates in one cell: refused, so no H-Adapter number is shown
        write_run(
            tmp_path,
            task="rte",
            method="houlsby",
            seed=seed,
            best=0.7,
            lr=lr,
            extras={"lr": lr, "lr_source": "method.lr"},
        )
    caption = table2(load_runs(tmp_path), Settings(seeds=1)).caption
    assert "LoRA method.lr (one rate for every task) 5e-4" in caption
    assert "H-Adapter" not in caption and "3e-4" not in caption


def test_bold_marks_the_best_within_each_budget_block(tmp_path):
    for method, budget, score in (("lora", 8, 0.80), ("dora", 8, 0.75), ("lora", 2, 0.70), ("dora", 2, 0.78)):
        write_run(tmp_path, task="rte", method=method, seed=0, best=score, budget=budget)
    write_run(tmp_path, task="rte", method="full_ft", seed=0, best=0.90)  # no budget: a reference row
    table = table2(load_runs(tmp_path), Settings(seeds=1))
    cells = csv_cells(table)
    # LoRA is best at budget 8 (80 > 75), DoRA at budget 2 (78 > 70); Full FT's 90 competes with neither
    assert [cells[(row, "RTE")]["best"] for row in ("LoRA 8", "DoRA 8", "LoRA 2", "DoRA 2", "Full FT —")] == [
        "True",
        "False",
        "False",
        "True",
        "False",
    ]
    markdown = to_markdown(table)
    assert "**80.00**" in markdown and "**78.00**" in markdown and "**90.00**" not in markdown
    assert "within each budget" in table.caption


def squad_record(root, seed, epochs):
    """A SQuAD v1.1 record whose epochs are (countable, exact_match, f1); best picked by F1, as the loop does."""
    path = write_run(root, task="squad_v1", method="lora", seed=seed, best=0.0)
    entries = [
        {"epoch": i + 1, "step": 10 * (i + 1), "countable": c, "metrics": {"exact_match": em, "f1": f1}}
        for i, (c, em, f1) in enumerate(epochs)
    ]
    best = max((e for e in entries if e["countable"]), key=lambda e: e["metrics"]["f1"])
    record = records.read_record(path)
    record.update(
        main_metric="f1",
        epochs=entries,
        best={"epoch": best["epoch"], "metrics": best["metrics"], "countable": True},
        last={"epoch": entries[-1]["epoch"], "metrics": entries[-1]["metrics"]},
    )
    records.write_json_atomic(path, record)


def test_best_per_metric_takes_each_metric_from_its_own_best_eligible_epoch(tmp_path):
    # epoch 1 is not eligible (EM 95 must never count); epoch 2 has the best F1, epoch 3 the best EM
    squad_record(tmp_path, 0, [(False, 0.95, 0.95), (True, 0.80, 0.90), (True, 0.82, 0.89)])
    runs = load_runs(tmp_path)
    best = table3(runs, Settings(seeds=1, epoch="best"))
    per_metric = table3(runs, Settings(seeds=1, epoch="best_per_metric"))
    assert float(csv_cells(best)[("LoRA 8", "v1.1 EM")]["value"]) == 80.0  # EM of the best-F1 epoch
    assert float(csv_cells(per_metric)[("LoRA 8", "v1.1 EM")]["value"]) == 82.0  # EM's own best eligible epoch
    assert float(csv_cells(per_metric)[("LoRA 8", "v1.1 F1")]["value"]) == 90.0
    assert "picked by f1" in best.caption and "each metric's own best" in per_metric.caption
    assert "best_per_metric" in csv_cells(per_metric)[("LoRA 8", "v1.1 EM")]["epoch"]
    assert main(["--results-dir", str(tmp_path), "--epoch", "best_per_metric", "--seeds", "1", "--no-figures"]) == 0


def test_the_paper_is_compared_only_on_its_own_backbone(tmp_path):
    # The paper's 80.65 on RTE (LoRA 8) is roberta-base's: a MiniLM run at 70 is not "-10.65" behind it.
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, backbone="minilm")
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70)
    theirs, ours = (table2(load_runs(tmp_path), Settings(seeds=1), backbone=b) for b in ("minilm", "roberta-base"))
    assert "| paper, roberta-base |  | 1.33M | 80.65 |" in to_markdown(theirs)
    assert "(-10.65)" not in to_markdown(theirs) and "for reference only (no Δ" in theirs.caption
    assert csv_cells(theirs)[("LoRA 8", "RTE")]["diff"] == "" and csv_cells(theirs)[("LoRA 8", "RTE")]["paper"]
    assert "| paper (Δ) |  | 1.33M | 80.65 (-10.65) |" in to_markdown(ours)
    assert csv_cells(ours)[("LoRA 8", "RTE")]["diff"] == "-10.65" and "Δ = ours − paper" in ours.caption


def test_rates_picked_by_a_sweep_are_said_to_be_picked(tmp_path):
    source = "lr_picks.lora (my sweep: seed 100 on STS-B)"
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, extras={"lr": 3e-3, "lr_source": source})
    caption = table2(load_runs(tmp_path), Settings(seeds=1)).caption
    assert "LoRA lr_picks 3e-3." in caption
    assert "picked on the dev set (my sweep: seed 100 on STS-B)" in caption and "not tuned here" not in caption
    write_run(tmp_path, task="rte", method="dora", seed=0, best=0.70, extras={"lr": 5e-4, "lr_source": "task.lr"})
    caption = table2(load_runs(tmp_path), Settings(seeds=1)).caption
    assert "DoRA task.lr (DoRA's, paper Table 8) 5e-4" in caption and "not tuned here" in caption


def test_records_of_one_other_backbone_fill_the_tables_without_being_asked(tmp_path):
    write_run(tmp_path, task="rte", method="lora", seed=0, best=0.70, backbone="minilm")
    main(["--results-dir", str(tmp_path), "--seeds", "1", "--no-figures"])
    table = (tmp_path / "tables" / "table2.md").read_text()
    assert "GLUE (minilm)" in table and "| LoRA | 8 | 1.31M | **70.00** |" in table
    write_run(tmp_path, task="rte", method="lora", seed=1, best=0.72)  # roberta-base too: the paper's wins
    main(["--results-dir", str(tmp_path), "--seeds", "1", "--no-figures"])
    assert "GLUE (roberta-base)" in (tmp_path / "tables" / "table2.md").read_text()


def test_bold_and_avg_follow_the_statistic_asked_for(tmp_path):
    """Mean and median disagree on RTE: LoRA 50/60/91 (mean 67, median 60), DoRA 64/65/66 (65, 65);
    every other task 80 for both."""
    rte = {"lora": (0.50, 0.60, 0.91), "dora": (0.64, 0.65, 0.66)}
    for method, scores in rte.items():
        for task in ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli"):
            for seed in range(3):
                write_run(tmp_path, task=task, method=method, seed=seed, best=scores[seed] if task == "rte" else 0.80)
    runs = load_runs(tmp_path)
    for stat, best_rte, averages in (("mean", "LoRA 8", (78.375, 78.125)), ("median", "DoRA 8", (77.5, 78.125))):
        table = table2(runs, Settings(stat=stat, seeds=3))
        cells = csv_cells(table)
        assert [row for row in ("LoRA 8", "DoRA 8") if cells[(row, "RTE")]["best"] == "True"] == [best_rte]
        rows = [next(i for i, r in enumerate(table.rows) if r.labels == (m, "8")) for m in ("LoRA", "DoRA")]
        # Avg: (RTE + 7 x 80) / 8 with RTE's mean (67, 65) or median (60, 65)
        assert [table.average_of(i)[0] for i in rows] == pytest.approx(averages)


def test_the_efficiency_table_compares_budget_free_rows_too(tmp_path):
    """Table 9 has no budget blocks: Full FT's smaller memory (no budget) is the bold one."""
    for method, peak in (("lora", 4000.0), ("full_ft", 3000.0)):
        path = write_run(tmp_path, task="qnli", method=method, seed=0, best=0.9, variant="epoch1")
        record = records.read_record(path)
        record["peak_gpu_mib"] = peak
        records.write_json_atomic(path, record)
    cells = csv_cells(table9(load_runs(tmp_path), Settings(seeds=1)))
    assert cells[("Full FT", "GPU MiB")]["best"] == "True" and cells[("LoRA", "GPU MiB")]["best"] == "False"
