"""The paired comparison against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from dora_bench import records
from dora_bench.report.cells import Settings, load_runs
from dora_bench.report.compare import Paired, compare, holm, holm_table, main, sign_test


def record(root, task, method, seed, accuracy, lr=1e-3, variant=None):
    budget = None if method in ("full_ft", "bitfit") else 8
    out = records.run_dir(root, task=task, backbone="minilm", method=method, variant=variant, budget=budget, seed=seed)
    config = {"task": {"name": task}, "method": {"name": method, "lr": lr}, "seed": seed, "budget": budget}
    best = {"epoch": 1, "metrics": {"accuracy": accuracy}, "countable": True}
    rec = records.new_record(
        task=task,
        method=method,
        variant=variant,
        budget=budget,
        seed=seed,
        backbone="minilm",
        config=config,
        status="complete",
        main_metric="accuracy",
        best=best,
        last=best,
    )
    records.write_json_atomic(out / records.RECORD_NAME, rec)


def test_interval_and_p_value_match_the_hand_computation():
    # d = (1, 2, 3): mean 2, sd 1, se 1/sqrt(3); t(0.975, 2) = 4.302653; t = 2 sqrt(3) = 3.4641 -> p = 0.07418
    row = Paired("rte", "dora", "lora", (1.0, 2.0, 3.0))
    low, high = row.interval()
    half = 4.302653 / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert row.p_value() == pytest.approx(0.07418, abs=1e-4)
    assert row.verdict() == "no detectable difference"  # the interval [-0.48, 4.48] holds 0
    assert Paired("rte", "dora", "lora", (1.0, 1.5, 2.0)).verdict() == "dora better"
    assert Paired("rte", "dora", "lora", (-1.0, -1.5, -2.0)).verdict() == "lora better"
    assert Paired("rte", "dora", "lora", (1.0,)).verdict() == "too few paired seeds"


def test_equal_differences_are_judged_by_the_sign_test_not_a_zero_width_interval():
    # SST-2 accuracy moves in steps of 1/872: two seeds at -13/872 each gave a t-interval [-1.49, -1.49]
    two = Paired("sst2", "dora", "pfeiffer", (0.7993 * 100 - 0.8142 * 100, 0.8005 * 100 - 0.8154 * 100))  # float-equal
    assert two.interval() is None and two.p_value() == 0.5
    assert two.verdict().startswith("no detectable difference")
    six = Paired("sst2", "dora", "pfeiffer", (1.0,) * 6)  # sign test: 2 * 0.5^6 = 0.031
    assert six.p_value() == pytest.approx(0.03125) and six.verdict().startswith("dora better")
    assert Paired("sst2", "dora", "lora", (0.0, 0.0, 0.0)).verdict().startswith("no detectable difference")


def test_seeds_are_paired_within_a_task_and_tasks_pooled_by_their_own_spread(tmp_path):
    # rte: dora 70, 72, 75 / lora 69, 70, 71 -> d = 1, 2, 4; cola: seed 2 missing for lora -> d = 3, -1
    for seed, (dora, lora) in enumerate([(0.70, 0.69), (0.72, 0.70), (0.75, 0.71)]):
        record(tmp_path, "rte", "dora", seed, dora)
        record(tmp_path, "rte", "lora", seed, lora)
    for seed, (dora, lora) in enumerate([(0.50, 0.47), (0.40, 0.41)]):
        record(tmp_path, "cola", "dora", seed, dora)
        record(tmp_path, "cola", "lora", seed, lora)
    record(tmp_path, "cola", "dora", 2, 0.99)  # no partner: left out of every pair
    rows = compare(load_runs(tmp_path), ["rte", "cola"], "minilm", "dora", "lora", 8, 8, Settings(seeds=1))
    rte, cola, pooled = rows
    assert rte.diffs == pytest.approx((1.0, 2.0, 4.0)) and cola.diffs == pytest.approx((3.0, -1.0))
    # mean of the task means: (7/3 + 1) / 2; variances of the task means: (7/3) / 3 and 8 / 2
    v_rte, v_cola = 7 / 9, 4.0
    se = math.sqrt(v_rte + v_cola) / 2
    df = (v_rte + v_cola) ** 2 / (v_rte**2 / 2 + v_cola**2 / 1)  # Welch-Satterthwaite: 1.40
    t975 = 6.65535  # scipy.stats.t.ppf(0.975, 1.4002): between t(1) = 12.71 and t(2) = 4.30
    assert pooled.task == "all tasks" and pooled.n == 5 and pooled.mean == pytest.approx(5 / 3)
    assert pooled.interval() == pytest.approx((5 / 3 - t975 * se, 5 / 3 + t975 * se), abs=2e-3)
    assert df == pytest.approx(1.4002, abs=1e-4)
    assert pooled.verdict() == "no detectable difference"


def test_the_pooled_row_leaves_out_single_pairs_and_falls_back_to_the_sign_test(tmp_path):
    # stsb: d = 1, 1, 1 and sst2: d = 2, 2, 2 (no spread anywhere); rte has one pair only
    for seed in range(3):
        for task, gap in (("stsb", 0.01), ("sst2", 0.02)):
            record(tmp_path, task, "dora", seed, 0.5 + gap)
            record(tmp_path, task, "lora", seed, 0.5)
    record(tmp_path, "rte", "dora", 0, 0.9)
    record(tmp_path, "rte", "lora", 0, 0.1)
    *_, pooled = compare(
        load_runs(tmp_path), ["stsb", "sst2", "rte"], "minilm", "dora", "lora", 8, 8, Settings(seeds=1)
    )
    assert [p.task for p in pooled.parts] == ["stsb", "sst2"] and "rte left out" in pooled.note
    assert pooled.mean == pytest.approx(1.5) and pooled.interval() is None
    assert pooled.p_value() == pytest.approx(2 * 0.5**6)  # six pairs, every sign positive
    assert pooled.verdict().startswith("dora better")


def test_the_sign_test_counts_signs_not_sizes():
    assert sign_test((1.0, 2.0, -0.5, 3.0)) == pytest.approx(0.625)  # 3 of 4 positive: binomial, two-sided
    assert sign_test((0.0, 0.0)) == 1.0


def test_holm_multiplies_the_kth_smallest_p_by_m_minus_k_plus_1_and_stays_monotone():
    # sorted: 0.01 x 4 = 0.04, 0.03 x 3 = 0.09, 0.04 x 2 = 0.08 -> 0.09 (monotone), 0.5 x 1 = 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    table = holm_table([Paired("rte", "dora", "lora", (1.0, 2.0, 3.0)), Paired("rte", "dora", "bitfit", (1.0,))])
    assert table == []  # one row with a p-value: nothing to correct


def test_cli_writes_the_table(tmp_path, capsys):
    for seed in range(3):
        record(tmp_path, "rte", "dora", seed, 0.70 + 0.01 * seed)
        record(tmp_path, "rte", "bitfit", seed, 0.60)
    out = tmp_path / "compare.md"
    assert (
        main(
            [
                "--results-dir",
                str(tmp_path),
                "--backbone",
                "minilm",
                "--tasks",
                "rte",
                "--b",
                "bitfit",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "| dora − bitfit | rte | 3 | +11.00 |" in text and "dora better" in text
    assert "| dora − bitfit | all tasks | 3 | +11.00 |" in text  # one task: the pooled row is that task
    assert "Holm" not in text  # one baseline, one test
    for seed in range(3):
        record(tmp_path, "rte", "lora", seed, 0.70 + 0.02 * seed)
    assert main(["--results-dir", str(tmp_path), "--backbone", "minilm", "--tasks", "rte", "--b", "bitfit,lora"]) == 0
    printed = capsys.readouterr().out
    assert (
        "2 comparisons, so 2 tests: Holm's correction" in printed and "| dora − lora | all tasks | -1.00 |" in printed
    )
    assert main(["--results-dir", str(tmp_path / "none"), "--backbone", "minilm"]) == 2


def test_the_command_line_compares_a_control_arm_by_its_path_name_and_refuses_a_cell_with_no_records(tmp_path, capsys):
    # mrpc: dora 80, 81, 82 against its random arm 79, 81, 80 -> d = 1, 0, 2
    for seed, (dora, random) in enumerate([(0.80, 0.79), (0.81, 0.81), (0.82, 0.80)]):
        record(tmp_path, "mrpc", "dora", seed, dora)
        record(tmp_path, "mrpc", "dora", seed, random, variant="random")
    args = ["--results-dir", str(tmp_path), "--backbone", "minilm", "--tasks", "mrpc"]
    assert main([*args, "--b", "dora-random"]) == 0
    assert "| dora − dora-random | mrpc | 3 | +1.00 |" in capsys.readouterr().out
    assert main([*args, "--b", "dora-inverse"]) == 2  # was: a silent row of "too few paired seeds"
    error = capsys.readouterr().err
    assert "no minilm records of 'dora-inverse'" in error and "its cells are dora, dora-random" in error
