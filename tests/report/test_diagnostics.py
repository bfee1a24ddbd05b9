"""Allocation diagnostics by value: a planted allocation agrees with itself, the random control arm
agrees with nothing and spreads as the null says, and the 200-step MiniLM records give the numbers
issue 19 measured by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dora_bench.methods.dora import components_to_prune, random_arm_seed, scheduled_pruned, training_phases
from dora_bench.methods.shared.allocation import allocation_grid
from dora_bench.report.cells import RunRecord, load_runs
from dora_bench.report.diagnostics import (
    diagnose,
    diagnose_all,
    mean_pairwise_correlation,
    random_allocations,
    spread_null,
    to_csv,
    to_markdown,
)
from support import REPO

TYPES = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense")  # fmt: skip
MODULES = [f"bert.encoder.layer.{i}.{t}" for i in range(12) for t in TYPES]  # 72 modules


def run_of(seed: int, ranks: list[int], b0: int = 12, method: str = "dora", variant: str | None = None) -> RunRecord:
    record = {
        "task": "sst2", "backbone": "minilm", "method": method, "variant": variant, "budget": 8, "seed": seed,
        "status": "complete",
        "extras": {"rank_allocation_grid": allocation_grid(dict(zip(MODULES, ranks))), "init_budget": b0,
                   "final_trainable_params": 1000 + seed},
    }  # fmt: skip
    return RunRecord(Path(f"/nowhere/seed{seed}/record.json"), record)


def test_a_planted_allocation_agrees_perfectly_and_spreads_as_planted():
    planted = [4 + (i % 6) + (i // 36) * 2 for i in range(72)]  # a fixed pattern by type and depth
    runs = [run_of(seed, planted) for seed in range(4)]
    d = diagnose(runs[0].key, runs)
    assert d.agreement == pytest.approx(1.0) and d.type_agreement == pytest.approx(1.0)
    assert d.spreads == pytest.approx([np.std(planted)] * 4)
    assert d.type_means["Wq"].mean == pytest.approx(np.mean([planted[i] for i in range(0, 72, 6)]))
    assert d.type_means["Wq"].low == pytest.approx(d.type_means["Wq"].mean)  # no spread over seeds
    assert d.kept_params == (1000, 1001, 1002, 1003)
    # layers 0-5 hold types at 4..9 (mean 6.5), layers 6-11 the same plus 2
    assert d.layer_agreement == pytest.approx(1.0)
    assert [d.layer_means[str(i)].mean for i in (0, 5, 6, 11)] == pytest.approx([6.5, 6.5, 8.5, 8.5])
    assert d.layer_agreement > d.layer_agreement_null.high and d.type_agreement > d.type_agreement_null.high


def test_pearson_agreement_by_hand():
    vectors = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [3.0, 2.0, 1.0]])
    # r(0,1) = 0.98198, r(0,2) = -1, r(1,2) = -0.98198: mean -1/3
    assert mean_pairwise_correlation(vectors) == pytest.approx(-1 / 3)
    assert mean_pairwise_correlation(vectors[:1]) is None
    assert mean_pairwise_correlation(np.array([[8.0, 8.0], [7.0, 9.0]])) is None  # constant: no correlation


def random_arm_ranks(seed: int, modules: int = 72, b0: int = 12, bT: int = 8, total: int = 1000) -> list[int]:
    """The ``random`` arm's own pruning rule, run through DoRA's schedule (T = 1000, interval 10)."""
    phases = training_phases(total, 0.15, 0.5)
    live = torch.ones(modules * b0, dtype=torch.bool)
    for step in range(phases.warmup_end + 1, phases.prune_end + 1):
        if (step - phases.warmup_end) % 10 and step != phases.prune_end:
            continue
        n = scheduled_pruned(step, phases, modules, b0, bT, "reference")
        draws = torch.Generator().manual_seed(random_arm_seed(seed, step))
        pruned = components_to_prune(torch.zeros(modules * b0), live, n, "random", draws)
        live = torch.ones_like(live)
        live[pruned] = False
    return live.view(modules, b0).sum(1).tolist()


def test_the_random_arm_agrees_with_nothing_and_spreads_inside_the_null_band():
    runs = [run_of(seed, random_arm_ranks(seed), variant="random") for seed in range(5)]
    d = diagnose(runs[0].key, runs)
    assert abs(d.agreement) < 0.1  # 0.06 for seeds 0-4; five random runs' 95th percentile is 0.057
    assert d.agreement_null.low < 0 < d.agreement_null.high
    assert all(d.spread_null.low <= s <= d.spread_null.high for s in d.spreads)
    assert d.spread_null.low < d.spread_null.median < d.spread_null.high
    for value, null in ((d.type_agreement, d.type_agreement_null), (d.layer_agreement, d.layer_agreement_null)):
        assert null.low < value < null.high  # chance, by its own null


def test_the_null_keeps_the_count_and_is_seeded():
    sims = random_allocations(36, 12, 288, draws=50, seed=3)
    assert sims.shape == (50, 36) and (sims.sum(axis=1) == 288).all() and sims.max() <= 12
    assert np.array_equal(sims, random_allocations(36, 12, 288, draws=50, seed=3))
    assert not np.array_equal(sims, random_allocations(36, 12, 288, draws=50, seed=4))
    assert spread_null(36, 12, 432).high == 0  # nothing pruned: every module keeps b0
    with pytest.raises(ValueError, match="can't keep 500"):
        random_allocations(36, 12, 500, draws=1, seed=0)


def test_the_tables_hold_every_cell():
    runs = [run_of(s, random_arm_ranks(s), variant="random") for s in range(3)]
    runs += [run_of(s, [8] * 72, b0=8, variant="no_pruning") for s in range(2)]
    found = diagnose_all(runs)
    assert [d.label for d in found] == ["dora-random b8", "dora-no_pruning b8"]
    flat = found[1]
    assert flat.agreement is None and flat.agreement_null is None and flat.spreads == (0.0, 0.0)
    md, csv = to_markdown(found), to_csv(found)
    assert "| sst2 | dora-no_pruning b8 | 2 | — |" in md
    assert csv.splitlines()[2].startswith("sst2,minilm,dora,no_pruning,8,2,,,,,,,,0.0,")


MINILM = REPO / "results" / "minilm"


@pytest.mark.skipif(not (MINILM / "runs").is_dir(), reason="the committed MiniLM study is absent")
def test_the_200_step_records_give_issue_19_s_numbers():
    runs = [r for r in load_runs(MINILM) if r.key[0] in ("stsb", "sst2") and r.key[3] is None and r.key[4] == 8]
    found = {(d.key[0], d.key[2]): d for d in diagnose_all(runs)}
    measured = {("stsb", "dora"): 0.27, ("sst2", "dora"): 0.04, ("stsb", "adalora"): 0.64, ("sst2", "adalora"): 0.67}
    for key, agreement in measured.items():
        assert found[key].agreement == pytest.approx(agreement, abs=0.005)
    assert found[("stsb", "dora")].spread == pytest.approx(1.65, abs=0.005)
    assert found[("sst2", "dora")].spread == pytest.approx(1.56, abs=0.005)
    assert found[("sst2", "dora")].spread_null.median == pytest.approx(1.60, abs=0.02)
    # the per-layer means' agreement, recomputed by hand from the records' grids (numpy, outside this module)
    by_layer = {("stsb", "dora"): 0.34, ("sst2", "dora"): 0.14, ("stsb", "adalora"): 0.76, ("sst2", "adalora"): 0.59}
    for key, agreement in by_layer.items():
        assert found[key].layer_agreement == pytest.approx(agreement, abs=0.005)


def test_the_report_page_shows_each_cell_s_diagnostics():
    from dora_bench.report.page import allocation_diagnostics_section

    planted = [4 + (i % 6) + (i // 36) * 2 for i in range(72)]
    runs = [run_of(s, planted) for s in range(3)] + [run_of(s, random_arm_ranks(s), variant="random") for s in range(3)]
    html = allocation_diagnostics_section(runs, "sst2", "minilm")
    rows = [row for row in html.split("<tr")[2:]]
    assert len(rows) == 2 and "<td>1.00</td>" in rows[0] and 'data-method="dora"' in rows[0]
    assert html.count("<circle") == 6  # one dot per seed
    assert allocation_diagnostics_section([], "sst2", "minilm") == ""


def test_type_means_carry_a_student_t_interval_over_seeds():
    from dora_bench.report.diagnostics import t_interval

    # mean 2, sample std 1, n = 3: half-width t(0.975, df 2) / sqrt(3) = 4.30265 / 1.73205 = 2.48414
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))
    assert (low, high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert t_interval(np.array([5.0])) == (None, None)


def test_one_seed_has_a_spread_but_no_agreement_and_grids_that_differ_are_refused():
    planted = [4 + (i % 6) + (i // 36) * 2 for i in range(72)]
    one = diagnose(run_of(0, planted).key, [run_of(0, planted)])
    assert one.seeds == (0,) and one.agreement is None and one.type_agreement is None
    assert one.agreement_null is None and one.spreads == pytest.approx((np.std(planted),))
    assert one.columns == ("Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2") and one.std_grid is None
    other = run_of(1, planted)
    other.record["extras"]["rank_allocation_grid"]["rows"] = list(
        reversed(other.record["extras"]["rank_allocation_grid"]["rows"])
    )
    with pytest.raises(ValueError, match="different layers or module types"):
        diagnose(other.key, [run_of(0, planted), other])


def test_the_std_grid_is_over_seeds_and_the_figure_draws_a_one_seed_cell_without_one(tmp_path):
    from dora_bench.report.diagnostics_figure import write_diagnostics_figures

    planted = [4 + (i % 6) + (i // 36) * 2 for i in range(72)]
    shifted = [r + 2 if i == 5 else r for i, r in enumerate(planted)]  # one module 2 ranks apart
    two = diagnose(run_of(0, planted).key, [run_of(0, planted), run_of(1, shifted)])
    assert two.std_grid[0, 5] == pytest.approx(np.std([planted[5], shifted[5]], ddof=1))
    assert np.count_nonzero(two.std_grid) == 1
    one = diagnose(run_of(0, planted, variant="random").key, [run_of(0, planted, variant="random")])
    (path,) = write_diagnostics_figures([two, one], tmp_path)
    assert path.name == "allocation_diagnostics_sst2_minilm_b8.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_row_holds_each_number_of_its_cell():
    from dora_bench.report.diagnostics import table_rows

    runs = [run_of(s, random_arm_ranks(s), variant="random") for s in range(3)]
    d = diagnose(runs[0].key, runs)
    (row,) = table_rows([d])
    assert row == {
        "task": "sst2", "backbone": "minilm", "method": "dora", "variant": "random", "budget": 8, "seeds": 3,
        "agreement": round(d.agreement, 6),
        "agreement_null_median": round(d.agreement_null.median, 6),
        "agreement_null_95": round(d.agreement_null.high, 6),
        "type_agreement": round(d.type_agreement, 6),
        "type_agreement_null_95": round(d.type_agreement_null.high, 6),
        "layer_agreement": round(d.layer_agreement, 6),
        "layer_agreement_null_95": round(d.layer_agreement_null.high, 6),
        "spread": round(float(np.mean(d.spreads)), 6),
        "spread_min": round(min(d.spreads), 6),
        "spread_max": round(max(d.spreads), 6),
        "spread_null_5": round(d.spread_null.low, 6),
        "spread_null_median": round(d.spread_null.median, 6),
        "spread_null_95": round(d.spread_null.high, 6),
        "seeds_above_null_95": sum(s > d.spread_null.high for s in d.spreads),
        "kept_params_mean": 1001, "kept_params_min": 1000, "kept_params_max": 1002,
    }  # fmt: skip
    assert row["agreement_null_median"] is not None and row["type_agreement"] is not None
    assert len(set(d.spreads)) == 3  # min, mean and max differ
    # seeds_above_null_95 counts by value: a planted spread far above random pruning's
    wide = [0, 12] * 36  # half the modules pruned away, half kept whole: spread 6
    cell = diagnose(run_of(0, wide).key, [run_of(s, wide) for s in range(2)])
    assert table_rows([cell])[0]["seeds_above_null_95"] == 2 and cell.spread == pytest.approx(6.0)


def test_the_type_and_layer_nulls_narrow_with_seeds_and_are_seeded():
    from dora_bench.report.diagnostics import group_agreement_nulls

    types3, layers3 = group_agreement_nulls(6, 6, 12, 288, 3)
    types5, layers5 = group_agreement_nulls(6, 6, 12, 288, 5)
    # six numbers a seed: three random runs reach r = 0.48 one time in twenty, five runs 0.26-0.29
    assert layers3.high > layers5.high > 0.1 and types3.high > types5.high > 0.1
    assert layers3.low < 0 < layers3.high and layers3.draws == 1000
    # roberta-base's 12 layers x 6 types: twelve layer means a seed correlate less by chance than six type means
    types12, layers12 = group_agreement_nulls(12, 6, 12, 576, 5)
    assert layers12.high < types12.high - 0.05
    group_agreement_nulls.cache_clear()
    assert group_agreement_nulls(6, 6, 12, 288, 3) == (types3, layers3)
    assert group_agreement_nulls(6, 6, 12, 288, 1) == (None, None)


def test_the_markdown_has_a_per_layer_table():
    planted = [4 + (i % 6) + (i // 36) * 2 for i in range(72)]
    md = to_markdown(diagnose_all([run_of(s, planted) for s in range(3)]))
    assert "| task | cell | layer 0 | layer 1 |" in md
    assert "| sst2 | dora b8 | 6.50 [6.50, 6.50] |" in md  # layer 0, the same in every seed
    assert "| 1.00 [" in md  # the layers' agreement with its null's 95th percentile


def test_a_null_band_is_the_5_50_95_percent_quantiles_of_its_draws():
    from dora_bench.report.diagnostics import band

    # spread_null and agreement_null are cached: a direct call, whatever was drawn before
    found = band(np.arange(101.0), draws=101, seed=7)
    assert (found.low, found.median, found.high, found.draws, found.seed) == (5.0, 50.0, 95.0, 101, 7)
    assert found.text() == "50.00 [5.00, 95.00]"
