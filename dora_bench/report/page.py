"""One self-contained HTML page per results folder: tables, every seed, Pareto fronts, curves, provenance.

    dora-bench-report [--results-dir results] [--stat mean|median] [--epoch best|...] [--seeds 5] [--study FILE]

writes ``<results_dir>/report/index.html``: one file, its styles, script and charts inline (the
charts as SVG drawn by ``svgplot``), so it opens offline from ``file://`` and can be committed
beside the records. Like the tables it is a pure function of the records under ``runs/``: the
numbers come from ``cells`` (``load_runs``, ``aggregate``) and the paper tables from ``tables``
(``PAPER_TABLES``, ``all_cells``) and ``llm``, with the same settings as ``dora-bench-tables``;
this module only lays them out. Each run links to its ``record.json`` (relative links, so the
folder can move). Filters (task, method, budget), sortable tables and "every run" switches are
vanilla JavaScript (``page_assets/report.js``); with scripts off the page shows everything.

The study driver calls ``write_report(results_dir, settings, plan)`` after each completed run: a
study's page shows the comparisons its file declared (``report.study``), the numbers of its
``analysis.md``; a folder without a plan gets DoRA against each baseline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

from dora_bench.errors import ConfigError, UserError
from dora_bench.records import write_text_atomic
from dora_bench.report import svgplot
from dora_bench.report.cells import (
    EPOCH_CHOICES,
    INELIGIBLE_MARK,
    PAPER_NAMES,
    RunRecord,
    Settings,
    aggregate,
    by_cell,
    learning_rate,
    load_runs,
    metric,
    peak_gpu_mib,
    trainable_params,
)
from dora_bench.report.compare import POOLED, Comparison, compare, holm_adjusted
from dora_bench.report.study import AnalysisPlan, by_family, declared_comparisons, plan_of_study_file
from dora_bench.report.svgplot import PALETTE, Axes, attrs

ASSETS = Path(__file__).resolve().parent / "page_assets"
#: Order of methods on every axis and legend (the paper's rows first), and so their colours.
METHOD_ORDER = ("full_ft", "bitfit", "houlsby", "pfeiffer", "lora", "adalora", "dora", "dora_wd", "prompt_tuning")
TASK_ORDER = ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli", "squad_v1", "squad_v2", "xsum")
DASHES = ("", "5 3", "2 2", "8 3 2 3")  # a variant's line: plain, then dashed patterns in order of appearance
Key = tuple  # (task, backbone, method, variant, budget): cells.RunRecord.key


# -- the entry points ----------------------------------------------------------------------------


def write_report(
    results_dir: str | Path,
    settings: Settings | None = None,
    plan: AnalysisPlan | None = None,
    planned_seeds: dict[Key, set[int]] | None = None,
) -> Path:
    """Write ``<results_dir>/report/index.html`` from the records under ``<results_dir>/runs/``; its path.
    With a study's ``plan`` the page's comparisons are the ones it declared, family by family; with its
    ``planned_seeds`` (each cell's seeds as its stages plan them) a cell is short of seeds against its
    own plan rather than ``settings.seeds``."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs").is_dir():
        raise ConfigError(f"no runs at {results_dir / 'runs'}: run a sweep first or pass --results-dir <dir>")
    path = results_dir / "report" / "index.html"
    return write_text_atomic(path, build_page(results_dir, settings or Settings(), plan, planned_seeds))


def build_page(
    results_dir: Path,
    settings: Settings,
    plan: AnalysisPlan | None = None,
    planned_seeds: dict[Key, set[int]] | None = None,
) -> str:
    runs = load_runs(results_dir)
    page = Page(results_dir, runs, settings, plan, planned_seeds)
    return page.html()


def report_tables(runs: list[RunRecord], settings: Settings) -> list:
    """The tables ``dora-bench-tables`` writes, in its order (one call site to adapt if tables.py changes):
    the paper's (on the backbone it picks), the decoder-LLM tables, then every setting found."""
    from dora_bench.report.llm import llm_tables
    from dora_bench.report.tables import PAPER_TABLES, all_cells, default_backbone

    paper = [make(runs, settings, backbone=default_backbone(make, runs)) for make in PAPER_TABLES]
    return [*paper, *llm_tables(runs, settings), all_cells(runs, settings)]


