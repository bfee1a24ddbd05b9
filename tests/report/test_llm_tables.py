"""The decoder-LLM tables and plot from hand-made records: per-set accuracy, efficiency, the deck's rows."""

from __future__ import annotations

import csv

import pytest

from dora_bench import records
from dora_bench.report.cells import PAPER_DIR, Settings, load_runs
from dora_bench.report.figures import write_llm_figures
from dora_bench.report.llm import DECK, adapters_math_rows, deck_rows, llm_tables, render
from dora_bench.report.render import to_markdown

SETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa")


def write_run(
    root, *, method, seed, scores, backbone="llama-3.2-1b", family="commonsense", task="commonsense", epochs=None,
    task_config=None,
):  # fmt: skip
    """A complete record as the loop writes it; ``scores``: metric -> fraction (or ``epochs``: one dict per epoch,
    the best picked by the main metric as the loop does)."""
    budget = None if method == "full_ft" else 8
    config = {
        "task": {"name": task, "family": family, **(task_config or {})},
        "method": {"name": method},
        "backbone": {"name": backbone, "name_or_path": f"org/{backbone}"},
        "budget": budget,
        "seed": seed,
        "results_dir": str(root),
    }
    record = records.new_record(
        task=task,
        method=method,
        variant=None,
        budget=budget,
        seed=seed,
        backbone=backbone,
        config=config,
        main_metric="avg" if family == "commonsense" else "exact_match",
        status="complete",
        trainable_params={"paper": 5_636_096, "total": 5_636_096, "model": 1_235_814_400},
    )
    epochs = [
        {"epoch": k + 1, "step": 100 * (k + 1), "seconds": 120.0 * (seed + 1), "countable": True, "metrics": m}
        for k, m in enumerate(epochs or [scores])
    ]
    best = max(epochs, key=lambda e: e["metrics"][record["main_metric"]])
    record.update(
        epochs=epochs,
        best=best,
        last=epochs[-1],
        extras={
            "efficiency": {
                "train_minutes": 2.0 * (seed + 1),
                "seconds_per_step": 1.2,
                "peak_gpu_mib": 9000.0 + 1000 * seed,
                "peak_rss_mib": 3000.0,
                "adapter_mib": 21.5,
            }
        },
    )
    path = records.run_dir(root, task=task, backbone=backbone, method=method, variant=None, budget=budget, seed=seed)
    records.write_json_atomic(path / records.RECORD_NAME, record)


def commonsense_scores(base: float) -> dict[str, float]:
    scores = {name: base + 0.01 * i for i, name in enumerate(SETS)}
    return {**scores, "avg": sum(scores.values()) / len(SETS), "unparsed": 0.0}


def test_commonsense_table_pools_seeds_per_set_and_reports_efficiency(tmp_path):
    for seed in range(3):
        write_run(tmp_path, method="dora", seed=seed, scores=commonsense_scores(0.5 + 0.1 * seed))
    write_run(tmp_path, method="lora", seed=0, scores=commonsense_scores(0.4))
    accuracy, efficiency = llm_tables(load_runs(tmp_path), Settings())
    assert accuracy.name == "llm_commonsense_llama-3.2-1b" and efficiency.name.endswith("_efficiency")
    dora = next(i for i, row in enumerate(accuracy.rows) if row.method == "dora")
    boolq, avg = accuracy.cells[dora][0], accuracy.cells[dora][-1]
    assert boolq.center("mean") == pytest.approx(60.0) and boolq.full  # (50 + 60 + 70) / 3, 3 seeds expected
    assert avg.center("mean") == pytest.approx(63.5)  # each seed's avg is its base + 3.5 points
    lora = next(i for i, row in enumerate(accuracy.rows) if row.method == "lora")
    assert accuracy.cells[lora][0].remarks() == ["n=1/3"]
    minutes, _, gpu, adapter = efficiency.cells[dora]
    assert (minutes.center("mean"), gpu.center("mean"), adapter.center("mean")) == (4.0, 10_000.0, 21.5)
    assert [row.method for row in accuracy.rows][-1] == "dora" and "bitfit" not in [r.method for r in accuracy.rows]
    text = to_markdown(accuracy)
    assert "| dora | 8 | 5.64M | **60.00** ± 10.00 |" in text and "No reference numbers for this model" in text


