"""A study's analysis by value: the results table's cells, the rate picks' table and the paired
comparisons section, against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

from dora_bench import records
from dora_bench.report.cells import RunRecord, Settings, load_runs
from dora_bench.report.study import AnalysisPlan, cell_text, comparison_sections, pick_rates


def write_record(root: Path, task: str, method: str, seed: int, accuracy: float, lr: float = 1e-3) -> None:
    budget = None if method in ("full_ft", "bitfit") else 8
    out = records.run_dir(root, task=task, backbone="minilm", method=method, variant=None, budget=budget, seed=seed)
    config = {"task": {"name": task}, "method": {"name": method, "lr": lr}, "seed": seed, "budget": budget}
    best = {"epoch": 1, "metrics": {"accuracy": accuracy}, "countable": True}
    cell = {"task": task, "method": method, "variant": None, "budget": budget, "seed": seed, "backbone": "minilm"}
    rec = records.new_record(**cell, config=config, status="complete", main_metric="accuracy", best=best, last=best)
    records.write_json_atomic(out / records.RECORD_NAME, rec)


def runs_of(root: Path, scores: dict[str, list[float]], task: str = "rte", lr: float = 1e-3) -> list[RunRecord]:
    for method, values in scores.items():
        for seed, value in enumerate(values):
            write_record(root, task, method, seed, value, lr=lr)
    return load_runs(root)


def test_a_cell_is_its_seeds_mean_and_sample_std_or_says_why_not(tmp_path):
    runs = runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75]})
    # mean 72.33, sample std sqrt(((−2.33)² + (−0.33)² + 2.67²) / 2) = 2.52
    assert cell_text(runs, Settings(seeds=3)) == ("72.33 ± 2.52 (3)", 72.33333333333333)
    assert cell_text(runs[:1], Settings(seeds=3)) == ("70.00 (1)", 70.0)
    assert cell_text([], Settings(seeds=3)) == ("—", None)
    write_record(tmp_path / "other", "rte", "dora", 3, 0.80, lr=1e-2)  # the same cell at another rate
    assert cell_text(runs + load_runs(tmp_path / "other"), Settings(seeds=3)) == ("refused", None)


def test_the_comparisons_section_pairs_each_baseline_and_corrects_the_family(tmp_path):
    # rte: dora 70, 72, 75; lora 69, 70, 71 -> d = 1, 2, 4; bitfit 60, 61, 62 -> d = 10, 11, 13
    runs = runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75], "lora": [0.69, 0.70, 0.71], "bitfit": [0.60, 0.61, 0.62]})
    plan = AnalysisPlan.from_dict(
        {"backbone": "minilm", "budget": 8, "tasks": ["rte"], "rows": ["dora"],
         "comparisons": [{"a": "dora", "b": ["lora", "bitfit"], "family": "main"}]},
        "t",
    )  # fmt: skip
    lines = comparison_sections(plan, runs)
    assert lines[0] == "**dora − lora**, family *main*, pooled over rte:"  # the plan's budget: none named
    assert lines[4] == "**dora − bitfit** (budgets 8 / None), family *main*, pooled over rte:"
    assert lines[1] == lines[3] == lines[5] == lines[7] == ""
    # d = 1, 2, 4: mean 2.33, sd 1.53, t(0.975, 2) 4.303 -> ±3.80, p 0.118; d = 10, 11, 13: p 0.006
    assert lines[2].splitlines()[2:] == [
        "| dora − lora | rte | 3 | +2.33 | [-1.46, +6.13] | 0.118 | no detectable difference |",
        "| dora − lora | all tasks | 3 | +2.33 | [-1.46, +6.13] | 0.118 | no detectable difference |",
    ]
    assert (
        lines[6].splitlines()[3] == "| dora − bitfit | all tasks | 3 | +11.33 | [+7.54, +15.13] | 0.006 | dora better |"
    )
    assert lines[8] == "Family *main* in one line each (pooled rows):"
    assert lines[10].splitlines()[2:] == [lines[2].splitlines()[3], lines[6].splitlines()[3]]
    # Holm over the family's 2 pooled rows: 0.006 x 2 = 0.012; 0.118 x 1, kept monotone
    assert lines[-3:] == [
        "| dora − lora | all tasks | +2.33 | 0.118 | 0.118 |",
        "| dora − bitfit | all tasks | +11.33 | 0.006 | 0.012 |",
        "",
    ]


def test_picks_read_the_configs_rate_show_each_rates_mean_and_take_every_budget_without_one():
    def run(method, lr, score, budget=8):
        best = {"metrics": {"pearson": score}} if score is not None else None
        rec = {"method": method, "task": "stsb", "budget": budget, "status": "complete" if best else "failed",
               "main_metric": "pearson", "best": best, "config": {"trainer": {"lr": lr}}}  # fmt: skip
        return RunRecord(Path(f"/x/{method}{lr}{budget}"), rec)

    runs = [run("dora", 1e-3, 0.80), run("dora", 3e-3, None), run("dora", 1e-2, 0.70, budget=2)]
    found = pick_rates(runs, ["stsb"])  # no budget: all three count
    assert found.picks == {"dora": 1e-3}
    assert found.missing == ("dora lr 0.003",)
    assert found.table[2:] == (
        "| dora | 0.001 | 80.00 | 80.00 | **yes** (grid edge) |",
        "| dora | 0.003 | failed | - |  |",
        "| dora | 0.01 | 70.00 | 70.00 |  |",
    )


def page_comparisons(root: Path, plan: AnalysisPlan | None) -> list[tuple[str, list[list[str]]]]:
    """The page's comparisons section: (figure caption, rows of cell texts) per table."""
    import html
    import re

    from dora_bench.report.page import build_page

    page = build_page(root, Settings(seeds=3), plan)
    section = page[page.index('<section id="comparisons">') : page.index("</section>", page.index('id="comparisons"'))]
    tables = []
    for figure in re.findall(r"<figure.*?</figure>", section, flags=re.S):
        caption = html.unescape(re.sub(r"<.*?>", "", re.search(r"<figcaption>(.*?)</figcaption>", figure).group(1)))
        rows = [
            [html.unescape(re.sub(r"<.*?>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", figure.split("<tbody>")[1], flags=re.S)
        ]
        tables.append((caption, rows))
    return tables


def test_a_study_s_page_shows_its_declared_families_each_corrected_on_its_own(tmp_path):
    # rte: dora 70, 72, 75; lora 69, 70, 71 (d = 1, 2, 4: p 0.118); bitfit 60, 61, 62 (d = 10, 11, 13: p 0.006)
    runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75], "lora": [0.69, 0.70, 0.71], "bitfit": [0.60, 0.61, 0.62]})
    plan = AnalysisPlan.from_dict(
        {"backbone": "minilm", "budget": 8, "tasks": ["rte"], "rows": ["dora"], "names": {"dora": "DoRA (ours)"},
         "comparisons": [{"a": "dora", "b": "bitfit", "family": "primary"},
                         {"a": "dora", "b": ["lora", "bitfit"], "family": "main"}]},
        "t",
    )  # fmt: skip
    tables = page_comparisons(tmp_path, plan)
    assert [caption for caption, _ in tables] == [
        "Family primary: 1 comparison, no correction.",
        "Family main: 2 comparisons, Holm's correction over their 2 pooled rows.",
    ]
    primary, main = tables[0][1], tables[1][1]
    # one test in its family: no Holm p (a family-wide correction over all three pooled rows would give 0.018)
    name = "DoRA (ours) − bitfit (budgets 8 / None)"
    assert primary == [
        [name, "rte", "3", "+11.33", "[+7.54, +15.13]", "0.006", "", "dora better"],
        [name, "all tasks", "3", "+11.33", "[+7.54, +15.13]", "0.006", "", "dora better"],
    ]
    # Holm over main's two pooled rows only: 0.006 x 2 = 0.012, 0.118 x 1; task rows carry none
    assert [row[1] + " " + row[6] for row in main] == ["rte ", "all tasks 0.118", "rte ", "all tasks 0.012"]
    assert main[1][:6] == ["DoRA (ours) − lora", "all tasks", "3", "+2.33", "[-1.46, +6.13]", "0.118"]
    # the same numbers as analysis.md's section for the same plan
    analysis = "\n".join(comparison_sections(plan, load_runs(tmp_path)))
    assert "| dora − lora | all tasks | +2.33 | 0.118 | 0.118 |" in analysis
    assert "| dora − bitfit | all tasks | +11.33 | 0.006 | 0.012 |" in analysis


