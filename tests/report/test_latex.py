"""The LaTeX tables paste into a paper as they are: notes inside the float, captions without a
second "Table N:", wide tables sized to the page, text escaped for the default (OT1) fonts,
and every file compiles (where a TeX engine is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_tables import write_run  # pytest puts tests/report on sys.path

from dora_bench import records
from dora_bench.report.cells import Settings, load_runs
from dora_bench.report.render import to_latex
from dora_bench.report.tables import table2, table5, table6, table9, write_tables


@pytest.fixture
def mixed_results(tmp_path):
    """Records that give every table something to say: numbers, a refused cell, a seed without
    an eligible epoch, ablation rows, and Table 9's timing runs with a GPU memory peak."""
    for seed in (0, 1):
        write_run(tmp_path, task="rte", method="lora", seed=seed, best=0.70 + seed / 100)
        write_run(tmp_path, task="rte", method="dora", seed=seed, best=0.75, lr=1e-3 * (seed + 1))  # refused
        write_run(tmp_path, task="cola", method="dora", seed=seed, best=0.62, countable=seed == 0)
        write_run(
            tmp_path, task="cola", method="dora", seed=seed, best=0.6, variant="nodem", method_config={"dem_coef": 0}
        )
        write_run(tmp_path, task="mrpc", method="dora", seed=seed, best=0.8, budget=2, variant="b0_6")
        for method, peak in (("lora", 4112.4), ("full_ft", 6000.0)):
            path = write_run(tmp_path, task="qnli", method=method, seed=seed, best=0.9, variant="epoch1")
            record = records.read_record(path)
            record["peak_gpu_mib"] = peak + seed
            records.write_json_atomic(path, record)
    return tmp_path


def outside_math(tex: str) -> str:
    """The text TeX typesets in text mode (and the resize test, whose `>` is a comparison)."""
    return re.sub(r"\$[^$]*\$", "", tex).replace("\\ifdim\\width>", "")


def test_notes_live_inside_the_float_and_say_why(mixed_results):
    table = table2(load_runs(mixed_results), Settings(seeds=2))
    tex = to_latex(table)
    lines = [line for line in tex.splitlines() if line.strip()]
    assert lines[-1] == "\\end{table*}"  # nothing after the float: no `%` notes a PDF never shows
    body = tex[: tex.index("\\end{table*}")]
    assert "refused [1]" in body and "[1] DoRA 8 / RTE: refused" in body and "method.lr" in body
    assert "$^\\dagger$" in body  # CoLA: a seed without an eligible epoch, marked and explained
    assert "record.json" not in tex  # record paths are for the Markdown notes, not the paper


def test_captions_have_no_second_table_number(mixed_results):
    runs = load_runs(mixed_results)
    for make in (table2, table5, table6, table9):
        caption = re.search(r"\\caption\{(.*)\}", to_latex(make(runs, Settings(seeds=2)))).group(1)
        assert not caption.startswith("Table"), caption


def test_table2_spans_both_columns_and_shrinks_to_fit(mixed_results):
    tex = to_latex(table2(load_runs(mixed_results), Settings(seeds=2)))
    assert tex.startswith("%") and "\\begin{table*}" in tex and "\\resizebox{" in tex
    assert "\\linewidth" in tex  # the page's width inside table*


def test_text_is_escaped_for_the_default_font_encoding(mixed_results):
    runs = load_runs(mixed_results)
    for make in (table2, table5, table6, table9):
        text = outside_math(to_latex(make(runs, Settings(seeds=2))))
        # OT1 prints < > | as ¡ ¿ — and a bare _ is an error outside math
        bad = re.search(r".{0,30}([<>|]|(?<!\\)_).{0,30}", text)
        assert bad is None, bad.group(0)
        assert not re.search(r"[^\x00-\x7f]", text), "non-ASCII text needs a LaTeX spelling"
    assert "b0\\_" in to_latex(table6(runs, Settings(seeds=2)))


def test_table9_prints_whole_mib_and_no_epoch_wording(mixed_results):
    tex = to_latex(table9(load_runs(mixed_results), Settings(seeds=2)))
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert "epoch (DoRA" not in caption and "best dev epoch" not in caption
    assert "\\textbf{4113} $\\pm$ 1" in tex  # LoRA's 4112.4 and 4113.4: mean 4112.9 -> 4113, std 0.71 -> 1
    assert "4112.00" not in tex and "{\\scriptsize 4112}" in tex  # the paper's DoRA 4112 as printed


def latex_engine() -> str:
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("no pdflatex on this machine (CI installs texlive-latex-base + texlive-latex-recommended)")
    return engine


def test_every_generated_tex_compiles(mixed_results, tmp_path):
    engine = latex_engine()
    write_tables(mixed_results, Settings(seeds=2))
    tables = sorted((mixed_results / "tables").glob("*.tex"))
    assert len(tables) == 6
    for tex in tables:  # one document each, so a failure names its table
        document = tmp_path / f"doc_{tex.stem}.tex"
        document.write_text(
            "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs,graphicx}\n\\begin{document}\n"
            f"\\input{{{tex}}}\n\\end{{document}}\n"
        )
        done = subprocess.run(
            [engine, "-interaction=nonstopmode", "-halt-on-error", document.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        log = (tmp_path / f"doc_{tex.stem}.log").read_text(errors="replace")
        assert done.returncode == 0, f"{tex.name}: " + "\n".join(log.splitlines()[-30:])
        assert "Overfull \\hbox" not in log, f"{tex.name} is wider than its column: {log}"
        assert (tmp_path / f"doc_{tex.stem}.pdf").stat().st_size > 1000
