"""The report page (``dora-bench-report``): built from real records of the demo task, parsed strictly,
its numbers checked against the CSV tables, and opened in headless Chromium where there is one."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from dora_bench.report.cells import Settings
from dora_bench.report.page import build_page, main, mean_curve, pareto_front, write_report
from dora_bench.report.tables import write_tables
from support import REPO, TINY, compose

SETTINGS = Settings(seeds=2)
# a short run: 2 epochs of 10 steps (DoRA prunes from step 4 of 20), evaluations on 64 examples
SHORT = ["task.train_size=160", "task.dev_size=64", "trainer.epochs=2", "trainer.lr=5e-3", "trainer.log_every=2"]
METHODS = {"lora": 2, "dora": 2, "bitfit": None}  # method -> budget
ARTIFACTS = Path(os.environ.get("DORA_BENCH_ARTIFACTS", REPO / ".pytest-artifacts")) / "report"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Records of three methods x two seeds on the demo task (a few seconds each), the tables and the page."""
    from dora_bench.run.train import train

    root = tmp_path_factory.mktemp("report")
    for method, budget in METHODS.items():
        for seed in (0, 1):
            overrides = [f"method={method}", f"seed={seed}", *([f"budget={budget}"] if budget else [])]
            train(
                compose([*TINY, f"results_dir={root / 'results'}", f"cache_dir={root / 'cache'}", *SHORT, *overrides])
            )
    results = root / "results"
    write_tables(results, SETTINGS)
    write_report(results, SETTINGS)
    return results


def page_cells_from_html(html: str) -> list[dict]:
    """Every table number of the page, read with html5lib (what the browser test reads with JavaScript):
    ours (``data-table``) and the paper's with Δ (``data-ref``)."""
    import html5lib

    tree = html5lib.parse(html, namespaceHTMLElements=False)
    found = []
    for td in tree.iter("td"):
        text = "".join(td.itertext())
        if "data-table" in td.attrib:
            value = next((e for e in td.iter("span") if e.get("class") == "v"), None)
            key = (td.get("data-table"), td.get("data-row"), td.get("data-col"))
            found.append(
                {
                    "key": key,
                    "state": td.get("data-state"),
                    "value": None if value is None else value.text,
                    "text": text,
                }
            )
        elif "data-ref" in td.attrib:
            found.append({"key": ("paper", *td.get("data-ref").split(" | ")), "text": text})
    return found