def allocation_diagnostics_section(runs: list[RunRecord], task: str, backbone: str) -> str:
    """Is each dynamic-rank cell's allocation more than random pruning? The agreement of its seeds'
    final ranks and their spread, each against its random-pruning null (``report/diagnostics.py``):
    a table, and a strip of every seed's spread over the null's 5-95 % band."""
    from dora_bench.report.diagnostics import NULL_DRAWS, NULL_SEED, agreement_text, diagnose_all

    found = sorted(diagnose_all([r for r in runs if r.complete]), key=lambda d: _order_key(d.key))
    if not found:
        return ""
    rows = []
    for d in found:
        null = d.agreement_null
        cells = [
            cell_label(d.key),
            str(len(d.seeds)),
            "—" if d.agreement is None else f"{d.agreement:.2f}",
            "—" if null is None else f"{null.median:.2f} [{null.high:.2f}]",
            agreement_text(d.type_agreement, d.type_agreement_null),
            agreement_text(d.layer_agreement, d.layer_agreement_null),
            f"{d.spread:.2f} ({min(d.spreads):.2f}-{max(d.spreads):.2f})",
            f"{d.spread_null.low:.2f}-{d.spread_null.high:.2f}",
            f"{sum(s > d.spread_null.high for s in d.spreads)} of {len(d.spreads)}",
            f"{round(sum(d.kept_params) / len(d.kept_params)):,}",
        ]
        fa = attrs(**filter_attrs(task=task, method=d.key[2], budget=d.key[4]))
        rows.append(f"<tr{fa}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    head = (  # two lines each: ten columns fit a laptop's width without scrolling
        ("cell", ""),
        ("n", ""),
        ("agreement", "(modules)"),
        ("random:", "median [95 %]"),
        ("by type", "[random 95 %]"),
        ("by layer", "[random 95 %]"),
        ("spread", "(min-max)"),
        ("random:", "5-95 %"),
        ("seeds", "above"),
        ("kept", "params"),
    )
    table = (
        '<div class="scroll"><table class="sortable diagnostics"><thead><tr>'
        + "".join(f"<th>{escape(a)}{'<br>' + escape(b) if b else ''}</th>" for a, b in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )
    top = max(max(max(d.spreads), d.spread_null.high) for d in found) * 1.1 or 1.0
    # Laid out for the phone's type (17 units, report.css), the larger: a label column as wide as the longest
    # label at about 10 units a character, and room below the rows for the ticks and the axis label.
    width, line, first = 520, 28, 18
    left = 12 + round(10 * max(len(cell_label(d.key)) for d in found))
    rows_end = first + line * (len(found) - 1) + 10
    height = rows_end + 52
    scale = (width - left - 10) / top
    parts = []
    for i, d in enumerate(found):
        y = first + line * i
        fa = attrs(**filter_attrs(task=task, method=d.key[2], budget=d.key[4]))
        null = d.spread_null
        parts.append(
            f"<g{fa}>"
            f'<text class="tick" x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(cell_label(d.key))}</text>'
            f'<rect x="{left + null.low * scale:.1f}" y="{y - 6}" width="{(null.high - null.low) * scale:.1f}"'
            f' height="12" fill="#ddd"><title>random pruning: {null.low:.2f}-{null.high:.2f} (5-95 %)</title></rect>'
            + "".join(
                f'<circle cx="{left + s * scale:.1f}" cy="{y}" r="4" fill="{colour(d.key[2])}">'
                f"<title>seed {seed}: spread {s:.2f}</title></circle>"
                for seed, s in zip(d.seeds, d.spreads)
            )
            + "</g>"
        )
    for tick in svgplot.nice_ticks(0, top, 5):
        parts.append(
            f'<text class="tick" x="{left + tick * scale:.1f}" y="{rows_end + 22}" text-anchor="middle">'
            f"{svgplot.fmt(tick)}</text>"
        )
    parts.append(
        f'<text class="label" x="{(left + width - 10) / 2:.1f}" y="{rows_end + 46}" text-anchor="middle">'
        "rank spread (std of a run's per-module ranks)</text>"
    )
    svg = (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" data-plot="spread"'
        f' style="max-width:{width * svgplot.MAX_SCALE:.0f}px"'
        f' aria-label="rank spread against random pruning"><title>rank spread against random pruning</title>'
        + "".join(parts)
        + "</svg>"
    )
    return (
        '<figure class="plot"><figcaption><b>Is the allocation more than random pruning?</b> Agreement: mean '
        "pairwise Pearson r of the seeds' per-module final ranks, of their per-type means and of their "
        "per-layer means; in brackets and the random column, the same of as many random-pruning runs (the "
        "types and layers average a few numbers each, so chance alone reaches high values). Spread: std of "
        "one run's per-module ranks (dots: seeds) against random pruning to the same count (grey: 5-95 %, "
        f"{NULL_DRAWS} draws, seed {NULL_SEED}).</figcaption>{table}{svg}</figure>"
    )


# -- the page -----------------------------------------------------------------------------------


def _order_key(key: Key) -> tuple:
    task, _, method, variant, budget = key
    return (
        -1 if budget is None else budget,
        METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
        method,
        variant or "",
    )


def method_name(method: str, variant: str | None = None) -> str:
    return PAPER_NAMES.get(method, method) + (f"-{variant}" if variant else "")


def cell_label(key: Key) -> str:
    """ "DoRA-nodem b8"; methods without a budget have none."""
    _, _, method, variant, budget = key
    return method_name(method, variant) + ("" if budget is None else f" b{budget}")


def colour(method: str) -> str:
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else zlib.crc32(method.encode())  # stable: no hash()
    return PALETTE[index % len(PALETTE)]


def filter_attrs(task: str | None = None, method: str | None = None, budget: int | None | str = "") -> dict:
    """The attributes the page's filters read (``report.js``): absent means "not about one"."""
    return {
        "data_task": task,
        "data_method": method,
        "data_budget": None if budget == "" else ("" if budget is None else budget),
    }


def seconds_per_step(record: dict) -> float | None:
    """Training wall time per optimiser step: the epochs' ``seconds`` (dev evaluation excluded)
    over the last epoch's step count."""
    epochs = [e for e in record.get("epochs") or [] if e.get("seconds") is not None]
    steps = (epochs[-1].get("step") if epochs else None) or 0
    return sum(e["seconds"] for e in epochs) / steps if epochs and steps else None


def read_curves(run: RunRecord) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training loss, dev main metric x100) against step from the run's ``metrics.jsonl``; the dev
    points fall back to the record's epochs where the file has no evaluations."""
    main = run.record.get("main_metric")
    loss, dev = [], []
    path = run.path.parent / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash
            step = entry.get("step")
            if step is None:
                continue
            if isinstance(entry.get("loss"), (int, float)) and math.isfinite(entry["loss"]):
                loss.append((step, float(entry["loss"])))
            value = (entry.get("eval") or {}).get(main)
            if isinstance(value, (int, float)) and math.isfinite(value):
                dev.append((step, 100.0 * value))
    if not dev:
        for epoch in run.record.get("epochs") or []:
            value = (epoch.get("metrics") or {}).get(main)
            if epoch.get("step") is not None and isinstance(value, (int, float)) and math.isfinite(value):
                dev.append((epoch["step"], 100.0 * value))
    return sorted(dict(loss).items()), sorted(dict(dev).items())


def comparison_row(
    row: Comparison, name: str, holm_p: float | None, method: str, budget: int | None | str = "", tip: str = ""
) -> str:
    """One row of a paired-comparison table; the pooled row ("all tasks") is about no one task."""
    interval, p = row.interval(), row.p_value()
    where = attrs(**filter_attrs(task=None if row.task == POOLED else row.task, method=method, budget=budget))
    return (
        f"<tr{where}>"
        f'<td{tip}>{escape(name)}</td><td>{escape(row.task)}</td><td class="num">{row.n}</td>'
        f'<td class="num">{"—" if row.mean is None else f"{row.mean:+.2f}"}</td>'
        f'<td class="num">{"—" if interval is None else f"[{interval[0]:+.2f}, {interval[1]:+.2f}]"}</td>'
        f'<td class="num">{"—" if p is None else f"{p:.3f}"}</td>'
        f'<td class="num">{"" if holm_p is None else f"{holm_p:.3f}"}</td>'
        f"<td>{escape(row.verdict() + (f' ({row.note})' if row.note else ''))}</td></tr>"
    )


def comparison_table(first: str, body: list[str]) -> str:
    return (
        '<div class="scroll"><table class="sortable"><thead><tr>'
        f'<th scope="col">{escape(first)}</th><th scope="col">task</th><th scope="col" class="num">n pairs</th>'
        '<th scope="col" class="num">mean Δ</th><th scope="col" class="num">95 % CI</th>'
        '<th scope="col" class="num">p</th><th scope="col" class="num">Holm p</th><th scope="col">verdict</th>'
        "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>"
    )


