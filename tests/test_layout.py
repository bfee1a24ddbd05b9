"""The package's layout is its data flow: imports go one way, task data -> backbone + method ->
run -> record -> report, and inside the report side cells -> table_model -> render -> tables; a study
(``study/``) drives runs and reads reports, and nothing imports it."""

from __future__ import annotations

import ast

import pytest

from support import REPO

PACKAGE = REPO / "dora_bench"

#: module prefix -> what it must never import (the parts downstream of it)
DOWNSTREAM = {
    "dora_bench.tasks": ("dora_bench.methods", "dora_bench.run", "dora_bench.report", "dora_bench.backbones"),
    "dora_bench.methods": ("dora_bench.tasks", "dora_bench.run", "dora_bench.report"),
    "dora_bench.backbones": ("dora_bench.tasks", "dora_bench.run", "dora_bench.report"),
    "dora_bench.records": ("dora_bench.run", "dora_bench.report", "dora_bench.methods", "dora_bench.tasks"),
    "dora_bench.run": ("dora_bench.report", "dora_bench.study"),
    "dora_bench.report": ("dora_bench.run", "dora_bench.study"),
    "dora_bench.report.cells": (
        "dora_bench.report.table_model",
        "dora_bench.report.tables",
        "dora_bench.report.render",
        "dora_bench.report.figures",
    ),
    "dora_bench.report.table_model": (
        "dora_bench.report.tables",
        "dora_bench.report.render",
        "dora_bench.report.figures",
    ),
    "dora_bench.report.render": ("dora_bench.report.tables", "dora_bench.report.figures"),
    "dora_bench.report.figures": ("dora_bench.report.tables", "dora_bench.report.render", "dora_bench.report.llm"),
    # a leaf: it draws rank grids and imports nothing of the package (so the loop may draw a run's own)
    "dora_bench.report.heatmaps": ("dora_bench",),
}

#: The one report-side module the run side may call: the loop writes a run's rank heatmap beside
#: its record with it. It is a leaf (above), so no import runs back up through it.
ALLOWED = {"dora_bench.run.train": ("dora_bench.report.heatmaps",)}


def imports_of(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_go_one_way(name, path):
    banned = [b for prefix, bans in DOWNSTREAM.items() if name == prefix or name.startswith(prefix + ".") for b in bans]
    allowed = ALLOWED.get(name, ())
    wrong = sorted(
        i
        for i in imports_of(path)
        for b in banned
        if (i == b or i.startswith(b + ".")) and not any(i == a or i.startswith(a + ".") for a in allowed)
    )
    assert not wrong, f"{name} imports {wrong}: that is downstream of it"


def test_the_root_is_a_table_of_contents():
    """A handful of shared modules at the root; the rest lives in its side's folder. (``distributed``:
    the process group, a leaf that methods, tasks and the run side all consult.)"""
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert root == ["backbones", "configs", "distributed", "errors", "hub", "records"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == ["methods", "report", "run", "study", "tasks"]
