"""``dora-bench-params``: every method's trainable parameters, counted as the paper counts them.

    dora-bench-params                                   # every backbone below, budgets 2 and 8
    dora-bench-params --backbone llama-3.2-1b --budgets 8

Builds each backbone once from its shipped config with random weights (offline, no
download), applies every registered method to a copy, and prints a Markdown table of
``paper_trainable_params`` beside the paper's column: Table 2 for roberta-base (a 2-label
classification head), Table 4 for bart-base (seq2seq LM); minilm (the real-weights study) has
no paper column, nor have Llama-3.2-1B and -3B (causal LM: the paper has no LLM), which are
built on the meta device: shapes without memory, so their 1.2B and 3.2B parameters cost
nothing. "% of model" is the share the DoRA-wd tables print. The paper's figures are rounded
to 0.01M, i.e. ±1.5% at 0.33M, so a small relative difference is rounding. The XSum
column repeats the RoBERTa figures (SPEC §2): on bart-base the real counts are larger.
Each method is sized by its ``conf/method/<name>.yaml`` at the given ``budget``, exactly
as a run would be.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from typing import Any

import yaml
from omegaconf import OmegaConf
from torch import nn

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.configs import conf_dir
from dora_bench.errors import UserError
from dora_bench.methods import AdaptTarget, Method, build_method, method_class, method_names
from dora_bench.report.cells import PAPER_DIR, PAPER_NAMES

CONF_DIR = conf_dir()

#: column -> (conf/backbone yaml, its overrides, model kind, the paper table compared with or None, device)
BACKBONES = {
    "roberta-base": ("roberta-base", {}, "sequence_classification", "table2_glue.csv", "cpu"),
    "bart-base": ("bart-base", {}, "seq2seq_lm", "table4_xsum.csv", "cpu"),
    "minilm": ("minilm", {}, "sequence_classification", None, "cpu"),  # the real-weights study's (results/minilm/)
    "llama-3.2-1b": ("llama", {"random_config": "llama-3.2-1b.json"}, "causal_lm", None, "meta"),
    "llama-3.2-3b": ("llama", {"random_config": "llama-3.2-3b.json"}, "causal_lm", None, "meta"),
}
#: supplies ${task.*} for method configs (pruning interval, DEM weight): schedules, never sizes
CONTEXT_TASK = "rte"


def paper_column(table: str) -> dict[tuple[str, int | None], float]:
    """``{(paper method name, budget or None): parameters}`` from a paper CSV ("0.33M" -> 330000.0)."""
    column = {}
    with open(PAPER_DIR / table, newline="") as handle:
        for row in csv.DictReader(handle):
            budget = int(row["budget"]) if row["budget"] else None
            column[(row["method"], budget)] = float(row["trainable_params"].removesuffix("M")) * 1e6
    return column


def method_config(name: str, budget: int) -> dict:
    """``conf/method/<name>.yaml`` resolved at ``budget``, as Hydra would resolve it for a run."""
    path = CONF_DIR / "method" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    task = yaml.safe_load((CONF_DIR / "task" / f"{CONTEXT_TASK}.yaml").read_text())
    cfg = OmegaConf.create({"budget": budget, "seed": 0, "task": task, "method": yaml.safe_load(path.read_text())})
    return OmegaConf.to_container(cfg.method, resolve=True)


def count(method: Method, base: nn.Module, target: AdaptTarget) -> tuple[int, int]:
    """``(paper count, everything that trains)`` for ``method`` applied to a copy of ``base``."""
    model = method.apply(copy.deepcopy(base), target)
    try:
        paper = method.paper_trainable_params(model, target)
    except RuntimeError:  # a method that can only count once it knows T
        method.on_train_begin(model, 1000)
        paper = method.paper_trainable_params(model, target)
    return int(paper), sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_base(backbone: str) -> tuple[nn.Module, Any]:
    """The random-init backbone of a column (on the meta device for the LLMs) and its adapt target."""
    yaml_name, overrides, model_kind, _, device = BACKBONES[backbone]
    raw = {**yaml.safe_load((CONF_DIR / "backbone" / f"{yaml_name}.yaml").read_text()), **overrides}
    backbone_cfg = BackboneConfig.from_dict({**raw, "name": backbone, "init": "random", "dtype": "fp32"})
    base = load_model(backbone_cfg, model_kind, num_labels=2, device=device)
    return base, adapt_target(backbone_cfg, model_kind)


def table(backbone: str, budgets: list[int]) -> str:
    """The Markdown table for one backbone."""
    _, _, model_kind, paper_table, device = BACKBONES[backbone]
    base, target = load_base(backbone)
    total = sum(p.numel() for p in base.parameters())
    paper = paper_column(paper_table) if paper_table else {}
    where = f"paper column: {paper_table}" if paper_table else "no paper column: the paper has no run on it"
    lines = [
        f"### {backbone} ({model_kind}, {total:,} parameters{', meta device' if device == 'meta' else ''}; {where})",
        "",
        "| method | budget | ours (paper's way) | % of model | paper | ours / paper - 1 | trains (with head) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in method_names():
        cls = method_class(name)
        for budget in budgets if cls.uses_budget else [None]:
            label = "-" if budget is None else str(budget)
            try:
                method = build_method(method_config(name, budget if budget is not None else budgets[0]))
                ours, trains = count(method, base, target)
            except (UserError, FileNotFoundError) as err:
                lines.append(f"| {name} | {label} | n/a: {err} | | | | |")
                continue
            reference = paper.get((PAPER_NAMES.get(name, ""), budget))
            shown = f"{reference / 1e6:.2f}M" if reference else "-"
            diff = f"{ours / reference - 1:+.1%}" if reference else "-"
            lines.append(f"| {name} | {label} | {ours:,} | {ours / total:.3%} | {shown} | {diff} | {trains:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dora-bench-params", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", choices=sorted(BACKBONES), action="append", help="backbone to count on (repeatable; default: all)"
    )
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=[2, 8], help="budgets to size methods at (default: 2 8)"
    )
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.budgets):
        parser.error("--budgets must be whole numbers >= 1, e.g. --budgets 2 8")
    start = time.perf_counter()
    for backbone in args.backbone or list(BACKBONES):
        print(table(backbone, args.budgets), end="\n\n")
    print(f"(random-init backbones, counted in {time.perf_counter() - start:.0f} s; the paper rounds to 0.01M)")


if __name__ == "__main__":
    main()