class Page:
    """The page of one results folder (``html()``); each section is a method, in page order."""

    def __init__(
        self,
        results_dir: Path,
        runs: list[RunRecord],
        settings: Settings,
        plan: AnalysisPlan | None = None,
        planned_seeds: dict[Key, set[int]] | None = None,
    ) -> None:
        self.results_dir, self.runs, self.settings, self.plan = results_dir, runs, settings, plan
        self.planned_seeds = planned_seeds
        self.groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        for run in runs:
            self.groups[(str(run.key[0]), str(run.key[1]))].append(run)
        self.group_order = sorted(
            self.groups, key=lambda g: (TASK_ORDER.index(g[0]) if g[0] in TASK_ORDER else len(TASK_ORDER), g)
        )
        self.value = metric()  # the main dev metric x100, from the epoch the settings pick

    # links and run descriptions

    def href(self, run: RunRecord) -> str:
        """The record's path relative to ``report/index.html``."""
        return Path(os.path.relpath(run.path, self.results_dir / "report")).as_posix()

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.results_dir)).as_posix()

    def run_tip(self, run: RunRecord, value: float | None = None) -> str:
        r = run.record
        lr = learning_rate(r)
        parts = [
            f"{cell_label(run.key)}, seed {r.get('seed')}",
            f"{r.get('main_metric')} {value:.2f}" if value is not None else f"status {r.get('status')}",
            f"lr {lr[1]:g} ({lr[0].split(' (')[0]})" if lr else "lr not recorded",
            self.rel(run.path),
        ]
        return "\n".join(parts)

    # the whole page

    def html(self) -> str:
        css = (ASSETS / "report.css").read_text()
        js = (ASSETS / "report.js").read_text()
        name = self.results_dir.resolve().name
        tasks = [g[0] for g in self.group_order]
        methods = sorted({run.key[2] for run in self.runs}, key=lambda m: _order_key((None, None, m, None, None)))
        budgets = sorted({run.key[4] for run in self.runs if run.key[4] is not None})
        body = [
            self.header(name, list(dict.fromkeys(tasks)), methods, budgets),
            '<main id="top">',
            self.status_section(),
            self.tables_section(),
            *(self.group_section(task, backbone) for task, backbone in self.group_order),
            self.comparisons_section(),
            self.runs_section(),
            self.provenance_section(),
            "</main>",
        ]
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>dora-bench report: {escape(name)}</title>\n"
            f"<style>\n{css}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + f"\n<script>\n{js}</script>\n</body>\n</html>\n"
        )

    def header(self, name: str, tasks: list[str], methods: list[str], budgets: list[int]) -> str:
        complete = sum(run.complete for run in self.runs)
        toc = [("status", "What ran"), ("tables", "Tables")]
        toc += [(f"g-{task}-{backbone}", f"{task} · {backbone}") for task, backbone in self.group_order]
        toc += [("comparisons", "Paired comparisons"), ("runs", "Every run"), ("provenance", "Provenance")]

        def select(label: str, key: str, options: list[tuple[str, str]]) -> str:
            items = "".join(f'<option value="{escape(v)}">{escape(text)}</option>' for v, text in options)
            return f'<label>{label} <select data-filter="{key}"><option value="">all</option>{items}</select></label>'

        return (
            "<header>\n"
            f"<h1>dora-bench report: {escape(name)}</h1>\n"
            f'<p class="lede">{len(self.runs)} run records ({complete} complete) under <code>runs/</code>, '
            f"{len(self.groups)} task × backbone pairs. Numbers: {escape(self.settings.describe())}. "
            "Written by <code>dora-bench-report</code> from the records alone; every number here is also in "
            "<code>tables/*.csv</code> (<code>dora-bench-tables</code>, same settings).</p>\n"
            '<nav><ul class="toc">'
            + "".join(f'<li><a href="#{escape(anchor)}">{escape(text)}</a></li>' for anchor, text in toc)
            + "</ul></nav>\n</header>\n"
            '<form class="filters" id="filters" hidden>'
            + select("task", "task", [(t, t) for t in tasks])
            + select("method", "method", [(m, method_name(m)) for m in methods])
            + select("budget", "budget", [(str(b), f"bT = {b}") for b in budgets])
            + '<span class="hint">methods without a budget (Full FT, BitFit) stay under every budget</span>'
            "</form>"
        )

    # -- what ran ---------------------------------------------------------------------------

    def expected_seeds(self, key: Key) -> int:
        """How many complete seeds the cell should have: its stages' plan, or ``settings.seeds`` without one."""
        if self.planned_seeds is None:
            return self.settings.seeds
        return len(self.planned_seeds.get(key, ()))

    def status_section(self) -> str:
        statuses = Counter(str(run.record.get("status")) for run in self.runs)
        out = [
            '<section id="status"><h2>What ran, and what did not</h2>',
            "<p>Records by status: "
            + ", ".join(f"<b>{n}</b> {escape(s)}" for s, n in sorted(statuses.items()))
            + ". A cell is one (task, backbone, method, variant, budget); "
            + (
                "each is expected to have the seeds its study's stages plan for it.</p>"
                if self.planned_seeds is not None
                else f"{self.settings.seeds} seeds are expected in each.</p>"
            ),
            "<ul>",
        ]
        for task, backbone in self.group_order:
            group = self.groups[(task, backbone)]
            cells = by_cell(group)
            counts = {key: (sum(r.complete for r in runs), self.expected_seeds(key)) for key, runs in cells.items()}
            short = [
                f"{cell_label(key)} ({done}/{expected})"
                for key, (done, expected) in sorted(counts.items(), key=lambda kv: _order_key(kv[0]))
                if done < expected
            ]
            missing = self.missing_cells(task, backbone)
            out.append(
                f"<li{attrs(**filter_attrs(task=task))}><b>{escape(task)} · {escape(backbone)}</b>: "
                f"{len(cells)} cells, {sum(r.complete for r in group)} complete runs"
                + (f"; short of seeds: {escape(', '.join(short))}" if short else "; every cell has all its seeds")
                + (f"; <b>not run</b>: {escape(', '.join(missing))}" if missing else "")
                + "</li>"
            )
        out.append("</ul>")
        failed = [run for run in self.runs if run.record.get("status") == "failed"]
        if failed:
            out.append("<h3>Failed runs</h3><ul>")
            for run in failed:
                error = str(run.record.get("error") or "no error recorded")
                out.append(
                    f'<li{attrs(**self.run_attrs(run))}><a href="{escape(self.href(run))}">'
                    f"{escape(self.rel(run.path))}</a>: {escape(error[:300])}</li>"
                )
            out.append("</ul>")
        out.append("</section>")
        return "\n".join(out)

    def missing_cells(self, task: str, backbone: str) -> list[str]:
        """The cells a study's stages plan here without a record; without a plan, the plain (method, budget)
        settings this backbone ran on some task but not on this one."""
        if self.planned_seeds is not None:
            ran = {run.key for run in self.runs}
            planned = [k for k in self.planned_seeds if k[0] == task and k[1] == backbone and k not in ran]
            return [cell_label(k) for k in sorted(planned, key=_order_key)]
        on_backbone = [run.key for run in self.runs if run.key[1] == backbone and run.key[3] is None]
        wanted = {(k[2], k[4]) for k in on_backbone}
        here = {(k[2], k[4]) for k in on_backbone if k[0] == task}
        return [
            cell_label((task, backbone, m, None, b))
            for m, b in sorted(wanted - here, key=lambda mb: _order_key((None, None, mb[0], None, mb[1])))
        ]

    def run_attrs(self, run: RunRecord) -> dict:
        return filter_attrs(task=run.key[0], method=run.key[2], budget=run.key[4])

    # -- tables -----------------------------------------------------------------------------

    def tables_section(self) -> str:
        out = [
            '<section id="tables"><h2>Tables</h2>',
            "<p>The paper's tables with its numbers and Δ = ours − paper under each row, as "
            "<code>dora-bench-tables</code> writes them; click a column header to sort. "
            "Tables without any record are listed, not drawn.</p>",
        ]
        empty = []
        for table in report_tables(self.runs, self.settings):
            if all(cell.state() == "missing" for row in table.cells for cell in row):
                empty.append(table.heading())
                continue
            out.append(self.table_html(table))
        if empty:
            out.append(f'<p class="note">No records for: {escape("; ".join(empty))}.</p>')
        out.append("</section>")
        return "\n".join(out)

    def table_html(self, table: Any) -> str:
        """A ``render.Table`` as HTML: a ``<tbody>`` per row (ours, then the paper's with Δ), so that
        sorting keeps the pairs; every number cell names its (table, row, column) as the CSV does."""
        stat = table.settings.stat
        header = [f'<th scope="col">{escape(h)}</th>' for h in table.row_header]
        if table.params:
            header.append('<th scope="col" class="num">Params</th>')
        header += [
            f'<th scope="col" class="num"{attrs(data_task=c.task or None)}>{escape(c.label)}</th>'
            for c in table.columns
        ]
        if table.average:
            header.append(f'<th scope="col" class="num">{escape(table.average)}</th>')
        bold = [table.column_bold(j) for j in range(len(table.columns))]
        averages = [table.average_of(i) for i in range(len(table.rows))] if table.average else []
        average_bold = table.bold(averages) if table.average else []
        refused = table.refused_cells()
        paired = any(row.paper for row in table.rows)
        delta = table.compares_to_reference
        bodies = []
        for i, (row, cells) in enumerate(zip(table.rows, table.cells)):
            row_name = " ".join(row.labels)
            task = row.labels[0] if table.name == "all_cells" else None
            ours = [
                f'<th scope="row">{escape(label)}</th>' if k == 0 else f"<td>{escape(label)}</td>"
                for k, label in enumerate(row.labels)
            ]
            reference = f"{table.reference} (Δ)" if delta else f"{table.reference}, {table.reference_backbone}"
            theirs = [f'<td class="ref">{escape(reference)}</td>'] + ["<td></td>"] * (len(row.labels) - 1)
            if table.params:
                mine, paper_params = table.params[i]
                ours.append(
                    f'<td class="num" data-sort="{mine or ""}">{"—" if mine is None else f"{mine / 1e6:.2f}M"}</td>'
                )
                theirs.append(f'<td class="num ref">{escape(paper_params or "")}</td>')
            for j, (column, cell) in enumerate(zip(table.columns, cells)):
                ours.append(self.cell_html(table, i, j, bold[j][i], refused))
                paper = table.paper_value(row, column.paper_key)
                center = cell.center(stat)
                ref = f"{table.name} | {row_name} | {column.label}"  # the CSV line whose paper and diff it shows
                theirs.append(
                    f'<td class="num ref"{attrs(data_task=column.task or None, data_ref=ref)}>'
                    + _paper_text(center if delta else None, paper, column.digits)
                    + "</td>"
                )
            if table.average:
                value, full = averages[i]
                text = "—" if value is None else f"{value:.2f}" + ("" if full else "‡")
                ours.append(
                    f'<td class="num{" best" if average_bold[i] else ""}" data-sort="{"" if value is None else value}">'
                    f"{escape(text)}</td>"
                )
                theirs.append(
                    '<td class="num'
                    f' ref">{_paper_text(value if delta else None, table.paper_value(row, table.average))}</td>'
                )
            lines = [f'<tr class="ours">{"".join(ours)}</tr>']
            if paired:
                lines.append(f'<tr class="paper">{"".join(theirs)}</tr>')
            bodies.append(
                f"<tbody{attrs(data_row=row_name, **filter_attrs(task=task, method=row.method, budget=row.budget))}>"
                + "".join(lines)
                + "</tbody>"
            )
        notes = table.note_texts()
        for k, (i, j) in enumerate(refused):
            links = ", ".join(
                f'<a href="{escape(Path(os.path.relpath(p, self.results_dir / "report")).as_posix())}">'
                f"{escape(self.rel(Path(p)))}</a>"
                for p in table.cells[i][j].refused_records
            )
            notes[k] = escape(notes[k]) + f": {links}"
        notes = [n if k < len(refused) else escape(n) for k, n in enumerate(notes)]
        return (
            f'<figure class="table" id="{escape(table.name)}"{attrs(data_table=table.name)}>'
            f"<figcaption><b>{escape(table.heading())}</b>. {escape(table.caption)}</figcaption>"  # caption: backbone
            f'<div class="scroll"><table class="sortable"><thead><tr>{"".join(header)}</tr></thead>'
            + "".join(bodies)
            + "</table></div>"
            + ('<ul class="notes">' + "".join(f"<li>{n}</li>" for n in notes) + "</ul>" if notes else "")
            + "</figure>"
        )

    def cell_html(self, table: Any, i: int, j: int, bold: bool, refused: list[tuple[int, int]]) -> str:
        """One number as the Markdown table prints it (center, ± spread, marks, remarks), the
        center in ``span.v``; refused cells and seeds without a number say why."""
        cell, column, row = table.cells[i][j], table.columns[j], table.rows[i]
        stat, digits = table.settings.stat, column.digits
        state = cell.state()
        key = attrs(data_table=table.name, data_row=" ".join(row.labels), data_col=column.label, data_state=state)
        task = attrs(data_task=column.task or None)
        center = cell.center(stat)
        sort = "" if center is None else f"{center}"
        if state == "missing":
            return f'<td class="num missing"{key}{task} data-sort="">—</td>'
        if state in ("failed", "unfinished", "ineligible"):
            seeds = {"failed": cell.failed, "unfinished": cell.unfinished, "ineligible": cell.ineligible}[state]
            text = f"{state} ({len(seeds)})" + (INELIGIBLE_MARK if state == "ineligible" else "")
            why = f"seeds {' '.join(map(str, sorted(seeds)))}"
            return f'<td class="num {state}"{key}{task} data-sort="" title="{escape(why)}">{escape(text)}</td>'
        if state == "refused":
            k = refused.index((i, j)) + 1
            return (
                f'<td class="num refused"{key}{task} data-sort="" title="{escape(cell.refused or "")}">'
                f"refused [{k}]</td>"
            )
        if state == "no value":
            return f'<td class="num"{key}{task} data-sort="">n/a</td>'
        spread = cell.spread(stat)
        rest = INELIGIBLE_MARK if cell.ineligible else ""
        if spread is not None:
            rest += (
                f" ± {spread[0]:.{digits}f}" if stat == "mean" else f" [{spread[0]:.{digits}f}, {spread[1]:.{digits}f}]"
            )
        remarks = cell.remarks()
        seeds = ", ".join(f"seed {s}: {v:.{digits}f}" for s, v in sorted(cell.scores.items()))
        return (
            f'<td class="num{" best" if bold else ""}"{key}{task} data-sort="{sort}" title="{escape(seeds)}">'
            f'<span class="v">{center:.{digits}f}</span>{escape(rest)}'
            + (f' <small class="remark">({escape(", ".join(remarks))})</small>' if remarks else "")
            + "</td>"
        )

    # -- one task and backbone --------------------------------------------------------------

    def group_section(self, task: str, backbone: str) -> str:
        group = self.groups[(task, backbone)]
        main = next((r.record.get("main_metric") for r in group if r.record.get("main_metric")), "main metric")
        anchor = f"g-{task}-{backbone}"
        parts = [
            f'<section id="{escape(anchor)}" class="group"{attrs(**filter_attrs(task=task))}>',
            f"<h2>{escape(task)} · {escape(backbone)}</h2>",
            f'<p class="note">Main metric: dev {escape(str(main))} x100, {escape(self.settings.describe())}.</p>',
            self.strip_plot(task, backbone, group, str(main)),
            self.pareto_plots(task, backbone, group, str(main)),
            self.curves(task, backbone, group, str(main)),
            self.allocation_figures(task, backbone, group),
            allocation_diagnostics_section(group, task, backbone),
            "</section>",
        ]
        return "\n".join(p for p in parts if p)

    def cells_here(self, group: list[RunRecord], plain_only: bool = False) -> list[tuple[Key, list[RunRecord]]]:
        cells = by_cell(group)
        return sorted(
            ((k, v) for k, v in cells.items() if not plain_only or k[3] is None), key=lambda kv: _order_key(kv[0])
        )

    def strip_plot(self, task: str, backbone: str, group: list[RunRecord], main: str) -> str:
        """Every seed beside its cell's mean (the tables' numbers: ``cells.aggregate``)."""
        cells = []
        for key, runs in self.cells_here(group):
            cell = aggregate(runs, self.value, self.settings)
            points = []
            for run in sorted(runs, key=lambda r: r.record.get("seed", 0)):
                seed = run.record.get("seed")
                if seed in cell.scores:
                    points.append((run, cell.scores[seed], seed in cell.ineligible))
                elif seed in cell.ineligible and (v := self.value(run.record, self.settings)) is not None:
                    points.append((run, v, True))  # left out of the statistic: drawn hollow
            cells.append((key, cell, points))
        values = [v for _, _, points in cells for _, v, _ in points]
        if not values:
            return '<p class="note">No scored run yet.</p>'
        n = len(cells)
        longest = 24 + 8 * max(len(cell_label(key)) for key, _, _ in cells)  # room for the slanted labels
        ax = Axes(
            (0, n),
            (min(values), max(values)),
            width=max(480, 52 * n + 70),
            height=230 + longest,
            top=26,
            bottom=longest,
        )
        ax.x_range = (0, n)  # categories, not data: no padding
        ax.frame("", f"dev {main} x100", x_ticks=[])
        previous_budget: Any = "start"
        for index, (key, cell, points) in enumerate(cells):
            x = ax.left + (index + 0.5) * (ax.width - ax.left - ax.right) / n
            method, budget = key[2], key[4]
            fa = filter_attrs(task=task, method=method, budget=budget)
            if budget != previous_budget and index:
                edge = ax.left + index * (ax.width - ax.left - ax.right) / n
                ax.add(
                    f'<line class="sep" x1="{edge:.1f}" x2="{edge:.1f}" y1="{ax.top}" y2="{ax.height - ax.bottom}"/>'
                )
            previous_budget = budget
            group_parts = [f"<g{attrs(class_='cat', **fa)}>"]
            center = cell.center(self.settings.stat)
            if center is not None:
                y = ax.y(center)
                group_parts.append(
                    f'<line class="mean" x1="{x - 16:.1f}" x2="{x + 16:.1f}" y1="{y:.1f}" y2="{y:.1f}">'
                    f"<title>{escape(cell_label(key))}: {self.settings.stat}"
                    f" {center:.2f} over n={cell.n}</title></line>"
                )
            for k, (run, v, hollow) in enumerate(points):
                offset = (k - (len(points) - 1) / 2) * 5
                group_parts.append(
                    svgplot.point(
                        x + offset,
                        ax.y(v),
                        self.run_tip(run, v) + ("\nno eligible epoch: left out" if hollow else ""),
                        self.href(run),
                        class_="seed hollow" if hollow else "seed",
                        fill="none" if hollow else colour(method),
                        stroke=colour(method),
                        data_seed=run.record.get("seed"),
                        data_value=f"{v:.4f}",
                        **fa,
                    )
                )
            label_y = ax.height - ax.bottom + 10
            group_parts.append(
                f'<text class="tick" transform="translate({x + 3:.1f} {label_y:.1f}) rotate(-50)" text-anchor="end">'
                f"{escape(cell_label(key))}</text>"
                + (
                    f'<text class="n refused" x="{x:.1f}" y="{ax.top - 8:.1f}" text-anchor="middle">refused'
                    f"<title>not pooled: {escape(cell.refused)}</title></text>"
                    if cell.refused
                    else f'<text class="n" x="{x:.1f}" y="{ax.top - 8:.1f}" text-anchor="middle">n={cell.n}</text>'
                )
            )
            group_parts.append("</g>")
            ax.add("".join(group_parts))
        svg = ax.svg(f"Every seed, {task} {backbone}", data_plot="strip", data_task=task)
        return (
            f'<figure class="plot"><figcaption><b>Every seed.</b> One dot per seed (hover: seed, lr, record; '
            f"click: the record), the bar at the cell's {self.settings.stat}, n = seeds in it; hollow: a seed "
            f"without an eligible epoch, left out; “refused”: seeds that may not be pooled (hover it for why; "
            f"the tables' notes list the records), drawn without a bar. Vertical lines separate budgets."
            f"</figcaption>{svg}</figure>"
        )

    def pareto_plots(self, task: str, backbone: str, group: list[RunRecord], main: str) -> str:
        """Cell centers against trainable parameters and against time per step (and peak GPU memory
        where recorded); the non-dominated cells (no other is better on both axes) are ringed and joined."""
        from dora_bench.report.tables import median_params

        rows = []
        for key, runs in self.cells_here(group, plain_only=True):
            cell = aggregate(runs, self.value, self.settings)
            center = cell.center(self.settings.stat)
            if center is None:
                continue
            scored = [run for run in runs if run.record.get("seed") in cell.scores]
            speeds = [s for run in scored if (s := seconds_per_step(run.record)) is not None]
            memory = [m for run in scored if (m := peak_gpu_mib(run.record, self.settings)) is not None]
            rows.append(
                {
                    "key": key,
                    "score": center,
                    "n": cell.n,
                    "params": median_params(scored),
                    "speed": statistics.mean(speeds) if speeds else None,
                    "memory": statistics.mean(memory) if len(memory) == len(scored) else None,
                }
            )
        plots = [
            ("params", "trainable parameters (paper's count, median over seeds; log scale)", True, "{:,.0f}"),
            ("speed", "seconds per training step (mean over seeds; dev evaluation excluded)", False, "{:.3f} s"),
        ]
        if any(r["memory"] is not None for r in rows):
            plots.append(("memory", "peak GPU memory allocated in training (MiB)", False, "{:,.0f} MiB"))
        figures = []
        for axis, label, log, unit in plots:
            found = [r for r in rows if r[axis] is not None and (not log or r[axis] > 0)]
            if len(found) < 2:
                continue
            front = pareto_front([(r[axis], r["score"]) for r in found])
            ax = Axes(
                (min(r[axis] for r in found), max(r[axis] for r in found)),
                (min(r["score"] for r in found), max(r["score"] for r in found)),
                log_x=log,
                height=320,
            )
            ax.frame(label, f"dev {main} x100 ({self.settings.stat})", x_digits=3)
            line = sorted((ax.x(found[k][axis]), ax.y(found[k]["score"])) for k in front)
            ax.add(svgplot.polyline(line, class_="front"))
            for k, r in enumerate(found):
                key = r["key"]
                on_front = k in front
                tip = f"{cell_label(key)}: {main} {r['score']:.2f} (n={r['n']}), {axis} {unit.format(r[axis])}" + (
                    "\nnon-dominated" if on_front else ""
                )
                x, y = ax.x(r[axis]), ax.y(r["score"])
                fa = filter_attrs(task=task, method=key[2], budget=key[4])
                element = svgplot.point(
                    x, y, tip, r=5, class_="cellpt front-pt" if on_front else "cellpt", fill=colour(key[2]), **fa
                )
                if on_front:
                    right = x > 0.7 * ax.width  # labels near the right edge go to the left of their point
                    anchor = "end" if right else "start"
                    where = f'x="{x - 7 if right else x + 7:.1f}" y="{y - 6:.1f}" text-anchor="{anchor}"'
                    element += f'<text class="pt-label"{attrs(**fa)} {where}>{escape(cell_label(key))}</text>'
                ax.add(element)
            figures.append(
                ax.svg(f"{main} against {axis}, {task} {backbone}", data_plot=f"pareto-{axis}", data_task=task)
            )
        if not figures:
            return ""
        legend = self.legend(sorted({r["key"][2] for r in rows}, key=lambda m: _order_key((None, None, m, None, None))))
        return (
            '<figure class="plot"><figcaption><b>Score against cost.</b> One point per plain setting (method, '
            "budget; no ablation variants): its score as in the tables. Ringed, labelled and joined: the "
            "non-dominated settings (none scores higher at equal or lower cost). Times are wall-clock on the "
            f"machine each run used (see Provenance).</figcaption>{legend}"
            + "".join(f'<div class="half">{f}</div>' for f in figures)
            + "</figure>"
        )

    def legend(self, methods: Iterable[str], variants: dict[str, str] | None = None) -> str:
        items = [
            f'<li{attrs(data_method=m)}><span class="swatch"'
            f' style="background:{colour(m)}"></span>{escape(method_name(m))}</li>'
            for m in methods
        ]
        items += [
            f'<li><svg class="dash" viewBox="0 0 24 6" aria-hidden="true"><line x1="0" x2="24" y1="3" y2="3" '
            f'stroke-dasharray="{dash}"/></svg>{escape(variant)}</li>'
            for variant, dash in (variants or {}).items()
        ]
        return '<ul class="legend">' + "".join(items) + "</ul>"

    def curves(self, task: str, backbone: str, group: list[RunRecord], main: str) -> str:
        """Training loss and dev metric against step: per cell the mean over seeds at the steps all
        of them logged, the band their min to max; every run's own line behind a switch."""
        cells = [(key, [r for r in runs if r.complete]) for key, runs in self.cells_here(group)]
        cells = [(key, runs) for key, runs in cells if runs]
        if not cells:
            return ""
        data = {key: [(run, *read_curves(run)) for run in runs] for key, runs in cells}
        variants = sorted({key[3] for key, _ in cells if key[3]})
        dash = {None: "", **{v: DASHES[1 + k % (len(DASHES) - 1)] for k, v in enumerate(variants)}}
        budgets = sorted({key[4] for key, _ in cells if key[4] is not None}) or [None]
        blocks = []
        for budget in budgets:
            chosen = [(key, runs) for key, runs in cells if key[4] in (budget, None)]
            charts = []
            # one step axis for the loss and the dev chart, so an evaluation lines up with the loss beside it
            # (a study that evaluates once at the end would otherwise get an axis of one step)
            steps = [s for key, _ in chosen for entry in data[key] for which in (1, 2) for s, _ in entry[which]]
            for which, label in ((1, "training loss"), (2, f"dev {main} x100")):
                lines = [(key, [(entry[0], entry[which]) for entry in data[key] if entry[which]]) for key, _ in chosen]
                lines = [(key, per_run) for key, per_run in lines if per_run]
                if not lines:
                    continue
                ys = [v for _, per_run in lines for _, curve in per_run for _, v in curve]
                ax = Axes((min(steps), max(steps)), (min(ys), max(ys)), height=280)
                ax.frame("step", label)
                for key, per_run in lines:
                    fa = filter_attrs(task=task, method=key[2], budget=key[4])
                    style = {"stroke": colour(key[2]), "stroke_dasharray": dash.get(key[3]) or None}
                    mean, low, high = mean_curve([curve for _, curve in per_run])
                    parts = [f"<g{attrs(class_='series', **fa)}>"]
                    if len(per_run) > 1 and mean:
                        parts.append(
                            svgplot.band(
                                [(ax.x(s), ax.y(v)) for s, v in high],
                                [(ax.x(s), ax.y(v)) for s, v in low],
                                class_="band",
                                fill=colour(key[2]),
                            )
                        )
                    for run, curve in per_run:
                        parts.append(
                            svgplot.polyline(
                                [(ax.x(s), ax.y(v)) for s, v in curve],
                                class_="run",
                                data_seed=run.record.get("seed"),
                                **style,
                            ).replace("/>", f"><title>{escape(self.run_tip(run))}</title></polyline>")
                        )
                    if mean:
                        tip = f"{cell_label(key)}: mean of {len(per_run)} seed(s)"
                        parts.append(
                            svgplot.polyline(
                                [(ax.x(s), ax.y(v)) for s, v in mean], class_="mean-line", **style
                            ).replace("/>", f"><title>{escape(tip)}</title></polyline>")
                        )
                        if which == 2:  # evaluations are few (one per epoch): each one a dot
                            parts += [
                                svgplot.point(ax.x(s), ax.y(v), f"{tip}, step {s}: {v:.2f}", r=3, fill=colour(key[2]))
                                for s, v in mean
                            ]
                    parts.append("</g>")
                    ax.add("".join(parts))
                charts.append(
                    f'<div class="half">{ax.svg(f"{label}, {task} {backbone}", data_plot="curve", data_task=task)}'
                    "</div>"
                )
            if not charts:
                continue
            methods = list(dict.fromkeys(key[2] for key, _ in chosen))
            legend = self.legend(methods, {v: dash[v] for v in variants if any(k[3] == v for k, _ in chosen)})
            switch = f"runs-{task}-{backbone}-{budget}"
            blocks.append(
                f'<div class="curves"{attrs(**filter_attrs(task=task, budget=budget))}>'
                f"<h3>Learning curves{'' if budget is None else f', bT = {budget}'}"
                + ("" if budget is None else " (and methods without a budget)")
                + f"</h3>{legend}"
                '<label class="switch"><input type="checkbox"'
                f' id="{escape(switch)}"> every run (one line per seed)</label>' + "".join(charts) + "</div>"
            )
        return (
            '<figure class="plot"><figcaption><b>Learning curves</b> from each run\'s <code>metrics.jsonl</code>: '
            "the mean over seeds (line) and their range (band); dashed: ablation variants.</figcaption>"
            + "".join(blocks)
            + "</figure>"
        )

    def allocation_figures(self, task: str, backbone: str, group: list[RunRecord]) -> str:
        """Dynamic-rank methods: Figure 2 (final rank per layer x module type, mean over seeds, pooled
        as ``figures.pool_allocations`` pools it), the budget schedule and the score history."""
        from dora_bench.report.figures import ALLOCATING_METHODS, pool_allocations

        plain = [run for run in group if run.key[3] is None]
        pooled = pool_allocations(plain)
        if not pooled:
            return ""
        budgets = sorted({b for _, b in pooled})
        panels = []
        for budget in budgets:
            top = max(
                (
                    v
                    for (m, b), p in pooled.items()
                    if b == budget and p.grid
                    for row in p.grid["values"]
                    for v in row
                    if v is not None
                ),
                default=1,
            )
            for method in ALLOCATING_METHODS:
                if (method, budget) not in pooled:
                    continue
                panels.append(self.heatmap(task, method, budget, pooled[(method, budget)], top))
        schedule = self.schedules(task, backbone, [r for r in plain if r.complete and r.key[2] in ALLOCATING_METHODS])
        history = self.score_histories(task, [r for r in group if r.complete])
        return (
            '<figure class="plot"><figcaption><b>Rank allocation</b> (Figure 2): the final rank of every layer '
            "and module type, mean over the complete seeds of each plain setting; one colour scale per budget. "
            "Hover a square for its value.</figcaption>"
            + '<div class="panels">'
            + "".join(panels)
            + "</div>"
            + schedule
            + history
            + "</figure>"
        )

    def heatmap(self, task: str, method: str, budget: int, pooled: Any, top: float) -> str:
        name = f"{method_name(method)}, bT = {budget}"
        fa = attrs(**filter_attrs(task=task, method=method, budget=budget))
        if pooled.grid is None:
            why = f"records differ in {', '.join(pooled.differing)}" if pooled.differing else "a seed recorded twice"
            return f'<div class="panel"{fa}><p><b>{escape(name)}</b>: refused, not averaged: {escape(why)}.</p></div>'
        grid = pooled.grid
        rows, cols = grid["rows"], grid["columns"]
        size, left, top_margin = 30, 34, 22
        width, height = left + size * len(cols) + 4, top_margin + size * len(rows) + 4
        parts = []
        for j, column in enumerate(cols):
            parts.append(
                f'<text class="tick" x="{left + size * j + size / 2}"'
                f' y="{top_margin - 6}" text-anchor="middle">{escape(str(column))}</text>'
            )
        for i, row in enumerate(rows):
            parts.append(
                f'<text class="tick" x="{left - 4}" y="{top_margin + size * i + size / 2 + 3.5}"'
                f' text-anchor="end">{escape(str(row))}</text>'
            )
            for j, value in enumerate(grid["values"][i]):
                if value is None:
                    continue
                x, y = left + size * j, top_margin + size * i
                dark = value > 0.6 * top
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{size - 1}" height="{size - 1}"'
                    f' fill="{svgplot.heat_colour(value, top)}">'
                    f"<title>layer {escape(str(row))} {escape(str(column))}: rank {value:.2f}</title></rect>"
                    f'<text class="cellnum{" dark" if dark else ""}" x="{x + size / 2 - 0.5}" y="{y + size / 2 + 3.5}" '
                    f'text-anchor="middle">{value:.{0 if len(pooled.seeds) == 1 else 1}f}</text>'
                )
        which = f"seed {pooled.seeds[0]}" if len(pooled.seeds) == 1 else f"mean of {len(pooled.seeds)} seeds"
        title = f"{name} ({which})"
        svg = (
            f'<svg class="heat" viewBox="0 0 {width} {height}" role="img"'
            f' aria-label="{escape(title)}" data-plot="heatmap">'
            f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
        )
        return f'<div class="panel"{fa}><p><b>{escape(title)}</b> · layer × module type</p>{svg}</div>'

    def schedules(self, task: str, backbone: str, runs: list[RunRecord]) -> str:
        """Components kept (all modules) against the share of training done, one line per seed."""
        by_budget: dict[int, list[RunRecord]] = defaultdict(list)
        for run in runs:
            if (run.record.get("extras") or {}).get("budget_schedule"):
                by_budget[run.key[4]].append(run)
        charts = []
        for budget, chosen in sorted(by_budget.items()):
            lines = []
            for run in sorted(chosen, key=lambda r: (_order_key(r.key), r.record.get("seed", 0))):
                extras = run.record["extras"]
                points = sorted(extras["budget_schedule"], key=lambda p: p["step"])
                if points[0]["step"] > 0 and extras.get("init_budget") and extras.get("rank_allocation"):
                    points.insert(0, {"step": 0, "kept": len(extras["rank_allocation"]) * extras["init_budget"]})
                total = extras.get("total_steps") or points[-1]["step"] or 1
                curve = [(p["step"] / total, p["kept"]) for p in points] + [(1.0, points[-1]["kept"])]
                lines.append((run, curve))
            ys = [v for _, curve in lines for _, v in curve]
            ax = Axes((0, 1), (0, max(ys)), height=260)
            ax.x_range = (0, 1)
            ax.frame("training progress (step / total steps)", "components kept (all modules)")
            for run, curve in lines:
                stepped = []
                for k, (x, y) in enumerate(curve):
                    if k:
                        stepped.append((ax.x(x), ax.y(curve[k - 1][1])))
                    stepped.append((ax.x(x), ax.y(y)))
                ax.add(
                    svgplot.polyline(
                        stepped,
                        class_="sched",
                        stroke=colour(run.key[2]),
                        **filter_attrs(task=task, method=run.key[2], budget=budget),
                    ).replace("/>", f"><title>{escape(self.run_tip(run))}</title></polyline>")
                )
            charts.append(
                f'<div class="half"><p><b>Budget schedule, bT = {budget}</b> (one line per seed)</p>'
                f"{ax.svg(f'budget schedule {task} {backbone} b{budget}', data_plot='schedule', data_task=task)}</div>"
            )
        if not charts:
            return ""
        methods = sorted(
            {r.key[2] for rs in by_budget.values() for r in rs}, key=lambda m: _order_key((None, None, m, None, None))
        )
        return "<h3>Budget schedule</h3>" + self.legend(methods) + "".join(charts)

    def score_histories(self, task: str, runs: list[RunRecord]) -> str:
        """Components kept per module type at each re-ranking (``extras.score_history``), mean over seeds
        that share the steps of the lowest seed."""
        cells: dict[Key, list[RunRecord]] = defaultdict(list)
        for run in runs:
            if (run.record.get("extras") or {}).get("score_history"):
                cells[run.key].append(run)
        charts = []
        for key, chosen in sorted(cells.items(), key=lambda kv: _order_key(kv[0])):
            chosen = sorted(chosen, key=lambda r: r.record.get("seed", 0))
            first = chosen[0].record["extras"]["score_history"]
            same = [r for r in chosen if r.record["extras"]["score_history"].get("steps") == first.get("steps")]
            columns, steps = first.get("columns") or [], first.get("steps") or []
            kept = [r.record["extras"]["score_history"].get("kept_by_type") or [] for r in same]
            if not columns or not steps or any(len(k) != len(steps) for k in kept):
                continue
            mean = [[statistics.mean(k[i][j] for k in kept) for j in range(len(columns))] for i in range(len(steps))]
            ys = [v for row in mean for v in row]
            ax = Axes((min(steps), max(steps)), (min(ys), max(ys)), height=240)
            ax.frame("step", "components kept")
            for j, column in enumerate(columns):
                ax.add(
                    svgplot.polyline(
                        [(ax.x(s), ax.y(row[j])) for s, row in zip(steps, mean)],
                        class_="hist",
                        stroke=PALETTE[j % len(PALETTE)],
                    ).replace("/>", f"><title>{escape(str(column))}</title></polyline>")
                )
                if len(steps) < 4:  # a line of one point does not show: dots
                    ax.add(
                        "".join(
                            svgplot.point(
                                ax.x(s), ax.y(row[j]), f"{column}, step {s}: {row[j]:g}", r=3, fill=PALETTE[j]
                            )
                            for s, row in zip(steps, mean)
                        )
                    )
            legend = "".join(
                f'<li><span class="swatch" style="background:{PALETTE[j % len(PALETTE)]}"></span>{escape(str(c))}</li>'
                for j, c in enumerate(columns)
            )
            fa = attrs(**filter_attrs(task=task, method=key[2], budget=key[4]))
            charts.append(
                f'<div class="half"{fa}><p><b>{escape(cell_label(key))}</b> (mean of {len(same)} seed(s))</p>'
                f'<ul class="legend">{legend}</ul>'
                f"{ax.svg(f'score history {cell_label(key)} {task}', data_plot='history', data_task=task)}</div>"
            )
        if not charts:
            return ""
        return (
            '<h3>Score history per module type</h3><p class="note">Components kept in each module type at each '
            "re-ranking (<code>extras.score_history</code>).</p>" + "".join(charts)
        )

    # -- across tasks -----------------------------------------------------------------------

    def comparisons_section(self) -> str:
        """A study's declared comparisons where the page has its plan, else DoRA against each baseline."""
        if self.plan is not None and self.plan.comparisons:
            return self.declared_comparisons_section(self.plan)
        return self.baseline_comparisons_section()

    def declared_comparisons_section(self, plan: AnalysisPlan) -> str:
        """The comparisons the study file declared before its runs, family by family, with Holm's
        correction over each family's pooled rows: the numbers of ``analysis.md``."""
        out = [
            '<section id="comparisons"><h2>Paired comparisons, as the study declared them</h2>',
            f'<p class="note">Declared in the study file ({escape(plan.title)}) before its runs: each '
            "comparison's tasks, its family for Holm's correction, and whether it was chosen after seeing the "
            "data (post hoc). Per task: the mean per-seed difference (points x100) over the seeds both cells "
            "completed, a 95 % t-interval and the two-sided p. Pooled: the mean of the tasks' mean differences "
            "with a Welch-Satterthwaite t; Holm p: corrected over the family's pooled rows.</p>",
        ]
        for family, declared in by_family(declared_comparisons(plan, self.runs)).items():
            adjusted = holm_adjusted([d.pooled for d in declared])
            body = []
            for d, holm_p in zip(declared, adjusted):
                a, b = (plan.names.get(side.label, side.label) for side in (d.spec.a, d.spec.b))
                name = f"{a} − {b}" + d.budgets(plan) + (" (post hoc)" if d.spec.post_hoc else "")
                tip = f' title="post hoc: {escape(d.spec.post_hoc)}"' if d.spec.post_hoc else ""
                for row in d.rows:
                    pooled = row is d.pooled
                    body.append(
                        comparison_row(row, name, holm_p if pooled else None, d.spec.b.method, d.spec.b.budget, tip)
                    )
            n, tested = len(declared), sum(p is not None for p in adjusted)
            correction = f"Holm's correction over their {tested} pooled rows" if tested else "no correction"
            out.append(
                '<figure class="table">'
                f"<figcaption><b>Family {escape(family)}</b>: {n} comparison{'s' if n > 1 else ''}, "
                f"{correction}.</figcaption>" + comparison_table("a − b", body) + "</figure>"
            )
        out.append("</section>")
        return "\n".join(out)

    def baseline_comparisons_section(self) -> str:
        """DoRA − each baseline, paired over seeds per task, pooled over tasks, Holm over the pooled
        rows (``compare.compare``, as ``dora-bench-compare`` with its defaults)."""
        unsized = {"full_ft", "bitfit"}
        plain = [run for run in self.runs if run.key[3] is None and run.complete]
        out = ['<section id="comparisons"><h2>Paired comparisons: DoRA − each baseline</h2>']
        tables = 0
        for backbone in sorted({run.key[1] for run in plain}):
            here = [run for run in plain if run.key[1] == backbone]
            for budget in sorted({run.key[4] for run in here if run.key[2] == "dora"}):
                tasks = sorted(
                    {run.key[0] for run in here if run.key[2] == "dora" and run.key[4] == budget},
                    key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER),
                )
                baselines = [
                    m
                    for m in METHOD_ORDER
                    if m != "dora" and any(r.key[2] == m and r.key[4] in (budget, None) for r in here)
                ]
                results = [
                    compare(
                        self.runs, tasks, backbone, "dora", b, budget, None if b in unsized else budget, self.settings
                    )
                    for b in baselines
                ]
                if not results:
                    continue
                adjusted = holm_adjusted([rows[-1] for rows in results])
                body = [
                    comparison_row(row, method_name(b), holm_p if row is rows[-1] else None, b)
                    for b, rows, holm_p in zip(baselines, results, adjusted)
                    for row in rows
                ]
                tables += 1
                out.append(
                    f'<figure class="table"{attrs(data_budget=budget)}>'
                    f"<figcaption><b>{escape(backbone)}, bT = {budget}</b>: "
                    "mean per-seed difference (points x100) over the seeds both completed, 95 % t-interval, "
                    "two-sided p; the pooled row (all tasks) with Holm's correction over the baselines.</figcaption>"
                    + comparison_table("DoRA − ", body)
                    + "</figure>"
                )
        if not tables:
            out.append('<p class="note">No DoRA runs beside a baseline: nothing to compare.</p>')
        out.append("</section>")
        return "\n".join(out)

    def runs_section(self) -> str:
        """One row per record, linked to it: what every number above is made of."""
        rows = []
        for run in self.runs:
            r = run.record
            value = metric()(r, Settings(epoch="best")) if run.complete else None
            lr = learning_rate(r)
            params = trainable_params(r)
            speed = seconds_per_step(r)
            rows.append(
                f"<tr{attrs(data_path=self.rel(run.path), **self.run_attrs(run))}>"
                f'<td><a href="{escape(self.href(run))}">{escape(self.rel(run.path.parent).removeprefix("runs/"))}'
                "</a></td>"
                f"<td>{escape(str(r.get('seed')))}</td><td>{escape(str(r.get('status')))}</td>"
                '<td class="num"'
                f' data-sort="{"" if value is None else value}">{"" if value is None else f"{value:.2f}"}'
                + ("" if value is None or r.get("best", {}).get("countable", True) else INELIGIBLE_MARK)
                + "</td>"
                f'<td class="num" data-sort="{lr[1] if lr else ""}">{f"{lr[1]:g}" if lr else ""}</td>'
                f'<td class="num" data-sort="{params or ""}">{"" if params is None else f"{params:,}"}</td>'
                f'<td class="num" data-sort="{speed or ""}">{"" if speed is None else f"{speed:.3f}"}</td>'
                f"<td>{escape(str(r.get('device') or ''))}</td></tr>"
            )
        return (
            '<section id="runs"><h2>Every run</h2><details><summary>'
            f"{len(self.runs)} records: path (a link to its <code>record.json</code>), seed, status, best eligible "
            "epoch's main metric x100 (†: no eligible epoch), learning"
            " rate, trainable parameters, seconds per step, device"
            '</summary><div class="scroll"><table class="sortable runs"><thead><tr>'
            '<th scope="col">run</th><th scope="col">seed</th><th'
            ' scope="col">status</th><th scope="col" class="num">best</th>'
            '<th scope="col" class="num">lr</th><th scope="col" class="num">params</th>'
            '<th scope="col" class="num">s/step</th><th scope="col">device</th></tr></thead><tbody>'
            + "".join(rows)
            + "</tbody></table></div></details></section>"
        )

    def provenance_section(self) -> str:
        """What the runs were made with: commits, package versions, devices, precisions, data."""

        def counted(values: Iterable[Any]) -> str:
            found = Counter(str(v) for v in values if v not in (None, ""))
            if not found:
                return "not recorded"
            return ", ".join(f"<code>{escape(v)}</code> ({n})" for v, n in found.most_common())

        records = [run.record for run in self.runs]
        packages = sorted({p for r in records for p in (r.get("versions") or {})})
        items = [
            ("git commit", counted(r.get("git_commit") for r in records)),
            *((f"{p}", counted((r.get("versions") or {}).get(p) for r in records)) for p in packages),
            ("device", counted(r.get("device") for r in records)),
            ("precision", counted(r.get("precision") for r in records)),
        ]
        started = sorted(str(r["started_at"]) for r in records if r.get("started_at"))
        finished = sorted(str(r["finished_at"]) for r in records if r.get("finished_at"))
        if started:
            items.append(("runs started", f"{escape(started[0])} to {escape(started[-1])}"))
        if finished:
            items.append(("last finished", escape(finished[-1])))
        data_rows = []
        for task, backbone in self.group_order:
            group = [run.record for run in self.groups[(task, backbone)]]
            data_rows.append(
                f"<tr{attrs(**filter_attrs(task=task))}><td>{escape(task)}</td><td>{escape(backbone)}</td>"
                f"<td>{counted(r.get('data_fingerprint') for r in group)}</td>"
                f"<td>{counted(r.get('eval_examples') for r in group)}</td></tr>"
            )
        return (
            '<section id="provenance"><h2>Provenance</h2><p class="note">Each value with the number of records '
            "that say it (a commit ending in <code>-dirty</code> ran with uncommitted changes).</p><dl>"
            + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items)
            + '</dl><div class="scroll"><table><thead><tr><th scope="col">task</th><th scope="col">backbone</th>'
            '<th scope="col">data fingerprint (records)</th><th'
            ' scope="col">dev examples (records)</th></tr></thead><tbody>'
            + "".join(data_rows)
            + "</tbody></table></div></section>"
        )