def test_the_decks_rows_sit_under_lora_and_dora_wd_for_a_matching_model(tmp_path):
    for method in ("lora", "dora_wd", "dora"):
        write_run(tmp_path, method=method, seed=0, scores=commonsense_scores(0.8), backbone="meta-llama-3-8b")
    accuracy, _ = llm_tables(load_runs(tmp_path), Settings())
    by_method = {row.method: row for row in accuracy.rows}
    assert by_method["lora"].paper["Avg"] == "80.8" and by_method["dora_wd"].paper["Avg"] == "85.2"
    assert by_method["dora"].paper is None  # the dynamic-rank DoRA has no LLM numbers anywhere
    text = to_markdown(accuracy)
    assert "| deck (Δ) |" in text and "not budget-matched" in text
    assert "| deck (Δ) |  | 0.71% (r=32) | 74.60 (+5.40) |" in text  # BoolQ: ours 80.0 vs the deck's 74.6


def test_the_decks_numbers_average_to_their_avg_column():
    with (PAPER_DIR / DECK).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    for row in rows:
        values = [float(row[k]) for k in ("BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA")]
        assert sum(values) / 8 == pytest.approx(float(row["Avg"]), abs=0.05), row
    assert deck_rows("llama-3.2-1b") == {} and set(deck_rows("llama-2-7b-hf")) == {"lora", "dora_wd"}


def test_gsm8k_gets_its_own_table_and_the_plot_its_points(tmp_path):
    for seed in range(2):
        for method, em in (("dora", 0.3), ("full_ft", 0.35)):
            write_run(tmp_path, method=method, seed=seed, scores={"exact_match": em}, family="gsm8k", task="gsm8k")
    write_run(tmp_path, method="dora", seed=0, scores=commonsense_scores(0.5))  # another task: another table
    names = [t.name for t in llm_tables(load_runs(tmp_path), Settings())]
    assert names == [
        "llm_commonsense_llama-3.2-1b",
        "llm_commonsense_llama-3.2-1b_efficiency",
        "llm_gsm8k_llama-3.2-1b",
        "llm_gsm8k_llama-3.2-1b_efficiency",
    ]
    gsm8k = llm_tables(load_runs(tmp_path), Settings())[2]
    assert [c.label for c in gsm8k.columns] == ["GSM8K EM"] and not any(row.paper for row in gsm8k.rows)
    written = write_llm_figures(load_runs(tmp_path), tmp_path / "figures")
    assert sorted(p.name for p in written) == [
        "commonsense_llama-3.2-1b_accuracy_vs_memory.png",
        "gsm8k_llama-3.2-1b_accuracy_vs_memory.png",
    ]


def gsm8k_epochs(dev_test):
    return [{"exact_match": d, "no_number": 0.0, "test_exact_match": t, "test_no_number": 0.0} for d, t in dev_test]