def assert_diagnostics_match_csv(html: str, results: Path) -> None:
    """Every dynamic-rank cell's agreement and spread in tables/allocation_diagnostics.csv is on the page."""
    with (results / "tables" / "allocation_diagnostics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        agreement = "—" if not row["agreement"] else f"{float(row['agreement']):.2f}"
        spread = f"{float(row['spread']):.2f} ({float(row['spread_min']):.2f}-{float(row['spread_max']):.2f})"
        assert f"<td>{agreement}</td>" in html and f"<td>{spread}</td>" in html, row


def csv_rows(results: Path) -> list[dict]:
    rows = []
    for path in sorted((results / "tables").glob("*.csv")):
        if path.name not in ("all_runs.csv", "allocation_diagnostics.csv"):  # other schemas, checked apart
            with path.open(newline="") as handle:
                rows += list(csv.DictReader(handle))
    return rows


def assert_numbers_match_csv(page_cells: list[dict], rows: list[dict]) -> int:
    """Each CSV line with a number has its cell on the page, showing the CSV's value (and spread) at the
    page's precision; each cell without one says its state. Returns how many numbers were compared."""
    on_page = {tuple(c["key"]): c for c in page_cells}
    compared = 0
    for row in rows:
        key = (row["table"], row["row"], row["column"])
        if row["paper"] and ("paper", *key) in on_page:  # the paper's number, and Δ where the backbone is the paper's
            paper = on_page[("paper", *key)]["text"]
            assert abs(float(paper.split()[0]) - float(row["paper"])) < 0.006, (key, paper)
            if row["diff"]:
                diff = re.search(r"\(([+-][\d.]+)\)", paper)
                assert diff and abs(float(diff.group(1)) - float(row["diff"])) <= 0.005 + 1e-4, (key, paper)
            else:
                assert "(" not in paper, (key, paper)
        if row["value"] == "":
            if key in on_page:  # tables without any record are listed, not drawn
                assert on_page[key]["state"] == row["state"], key
            continue
        cell = on_page[key]
        assert cell["state"] == row["state"], key
        shown = cell["value"]
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        tolerance = 0.5 * 10**-decimals + 1e-4  # the CSV keeps 4 decimals, the page the table's
        assert abs(float(shown) - float(row["value"])) <= tolerance, (key, shown, row["value"])
        if row["spread"]:
            spread = re.search(r"± ([\d.]+)", cell["text"])
            assert spread and abs(float(spread.group(1)) - float(row["spread"])) <= tolerance, (key, cell["text"])
        compared += 1
    return compared


# -- without a browser ---------------------------------------------------------------------------


def test_the_page_is_one_valid_html_file_that_needs_nothing_from_the_network(results):
    import html5lib

    page = results / "report" / "index.html"
    html = page.read_text()
    html5lib.HTMLParser(strict=True).parse(html)  # raises on any parse error
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page loads something from the network"
    assert "<img" not in html and "<link" not in html  # styles, script and plots are inline
    records = re.findall(r'href="([^"]+record\.json)"', html)
    assert records and all((page.parent / href).is_file() for href in records)  # relative links that resolve
    assert {r for r in records} == {f"../{p.relative_to(results).as_posix()}" for p in results.rglob("record.json")}


def test_the_page_numbers_equal_the_csv_tables(results):
    html = (results / "report" / "index.html").read_text()
    rows = csv_rows(results)
    numbers = sum(1 for row in rows if row["value"])
    assert numbers >= 2 and assert_numbers_match_csv(page_cells_from_html(html), rows) == numbers  # all_cells
    assert_runs_match_csv(html, results)


def assert_runs_match_csv(html: str, results: Path) -> None:
    """The list of runs shows all_runs.csv's best score of each record."""
    import html5lib

    with (results / "tables" / "all_runs.csv").open(newline="") as handle:
        best = {row["path"]: row["best"] for row in csv.DictReader(handle)}
    tree = html5lib.parse(html, namespaceHTMLElements=False)
    shown = {
        tr.get("data-path"): "".join(tr.findall("td")[3].itertext()).rstrip("†")
        for tr in tree.iter("tr")
        if tr.get("data-path")
    }
    assert shown.keys() == best.keys()
    for path, text in shown.items():
        assert (text == "") == (best[path] == ""), path
        if text:
            assert abs(float(text) - float(best[path])) <= 0.005 + 1e-4, (path, text, best[path])


def test_every_seed_point_says_which_run_it_is_and_links_to_its_record(results):
    import html5lib

    page = results / "report" / "index.html"
    tree = html5lib.parse(page.read_text(), namespaceHTMLElements=False)
    svg = "{http://www.w3.org/2000/svg}"  # html5lib keeps SVG elements in their namespace
    links = [
        (a, c) for a in tree.iter(f"{svg}a") if (c := a.find(f"{svg}circle")) is not None and "seed" in c.get("class")
    ]
    assert len(links) == 2 * len(METHODS)  # the strip plot: one per run
    for a, circle in links:
        tip = circle.find(f"{svg}title").text
        assert re.search(r"seed \d", tip) and "lr 0.005" in tip and "record.json" in tip, tip
        assert (page.parent / a.get("href")).is_file()


def test_the_page_is_a_pure_function_of_the_records(results):
    first = (results / "report" / "index.html").read_text()
    assert build_page(results, SETTINGS) == first


def test_the_loss_and_dev_curves_of_one_budget_share_their_step_axis(results):
    # the dev chart has a handful of evaluations, the loss chart many logged steps: an evaluation must sit
    # under the loss it followed, and one evaluation at the end must not get an axis of its own
    html = (results / "report" / "index.html").read_text()
    charts = re.findall(r'<svg class="chart"[^>]*data-plot="curve".*?</svg>', html, flags=re.S)
    assert charts and len(charts) % 2 == 0
    x_ticks = [re.findall(r'<line class="grid" x1="([\d.]+)" x2="\1"', chart) for chart in charts]
    tick_labels = [re.findall(r'text-anchor="middle">([^<]+)</text>', chart) for chart in charts]
    for k in range(0, len(charts), 2):
        assert "training loss" in charts[k] and "dev " in charts[k + 1]
        assert x_ticks[k] and x_ticks[k] == x_ticks[k + 1]
        assert tick_labels[k][:-1] == tick_labels[k + 1][:-1]  # the last is the axis label: step


def test_the_spread_chart_is_styled_as_a_chart_and_its_labels_fit_left_of_the_axis(results):
    html = (results / "report" / "index.html").read_text()
    chart = re.search(r'<svg class="chart"[^>]*data-plot="spread".*?</svg>', html, flags=re.S)
    assert chart, "the spread chart lacks class=chart: its text would be unstyled (16 units, scaled up)"
    labels = re.findall(r'<text class="tick" x="([\d.]+)" y="[\d.]+" text-anchor="end">([^<]+)</text>', chart[0])
    # laid out for the phone's 17-unit type: about 10 units a character (the browser test checks it drawn)
    assert labels and all(float(x) >= 10 * len(label) for x, label in labels)
    assert "rank spread" in chart[0]


def test_command_line(results, tmp_path, capsys):
    assert main(["--results-dir", str(results), "--seeds", "2"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["--results-dir", str(tmp_path / "nowhere")]) == 2


def test_pareto_front_and_mean_curve():
    # (cost, score): the cheapest, the best, and one both cheaper and better than the fourth
    assert pareto_front([(1, 50), (10, 90), (5, 80), (6, 70)]) == {0, 1, 2}
    assert pareto_front([(1, 50), (1, 50)]) == {0, 1}  # ties dominate neither
    mean, low, high = mean_curve([[(1, 1.0), (2, 3.0)], [(1, 3.0), (2, 5.0), (3, 9.0)]])
    assert mean == [(1, 2.0), (2, 4.0)] and low == [(1, 1.0), (2, 3.0)] and high == [(1, 3.0), (2, 5.0)]


def test_paper_tables_with_gaps_refusals_and_failures_show_every_number_and_every_reason(tmp_path):
    """Hand-made records (as test_tables writes them) on RTE and CoLA: Table 2 with the paper's numbers
    and Δ, a failed seed, a cell refused for mixing precisions, and a seed without an eligible epoch."""
    from test_tables import write_run

    for seed in range(3):
        write_run(tmp_path, task="rte", method="lora", seed=seed, best=0.70 + seed / 100)
        write_run(tmp_path, task="rte", method="dora", seed=seed, best=0.72 + seed / 100, countable=seed != 2)
        write_run(
            tmp_path, task="cola", method="lora", seed=seed, best=0.55, precision="bf16-autocast" if seed else "fp32"
        )
        write_run(
            tmp_path, task="rte", method="bitfit", seed=seed, best=0.6, status="failed" if seed == 1 else "complete"
        )
    settings = Settings(seeds=3)
    write_tables(tmp_path, settings)
    html = (write_report(tmp_path, settings)).read_text()
    import html5lib

    html5lib.HTMLParser(strict=True).parse(html)
    rows = csv_rows(tmp_path)
    assert {row["state"] for row in rows if row["table"] == "table2"} >= {"ok", "incomplete", "refused", "missing"}
    numbers = sum(1 for row in rows if row["value"])
    assert assert_numbers_match_csv(page_cells_from_html(html), rows) == numbers
    assert any(row["diff"] for row in rows)  # roberta-base: Δ against the paper, checked above
    assert "refused [1]" in html and "precision" in html  # the refusal and its reason
    assert "1 without an eligible epoch, left out" in html and 'class="seed hollow"' in html
    assert "1 failed" in html and "CUDA out of memory" in html  # the failed seed and its error
    assert_runs_match_csv(html, tmp_path)


@pytest.mark.slow
def test_the_minilm_page_shows_the_committed_csv_numbers():
    """The committed study: every number of its Tables 2, 5, 6 and all_cells on the page equals the CSV."""
    results = REPO / "results" / "minilm"
    if not (results / "tables" / "table2.csv").is_file():
        pytest.skip("no committed MiniLM tables")
    html = build_page(results, Settings())
    import html5lib

    html5lib.HTMLParser(strict=True).parse(html)
    assert_runs_match_csv(html, results)
    assert_diagnostics_match_csv(html, results)
    rows = csv_rows(results)
    numbers = sum(1 for row in rows if row["value"])
    assert numbers > 90 and assert_numbers_match_csv(page_cells_from_html(html), rows) == numbers
    deltas = [row for row in csv_rows(results) if row["paper"]]
    assert deltas  # paper numbers beside ours (roberta-base's, so for reference, without Δ)


def test_every_committed_page_inlines_today_s_stylesheet_and_script():
    """A layout fix reaches the committed studies' pages only when they are written again: say which are stale."""
    assets = REPO / "dora_bench" / "report" / "page_assets"
    css, js = ((assets / name).read_text() for name in ("report.css", "report.js"))
    pages = sorted((REPO / "results").glob("**/report/index.html"))
    if not pages:
        pytest.skip("no committed report pages")
    stale = [str(p.relative_to(REPO)) for p in pages if css not in p.read_text() or js not in p.read_text()]
    assert not stale, (
        "regenerate (a study's folder: dora-bench-study <study> report; any other: dora-bench-report --results-dir): "
        f"{stale}"
    )


# -- in a browser --------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")

VISIBLE = "(el) => el.getClientRects().length > 0"
PAGE_CELLS_JS = """[...document.querySelectorAll('td[data-table], td[data-ref]')].map(td => td.dataset.table ? {
  key: [td.dataset.table, td.dataset.row, td.dataset.col], state: td.dataset.state,
  value: td.querySelector('span.v') ? td.querySelector('span.v').textContent : null, text: td.textContent
} : {key: ['paper', ...td.dataset.ref.split(' | ')], text: td.textContent})"""


CLIPPED_TEXT_JS = """[...document.querySelectorAll('svg.chart text, svg.heat text')].filter(t => {
  const r = t.getBoundingClientRect(), s = t.ownerSVGElement.getBoundingClientRect();
  return r.width > 0 && (r.left < s.left - 0.5 || r.right > s.right + 0.5);
}).map(t => [t.ownerSVGElement.dataset.plot, t.textContent])"""


def choose(page, name: str, value: str) -> None:
    page.evaluate(
        f"(() => {{ const s = document.querySelector('select[data-filter={name}]'); s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change')); })()"
    )


def visible_methods(page, selector: str) -> list[str]:
    return page.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})].filter({VISIBLE}).map(e => e.dataset.method)"
    )