def _paper_text(ours: float | None, paper: float | None, digits: int = 2) -> str:
    """The paper's number and, when ours is comparable, Δ = ours − paper (as ``render`` prints it)."""
    if paper is None:
        return ""
    return f"{paper:.{digits}f}" + (f" ({ours - paper:+.{digits}f})" if ours is not None else "")


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point dominates (lower or equal cost x, higher or equal score y,
    one of them strictly)."""
    front = set()
    for i, (x, y) in enumerate(points):
        if not any((u <= x and v >= y) and (u < x or v > y) for k, (u, v) in enumerate(points) if k != i):
            front.add(i)
    return front


def mean_curve(
    curves: list[list[tuple[int, float]]],
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
    """(mean, min, max) over the curves at the steps every one of them has."""
    if not curves:
        return [], [], []
    common = set.intersection(*(set(dict(c)) for c in curves))
    steps = sorted(common)
    values = [[dict(c)[s] for c in curves] for s in steps]
    return (
        [(s, statistics.mean(v)) for s, v in zip(steps, values)],
        [(s, min(v)) for s, v in zip(steps, values)],
        [(s, max(v)) for s, v in zip(steps, values)],
    )


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", help="the folder holding runs/ (default: %(default)s)")
    parser.add_argument(
        "--stat", default="mean", choices=("mean", "median"), help="as dora-bench-tables (default: %(default)s)"
    )
    parser.add_argument(
        "--epoch", default="best", choices=EPOCH_CHOICES, help="as dora-bench-tables (default: %(default)s)"
    )
    parser.add_argument("--count-ineligible", action="store_true", help="as dora-bench-tables")
    parser.add_argument("--seeds", type=int, default=5, help="complete seeds a cell should have (default: %(default)s)")
    parser.add_argument(
        "--study",
        metavar="FILE",
        help="a study file (conf/study/*.yaml): show the comparisons it declared, as `dora-bench-study FILE report`",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings(stat=args.stat, epoch=args.epoch, seeds=args.seeds, count_ineligible=args.count_ineligible)
        plan = plan_of_study_file(args.study) if args.study else None
        if plan is None and (Path(args.results_dir) / "analysis.md").is_file():
            print(
                f"dora-bench-report: note: {args.results_dir} holds a study's analysis.md; this page compares DoRA "
                "with each baseline instead of the study's declared comparisons (pass --study <its file> for those)",
                file=sys.stderr,
            )
        path = write_report(args.results_dir, settings, plan)
    except UserError as err:
        print(f"dora-bench-report: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"dora-bench-report: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
