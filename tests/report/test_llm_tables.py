"""The decoder-LLM tables and plot from hand-made records: per-set accuracy, efficiency, the deck's rows."""

from __future__ import annotations

import csv

import pytest

from dora_bench import records
from dora_bench.report.cells import PAPER_DIR, Settings, load_runs
from dora_bench.report.figures import write_llm_figures
from dora_bench.report.llm import DECK, deck_rows, llm_tables
from dora_bench.report.render import to_markdown

SETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa")


def write_run(root, *, method, seed, scores, backbone="llama-3.2-1b", family="commonsense", task="commonsense"):
    """A complete record as the loop writes it; ``scores``: metric -> fraction."""
    budget = None if method == "full_ft" else 8
    config = {
        "task": {"name": task, "family": family},
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
    epoch = {"epoch": 1, "step": 100, "seconds": 120.0 * (seed + 1), "countable": True, "metrics": scores}
    record.update(
        epochs=[epoch],
        best={"epoch": 1, "metrics": scores, "countable": True},
        last={"epoch": 1, "metrics": scores},
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