def test_without_a_plan_the_page_compares_dora_with_each_baseline_in_one_family(tmp_path):
    runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75], "lora": [0.69, 0.70, 0.71], "bitfit": [0.60, 0.61, 0.62]})
    ((caption, rows),) = page_comparisons(tmp_path, None)
    assert caption.startswith("minilm, bT = 8")
    assert [(row[0], row[1], row[6]) for row in rows] == [
        ("BitFit", "rte", ""), ("BitFit", "all tasks", "0.012"), ("LoRA", "rte", ""), ("LoRA", "all tasks", "0.118")
    ]  # fmt: skip


def test_dora_bench_report_takes_a_study_file_and_says_when_a_study_s_folder_lacks_one(tmp_path, capsys):
    from dora_bench.report.page import main

    runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75], "lora": [0.69, 0.70, 0.71]})
    (tmp_path / "analysis.md").write_text("# a study\n")
    assert main(["--results-dir", str(tmp_path), "--seeds", "3"]) == 0
    assert "pass --study <its file>" in capsys.readouterr().err
    assert "Paired comparisons: DoRA − each baseline" in (tmp_path / "report" / "index.html").read_text()

    study = tmp_path / "study.yaml"
    study.write_text(
        "name: t\nanalysis: {backbone: minilm, budget: 8, tasks: [rte], rows: [dora],\n"
        "  comparisons: [{a: dora, b: lora, family: primary}]}\n"
    )
    assert main(["--results-dir", str(tmp_path), "--seeds", "3", "--study", str(study)]) == 0
    assert capsys.readouterr().err == ""
    page = (tmp_path / "report" / "index.html").read_text()
    assert "as the study declared them" in page and "DoRA − each baseline" not in page

    study.write_text("name: t\n")
    assert main(["--results-dir", str(tmp_path), "--study", str(study)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "declares no analysis: block" in err


def test_a_study_s_page_counts_a_cell_short_against_the_seeds_its_stages_plan(tmp_path):
    import re

    from dora_bench.report.page import build_page

    # dora has seeds 0-2, lora 0-1: against a flat 3 seeds lora is short; against a plan of 2 it is not
    runs_of(tmp_path, {"dora": [0.70, 0.72, 0.75], "lora": [0.69, 0.70]})

    def status(planned):
        page = build_page(tmp_path, Settings(seeds=3), None, planned)
        section = page[page.index('<section id="status">') : page.index("</section>", page.index('id="status"'))]
        return re.sub(r"<.*?>", "", section)

    assert "short of seeds: LoRA b8 (2/3)" in status(None)
    planned = {("rte", "minilm", "dora", None, 8): {0, 1, 2}, ("rte", "minilm", "lora", None, 8): {0, 1}}
    assert "every cell has all its seeds" in status(planned)
    planned[("rte", "minilm", "lora", None, 8)] = {0, 1, 2, 3}  # a plan of 4 seeds: 2 of them done
    assert "short of seeds: LoRA b8 (2/4)" in status(planned)
    # "not run": the cells the plan has and the records lack, not every method seen on another task
    runs_of(tmp_path, {"adalora": [0.71]}, task="mrpc")
    assert "short of seeds: AdaLoRA b8 (1/3); not run: LoRA b8, DoRA b8" in status(None)
    planned[("mrpc", "minilm", "adalora", None, 8)] = {0}
    assert "mrpc · minilm: 1 cells, 1 complete runs; every cell has all its seeds" in status(planned)
    del planned[("mrpc", "minilm", "adalora", None, 8)]  # a record no stage plans: nothing it falls short of
    assert "mrpc · minilm: 1 cells, 1 complete runs; every cell has all its seeds" in status(planned)
    planned[("mrpc", "minilm", "dora", "random", 8)] = {0}
    assert "not run: DoRA-random b8" in status(planned)