def test_gsm8k_reports_test_at_the_epoch_selected_on_dev_and_says_so(tmp_path):
    # epoch 1: dev 50, test 40; epoch 2: dev 30, test 60: the run selects epoch 1 on dev, so test 40
    for seed in range(3):
        epochs = gsm8k_epochs([(0.5, 0.4), (0.3, 0.6)])
        write_run(tmp_path, method="lora", seed=seed, family="gsm8k", task="gsm8k", scores=None, epochs=epochs,
                  task_config={"dev_size": 500, "dev_seed": 0})  # fmt: skip
    runs = load_runs(tmp_path)
    lora = lambda table: table.cells[next(i for i, r in enumerate(table.rows) if r.method == "lora")][0]  # noqa: E731
    assert lora(llm_tables(runs, Settings())[0]).center("mean") == pytest.approx(40.0)
    # each metric's own best would be test's 60: test is never selected on, the dev-selected epoch stays
    assert lora(llm_tables(runs, Settings(epoch="best_per_metric"))[0]).center("mean") == pytest.approx(40.0)
    assert lora(llm_tables(runs, Settings(epoch="last"))[0]).center("mean") == pytest.approx(60.0)
    caption = llm_tables(runs, Settings())[0].caption
    assert "GSM8K test exact match x100 of the final number (greedy decoding, our answer extraction)" in caption
    assert "at the epoch with the best dev exact match" in caption
    assert "selected on a dev slice of 500 training problems held out with seed 0, never on test" in caption


def test_llm_adapters_gsm8k_rows_sit_beside_ours_and_their_other_adapters_print_alone(tmp_path):
    for method in ("lora", "dora"):
        write_run(tmp_path, method=method, seed=0, family="gsm8k", task="gsm8k-llm-adapters", backbone="llama-7b-hf",
                  scores=None, epochs=gsm8k_epochs([(0.5, 0.4)]),
                  task_config={"dev_size": 120, "dev_seed": 0, "protocol": "llm_adapters", "num_beams": 4})  # fmt: skip
    accuracy = llm_tables(load_runs(tmp_path), Settings())[0]
    by_method = {row.method: row for row in accuracy.rows}
    assert by_method["lora"].paper["GSM8K"] == "37.5" and by_method["houlsby"].paper["GSM8K"] == "33.3"
    assert by_method["parallel"].paper["GSM8K"] == "35.3" and by_method["prefix"].paper["GSM8K"] == "24.4"
    assert by_method["dora"].paper is None and set(adapters_math_rows("llama-13b")) == set(by_method) & {
        "lora", "houlsby", "parallel", "prefix"}  # fmt: skip
    assert adapters_math_rows("llama-3.2-1b") == {}
    text = render(accuracy, "md")
    assert "| lora | 8 | 5.64M | 40.00 (n=1/3) |" in text and "| LLM-Adapters (Δ) |  |  | 37.50 (+2.50) |" in text
    assert "| Parallel adapter (LLM-Adapters) | — | — | — |\n| LLM-Adapters (Δ) |  |  | 35.30 |" in text
    assert text.count("LLM-Adapters (Δ)") == 4  # lora, houlsby, parallel, prefix: no empty row under the others
    assert "beam search with 4 beams, LLM-Adapters' answer extraction" in accuracy.caption
    assert "our runs use their protocol" in accuracy.caption


def test_a_reference_row_prints_only_under_a_method_that_has_one(tmp_path):
    for method in ("lora", "dora_wd", "dora", "adalora"):
        write_run(tmp_path, method=method, seed=0, scores=commonsense_scores(0.8), backbone="meta-llama-3-8b")
    accuracy, _ = llm_tables(load_runs(tmp_path), Settings())
    assert len(accuracy.rows) == 8  # full_ft, prompt tuning, houlsby, pfeiffer, lora, dora_wd, adalora, dora
    text = render(accuracy, "md")
    assert text == to_markdown(accuracy) and text.count("| deck (Δ) |") == 2
    lines = text.splitlines()
    below = {line.split(" | ")[0].strip("| "): lines[i + 1].split(" | ")[0].strip("| ") for i, line in
             enumerate(lines[:-1]) if line.startswith("| ")}  # fmt: skip
    assert below["lora"] == "deck (Δ)" and below["dora_wd"] == "deck (Δ)" and below["adalora"] == "dora"
    tex = render(accuracy, "tex")
    assert tex.count("deck ($\\Delta$)") == 2 and tex.count("\\addlinespace") == 2  # after each pair