@needs_chromium
def test_the_page_in_headless_chromium(results):
    url = (results / "report" / "index.html").resolve().as_uri()
    csv_lines = csv_rows(results)
    with Browser.start() as browser:
        for width in (1280, 390):
            page = browser.open(url, width=width)
            # every plot drew: each SVG chart has a size and content; every image (none today) loaded
            plots = page.evaluate(
                "[...document.querySelectorAll('svg.chart, svg.heat')].map(s => { const r = s.getBoundingClientRect();"
                " return [r.width, r.height, s.querySelectorAll('circle, polyline, rect').length]; })"
            )
            assert len(plots) >= 6  # strip plot, 2 Pareto plots, curves, heatmap, budget schedule, score history
            assert all(w > 100 and h > 50 and n > 0 for w, h, n in plots), plots
            # no chart's text is drawn past its edges (the phone's larger type once cut labels off)
            assert page.evaluate(CLIPPED_TEXT_JS) == [], f"chart text cut off at {width} px"
            assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            # nothing wider than the window: wide tables scroll inside their own box
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert scroll <= inner, f"horizontal overflow at {width} px: {scroll} > {inner}"
            assert page.evaluate("!document.getElementById('filters').hidden")  # the script ran
            page.evaluate("document.querySelector('#runs details').open = true")  # the list of runs, folded
            assert len(visible_methods(page, "table.runs tbody tr")) == 2 * len(METHODS)
            page.screenshot(ARTIFACTS / f"demo_{width}.png")
            page.screenshot(ARTIFACTS / f"demo_{width}_full.png", full_page=True)
            # the numbers the reader sees are the CSV's
            numbers = sum(1 for row in csv_lines if row["value"])
            assert numbers >= 2 and assert_numbers_match_csv(page.evaluate(PAGE_CELLS_JS), csv_lines) == numbers
            # filtering to one method leaves only its rows and points
            all_points = visible_methods(page, "svg circle.seed")
            assert set(all_points) == set(METHODS) and len(all_points) == 2 * len(METHODS)
            choose(page, "method", "lora")
            assert visible_methods(page, "#tables tbody[data-method]") == ["lora"]  # all_cells' row
            assert visible_methods(page, "table.runs tbody tr") == ["lora", "lora"]  # its two seeds
            assert visible_methods(page, "svg circle.seed") == ["lora", "lora"]
            assert set(visible_methods(page, "svg [data-method]")) == {"lora"}
            assert set(visible_methods(page, "[data-method]")) == {"lora"}
            page.screenshot(ARTIFACTS / f"demo_{width}_lora.png")
            choose(page, "method", "")
            choose(page, "budget", "2")  # BitFit has no budget: it stays beside every budget
            assert set(visible_methods(page, "svg circle.seed")) == set(METHODS)
            choose(page, "budget", "")
            # a sortable table sorts: the runs by their score, ascending
            page.evaluate("document.querySelector('table.runs thead th:nth-child(4)').click()")
            scores = page.evaluate(
                "[...document.querySelectorAll('table.runs tbody tr')].map(r => parseFloat(r.cells[3].dataset.sort))"
            )
            assert scores == sorted(scores)
            # every run's own curve, on demand (a CSS switch)
            lines = "[...document.querySelectorAll('svg polyline.run')].filter(" + VISIBLE + ").length"
            assert page.evaluate(lines) == 0
            page.evaluate("document.querySelector('.curves .switch input').click()")
            assert page.evaluate(lines) == 2 * 2 * len(METHODS)  # loss and dev, per run
            assert page.errors() == [], page.errors()  # no console errors, exceptions or failed loads
