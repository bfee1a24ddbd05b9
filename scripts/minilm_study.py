"""The MiniLM study (issue 8): real pretrained weights on real GLUE, every method, on a CPU box.

    python scripts/minilm_study.py sweep --data-dir ../shared/data/glue_data   # experiment=minilm_lr_sweep
    python scripts/minilm_study.py edge --data-dir ...                         # one rate more where a pick is the top
    python scripts/minilm_study.py pick                                        # -> results/minilm/lr_picks.yaml
    python scripts/minilm_study.py main --data-dir ... --seeds 0,1,2           # experiment=minilm_glue
    python scripts/minilm_study.py dem --data-dir ... --seeds 0,1,2            # DoRA without DEM, STS-B + SST-2
    python scripts/minilm_study.py sweep --budget 2 --data-dir ...             # the rank methods' rates at budget 2
    python scripts/minilm_study.py retuned --data-dir ... --seeds 0,1,2        # budget 2 at those rates (b2rate)
    python scripts/minilm_study.py all --data-dir ...                          # the whole study, in priority order
    python scripts/minilm_study.py commit                                      # git-commit the complete records
    python scripts/minilm_study.py report                                      # -> results/minilm/analysis.md

Each stage starts ``--workers`` copies of the same ``dora-bench -m`` sweep: every run claims its folder,
so each is trained once, by whichever worker reaches it first, and a stage (or the whole study)
started again skips the complete records and goes on where it stopped. Logs: results/minilm/logs/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dora_bench, installed or not

RESULTS = Path("results/minilm")
SWEEP = RESULTS / "lr_sweep"
PICKS = RESULTS / "lr_picks.yaml"
SWEEP_TASKS = ("stsb",)  # CoLA was dropped from the sweep for compute (see minilm_lr_sweep.yaml)
LEVELS = 4  # rates per method in experiment=minilm_lr_sweep
METHODS = "dora,lora,adalora,houlsby,pfeiffer,bitfit,full_ft,dora_wd"
RANK_METHODS = "dora,lora,adalora"  # the methods run at budget 2 too
EDGE_LEVEL = "xxhigh"  # the rate level `edge` adds beyond the grid's top


def command_lines() -> list[bytes]:
    """The command lines of this machine's processes (Linux /proc; a process may end while read)."""
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines.append((proc / "cmdline").read_bytes())
        except OSError:
            continue
    return lines


def clear_left_claims() -> None:
    """Delete the run claims a session that ended left behind, when no training process runs here.

    The study's checkout predates claims that tell a reused pid from their writer (68b4f9a), and a
    session's end can leave claims whose pid is alive again as another process: every run behind
    one would be skipped as "being trained"."""
    if any(b"dora_bench.run.cli" in cmdline for cmdline in command_lines()):
        return
    left = list(RESULTS.glob("**/.claim"))
    for path in left:
        path.unlink(missing_ok=True)
    if left:
        print(f"[study] {len(left)} claims left by an ended session cleared", flush=True)


def run_workers(stage: str, overrides: list[str], workers: int) -> int:
    """``workers`` copies of one sweep, side by side; the exit status of the worst."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dora_bench.run.cli", "-m", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"[study] {stage}: {workers} x dora-bench -m {' '.join(overrides)}", flush=True)
    procs = []
    for k in range(workers):
        log = (logs / f"{stage}-w{k}.log").open("a")
        procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
        time.sleep(20)  # the second worker starts on the job after the first one's claim
    return max(p.wait() for p in procs)


def sweep(args) -> int:
    """The rate sweep at budget 8 (every method), or with ``--budget`` at that budget (the rank methods)."""
    if not args.budget:
        return run_workers("sweep", ["experiment=minilm_lr_sweep", f"task.data_dir={args.data_dir}"], args.workers)
    overrides = [f"budget={args.budget}", f"method={RANK_METHODS}"]
    return run_workers(
        f"sweep-b{args.budget}",
        ["experiment=minilm_lr_sweep", f"task.data_dir={args.data_dir}", *overrides],
        args.workers,
    )


def sweep_records(budget: int = 8) -> dict[str, dict[float, dict[str, float | None]]]:
    """{method: {rate: {task: main metric, None where the run failed}}} of the sweep's records at
    ``budget`` (and of the methods without one: Full FT, BitFit)."""
    from dora_bench.records import read_record

    found: dict[str, dict[float, dict[str, float | None]]] = {}
    for path in sorted(SWEEP.glob("runs/*/minilm/*/b*/seed*/record.json")):
        record = read_record(path)
        if record is None or record["budget"] not in (budget, None):
            continue
        lr = float(record["extras"].get("lr") or record["config"]["trainer"]["lr"])
        ok = record["status"] == "complete" and record["best"]
        value = record["best"]["metrics"][record["main_metric"]] if ok else None
        found.setdefault(record["method"], {}).setdefault(lr, {})[record["task"]] = value
    return found


def rate_means(rates: dict[float, dict[str, float | None]]) -> dict[float, float]:
    """{rate: mean main metric over SWEEP_TASKS} of the rates scored on every task, in rate order."""
    return {
        lr: statistics.mean(by_task[t] for t in SWEEP_TASKS)
        for lr, by_task in sorted(rates.items())
        if all(by_task.get(t) is not None for t in SWEEP_TASKS)
    }


def best_rate(means: dict[float, float]) -> float:
    return max(sorted(means), key=means.__getitem__)  # sorted: on a tie the lower rate wins


def edge(args) -> int:
    """One rate more (3x the highest tried) for each method whose best rate is the highest it tried: a
    pick at the grid's edge says only that the best rate is there or beyond. Repeat until none is."""
    overrides, methods = [], []
    for method, rates in sweep_records().items():
        means = rate_means(rates)
        if means and best_rate(means) == max(rates):
            methods.append(method)
            overrides.append(f"++lr_grid.{method}.{EDGE_LEVEL}={float(f'{3 * max(rates):.0e}')}")
    if not methods:
        print("[study] every pick lies inside the rates tried", flush=True)
        return 0
    return run_workers(
        "edge",
        [
            "experiment=minilm_lr_sweep",
            f"task.data_dir={args.data_dir}",
            f"method={','.join(methods)}",
            f"lr_level={EDGE_LEVEL}",
            *overrides,
        ],
        args.workers,
    )


def sweep_table(budget: int, methods: list[str]) -> tuple[dict[str, float], list[str], list[str]]:
    """({method: picked rate}, the sweep's table as markdown lines, what is missing) at ``budget``:
    per method the best mean main metric over the sweep's tasks (ties: the lower rate)."""
    scores = sweep_records(budget)
    picks: dict[str, float] = {}
    lines = [
        "| method | lr | " + " | ".join(SWEEP_TASKS) + " | mean | picked |",
        "|---|---:|" + "---:|" * (len(SWEEP_TASKS) + 2),
    ]
    missing = []
    for method in methods:
        rates = scores.get(method, {})
        means = rate_means(rates)
        missing += [
            f"{method} lr {lr:g}: " + ", ".join(t for t in SWEEP_TASKS if by_task.get(t) is None)
            for lr, by_task in sorted(rates.items())
            if lr not in means
        ]
        if len(means) < LEVELS:
            missing.append(f"{method}: {LEVELS - len(means)} of {LEVELS} rates without a complete score on every task")
        if means:
            picks[method] = best_rate(means)
        for lr, by_task in sorted(rates.items()):
            cells = " | ".join("failed" if by_task.get(t) is None else f"{100 * by_task[t]:.2f}" for t in SWEEP_TASKS)
            mean = f"{100 * means[lr]:.2f}" if lr in means else "-"
            edge = " (grid edge)" if means and picks.get(method) == lr and lr in (min(rates), max(rates)) else ""
            lines.append(
                f"| {method} | {lr:g} | {cells} | {mean} | {'**yes**' + edge if picks.get(method) == lr else ''} |"
            )
    return picks, lines, missing


def pick(args) -> int:
    """One rate per method from the budget-8 sweep -> lr_picks.yaml, which every main-grid run uses."""
    picks, lines, missing = sweep_table(8, METHODS.split(","))
    table = "\n".join(lines)
    print(table)
    if missing:
        print("[study] incomplete sweep:\n  " + "\n  ".join(missing))
    source = (
        f"minilm_lr_sweep: seed 100, best mean of {' + '.join(SWEEP_TASKS)} main metrics over {LEVELS} rates; {PICKS}"
    )
    PICKS.write_text(
        yaml.safe_dump(
            {"lr_picks": picks, "lr_picks_source": source, "complete": not missing, "sweep_table": table.splitlines()},
            sort_keys=False,
        )
    )
    print(f"[study] wrote {PICKS}")
    return 0 if picks and not missing else 1


def saved_picks() -> dict[str, float]:
    """{method: rate} of lr_picks.yaml (budget 8's picks); empty before `pick` has run."""
    return yaml.safe_load(PICKS.read_text())["lr_picks"] if PICKS.is_file() else {}


def picked_overrides() -> list[str]:
    if not PICKS.is_file():
        raise SystemExit(f"no {PICKS}: run `python scripts/minilm_study.py sweep` and `pick` first")
    saved = yaml.safe_load(PICKS.read_text())
    rates = ",".join(f"{method}:{lr}" for method, lr in saved["lr_picks"].items())
    return [f"lr_picks={{{rates}}}", f"lr_picks_source='{saved['lr_picks_source']}'"]


def main_grid(args) -> int:
    return run_workers(
        "main",
        [
            "experiment=minilm_glue",
            f"task.data_dir={args.data_dir}",
            f"seed={args.seeds}",
            f"task={args.tasks or 'rte,mrpc,stsb,cola,sst2'}",
            f"method={args.methods}",
            *([f"budget={args.budget}"] if args.budget else []),  # None: the experiment's budget 8
            *picked_overrides(),
        ],
        args.workers,
    )


def retuned(args) -> int:
    """Budget 2 at budget 2's own rates (variant ``b2rate``), for the rank methods whose best rate in the
    budget-2 sweep differs from budget 8's pick; beside the runs at budget 8's rates, not instead of them."""
    picks2, _, missing = sweep_table(2, RANK_METHODS.split(","))
    if missing or set(picks2) != set(RANK_METHODS.split(",")):
        print("[study] the budget-2 sweep is incomplete: no retuned runs yet", flush=True)
        return 1
    saved = saved_picks()
    if not saved:
        raise SystemExit(f"no {PICKS}: run `python scripts/minilm_study.py sweep` and `pick` first")
    methods = [m for m, lr in picks2.items() if lr != saved[m]]
    if not methods:
        print("[study] budget 2's rates are budget 8's: nothing to retune", flush=True)
        return 0
    rates = ",".join(f"{m}:{picks2[m] if m in methods else lr}" for m, lr in saved.items())
    source = f"minilm_lr_sweep at budget 2 ({', '.join(methods)}): seed 100, best of stsb over {LEVELS} rates"
    return run_workers(
        "retuned",
        [
            "experiment=minilm_glue",
            f"task.data_dir={args.data_dir}",
            f"seed={args.seeds}",
            f"task={args.tasks or 'stsb,sst2'}",
            f"method={','.join(methods)}",
            "budget=2",
            "variant=b2rate",
            f"lr_picks={{{rates}}}",
            f"lr_picks_source='{source}'",
        ],
        args.workers,
    )


def dem(args) -> int:
    """Table 5's shape: DoRA with gamma = 0 (variant nodem) beside the main grid's DoRA runs."""
    return run_workers(
        "dem",
        [
            "experiment=minilm_glue",
            f"task.data_dir={args.data_dir}",
            f"seed={args.seeds}",
            f"task={args.tasks or 'stsb,sst2'}",
            "method=dora",
            "method.dem_coef=0",
            "variant=nodem",
            *picked_overrides(),
        ],
        args.workers,
    )


def everything(args) -> int:
    """Priority order, so that a study cut short has the most useful part: three seeds of DoRA, LoRA
    and AdaLoRA (whose rates the sweep has) on STS-B and SST-2, the DEM ablation beside them, the rest
    of the sweep and its extension past a pick at the grid's top, the other methods' cells, the costly
    tasks for the headline methods, seeds 3 and 4 of the headline comparison on the tasks where every
    run learns (the paired tests gain most from them), the costly tasks for the other methods, seeds 3
    and 4 of the DEM ablation, the headline methods at budget 2 (Table 2's other budget; the rates
    picked at budget 8, as the paper keeps one rate per task; then the sweep at budget 2, to see whether
    those rates suit it), budget 2 again at budget 2's own rates where they differ, CoLA's first seed
    for the methods without one, CoLA's three seeds (after them every cell of the table holds three seeds),
    seeds 3 and 4 of the other methods on STS-B and SST-2 (so that those two tasks hold five seeds of
    every method), then seeds 3 and 4 on the costly tasks and on CoLA. CoLA is late because in 200
    steps at the picked rates DoRA, LoRA and AdaLoRA all ended as constant predictors (Matthews 0.0,
    seed 0): a cell that cannot tell methods apart is a poor use of the CPU."""
    cheap, costly, headline = "stsb,sst2", "mrpc,rte", "dora,lora,adalora"
    others = "houlsby,pfeiffer,bitfit,full_ft"
    everyone = f"{headline},{others}"
    plan = [
        (main_grid, {"seeds": "0,1,2", "tasks": cheap, "methods": headline}),
        (dem, {"seeds": "0,1,2", "tasks": cheap}),
        (sweep, {}),
        (edge, {}),
        (main_grid, {"seeds": "0,1,2", "tasks": cheap, "methods": others}),
        (main_grid, {"seeds": "0,1,2", "tasks": costly, "methods": headline}),
        (main_grid, {"seeds": "3,4", "tasks": cheap, "methods": headline}),
        (main_grid, {"seeds": "0,1,2", "tasks": costly, "methods": others}),
        (dem, {"seeds": "3,4", "tasks": cheap}),
        (main_grid, {"seeds": "0,1,2", "tasks": cheap, "methods": headline, "budget": 2}),
        (sweep, {"budget": 2}),
        (retuned, {"seeds": "0,1,2", "tasks": cheap}),
        (main_grid, {"seeds": "0", "tasks": "cola", "methods": others}),
        (main_grid, {"seeds": "0,1,2", "tasks": "cola", "methods": everyone}),
        (main_grid, {"seeds": "3,4", "tasks": cheap, "methods": others}),
        (main_grid, {"seeds": "3,4", "tasks": costly, "methods": everyone}),
        (main_grid, {"seeds": "3,4", "tasks": "cola", "methods": everyone}),
    ]
    clear_left_claims()
    status = 0
    for stage, settings in plan:
        if stage is not sweep and pick(args) != 0:
            print("[study] the sweep is incomplete; picks use the rates that finished", file=sys.stderr)
        vars(args).update({"budget": None, **settings})
        status = max(status, stage(args))
    return status


def commit(args) -> int:
    """Commit the folders of complete runs (records, metrics, heatmaps; .gitignore keeps adapters out)
    and the study's logs: a session's background work ends with it, so records are committed as they come."""
    from dora_bench.records import is_complete

    done = [p.parent for p in sorted(RESULTS.glob("**/runs/**/record.json")) if is_complete(p)]
    extra = [p for p in (RESULTS / "logs", PICKS, RESULTS / "study.log") if p.exists()]
    subprocess.run(["git", "add", "--", *map(str, done + extra)], check=True)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(RESULTS)]).returncode
    if staged == 0:
        print("[study] nothing new to commit")
        return 0
    message = f"MiniLM study: {len(done)} complete runs so far (records, metrics, heatmaps; logs)"
    # only these paths: an edited write-up or table under results/minilm is committed with its own message
    return subprocess.run(["git", "commit", "-q", "-m", message, "--", *map(str, done + extra)]).returncode


TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
# dev-set majority-class rates of the public GLUE files: RTE 146 of 277 not_entailment, MRPC 279 of 408
# paraphrases, SST-2 444 of 872 positive
MAJORITY = {"rte": 146 / 277, "mrpc": 279 / 408, "sst2": 444 / 872}
# the results table: Table 2's row order, the tasks where every run learns before the ones where few do
TABLE_ORDER = ("full_ft", "bitfit", "houlsby", "pfeiffer", "lora", "adalora", "dora", "dora_wd")
TABLE_TASKS = ("rte", "mrpc", "stsb", "sst2", "cola")
NAMES = {
    "full_ft": "Full FT",
    "bitfit": "BitFit",
    "houlsby": "Houlsby",
    "pfeiffer": "Pfeiffer",
    "lora": "LoRA",
    "adalora": "AdaLoRA",
    "dora": "DoRA",
    "dora_wd": "dora_wd (Liu et al.)",
}
TASK_HEADERS = {
    "rte": "RTE (acc.)",
    "mrpc": "MRPC (acc.)",
    "stsb": "STS-B (Pearson)",
    "sst2": "SST-2 (acc.)",
    "cola": "CoLA (Matthews)",
}


def relabelled(run, **fields):
    """The same run with some record fields replaced (a variant read as another method, or as the plain cell)."""
    return type(run)(run.path, {**run.record, **fields})


def cell_text(cell) -> str:
    """``mean ± std (n)`` of a cell's seeds, ``refused`` (records that must not be pooled) or ``—``."""
    if cell.refused:
        return "refused"
    values = list(cell.scores.values())
    if not values:
        return "—"
    std = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{std} ({len(values)})"


def learnt_nothing(task: str, value: float) -> bool:
    """A constant predictor as far as the main metric tells: exactly 0 (Matthews, Pearson) or the majority rate."""
    return value == 0 or (task in MAJORITY and abs(value - MAJORITY[task]) < 1e-9)


def report(args) -> int:
    """results/minilm/analysis.md from the records alone: the grid (mean ± std, n), DoRA against every
    baseline paired over seeds, the DEM ablation, the cells still missing, where the records came from."""
    from dora_bench.report.cells import Settings, aggregate, by_cell, load_runs, metric
    from dora_bench.report.compare import Pooled, compare, holm_table, to_markdown

    runs = load_runs(RESULTS)
    cells, settings = by_cell(runs), Settings(seeds=5)
    methods = METHODS.split(",")
    budget_of = lambda m: None if m in ("full_ft", "bitfit") else 8  # noqa: E731

    def cell(task, method, variant=None):
        return aggregate(cells.get((task, "minilm", method, variant, budget_of(method)), []), metric(), settings)

    rates = saved_picks()
    lines = [
        "# MiniLM study: what the records say (generated by `python scripts/minilm_study.py report`)",
        "",
        "Dev score x100 at each run's best eligible epoch, mean ± sample std over the complete seeds (n); "
        "lr: the rate the sweep picked. Budget 8; Full FT and BitFit have no budget. Table 2's row order; "
        "avg only where every task has a record.",
        "",
        "| method | lr | " + " | ".join(TASK_HEADERS[t] for t in TABLE_TASKS) + " | avg |",
        "|---|" + "---:|" * (len(TABLE_TASKS) + 2),
    ]
    missing = []
    for method in TABLE_ORDER:
        texts, means = [], []
        for task in TABLE_TASKS:
            c = cell(task, method)
            texts.append(cell_text(c))
            if c.scores and not c.refused:
                means.append(statistics.mean(c.scores.values()))
            if len(c.scores) < 5:
                missing.append(f"{task}/{method}: seeds {sorted(set(range(5)) - set(c.scores))}")
        avg = f"{statistics.mean(means):.2f}" if len(means) == len(TABLE_TASKS) else "—"
        rate = f"{rates[method]:.0e}".replace("e-0", "e-") if method in rates else ""
        lines.append(f"| {NAMES[method]} | {rate} | " + " | ".join(texts) + f" | {avg} |")
    majority = [f"{100 * MAJORITY[t]:.2f}" if t in MAJORITY else ("0" if t == "cola" else "") for t in TABLE_TASKS]
    lines.append("| majority class | | " + " | ".join(majority) + " | |")
    scored: dict[tuple[str, str], dict[int, float]] = {}  # (task, method) -> {seed: main metric}, budget 8
    for r in runs:
        if r.complete and r.key[3] is None and r.key[4] == budget_of(r.key[2]) and r.record.get("best"):
            scored.setdefault((r.key[0], r.key[2]), {})[r.record["seed"]] = r.record["best"]["metrics"].get(
                r.record["main_metric"]
            )
    flat = sorted(
        (t, m, seed) for (t, m), by_seed in scored.items() for seed, v in by_seed.items() if learnt_nothing(t, v)
    )
    learnt = [t for t in TASKS if any(k[0] == t for k in scored) and not any(f[0] == t for f in flat)]
    lines += [
        "",
        "## Runs that learnt nothing the metric can see",
        "",
        "A score of exactly 0 (Matthews, Pearson) or exactly the dev set's majority-class rate "
        f"({', '.join(f'{t} {100 * v:.2f}' for t, v in MAJORITY.items())}): a constant predictor, as far as "
        "the main metric tells. Such runs stay in the paired tests below (not learning within the "
        "budget of steps is an outcome), and the pooled rows are also given over the tasks where no run "
        f"of any method did this: {', '.join(learnt) or 'none'}.",
        "",
        *(f"- {t} / {m} / seed {seed}" for t, m, seed in flat),
        "",
        "## DoRA against each baseline, paired over seeds (Δ in points, 95 % t-interval)",
        "",
    ]
    not_run, summary, pooled_all, pooled_learnt = [], [], [], []
    for other in methods[1:]:
        tasks = [t for t in TASKS if (t, "dora") in scored and (t, other) in scored]
        # a task where every run of both methods scored 0 has nothing to compare
        constant = [t for t in tasks if all(v == 0 for m in ("dora", other) for v in scored[(t, m)].values())]
        tasks = [t for t in tasks if t not in constant]
        if not tasks:
            not_run.append(other)
            continue
        rows = compare(runs, tasks, "minilm", "dora", other, 8, budget_of(other), Settings(seeds=1))
        left_out = f" ({', '.join(constant)}: every run a constant predictor, left out)" if constant else ""
        lines += [f"DoRA − {other} on {', '.join(tasks)}{left_out}:", "", to_markdown(rows), ""]
        summary.append(rows[-1])
        pooled_all.append(rows[-1])
        parts = tuple(row for row in rows[-1].parts if row.task in learnt)
        if parts and len(parts) < len(rows[-1].parts):
            summary.append(Pooled("dora", other, parts, task=" + ".join(p.task for p in parts)))
            pooled_learnt.append(summary[-1])
    if not_run:
        lines += [f"No records yet for: {', '.join(not_run)}.", ""]
    if summary:
        lines += [
            "In one line each (the tasks' mean differences averaged, each task's own spread; "
            f"then over {' + '.join(learnt) or 'no task'} alone):",
            "",
            to_markdown(summary),
            "",
            *holm_table(pooled_all),
            *holm_table(pooled_learnt),
        ]
    lines += ["## DEM ablation (DoRA with γ = 0, `variant=nodem`), paired over seeds", ""]
    nodem = [r for r in runs if r.key[3] == "nodem"]
    renamed = [relabelled(r, method="dora_nodem", variant=None) for r in nodem]
    plain = [r for r in runs if r.key[2] == "dora" and r.key[3] is None]
    ablated = sorted({r.key[0] for r in nodem if r.complete})
    if ablated:
        rows = compare(plain + renamed, ablated, "minilm", "dora", "dora_nodem", 8, 8, Settings(seeds=1))
        lines += [to_markdown(rows), ""]
    else:
        lines += ["No `nodem` record yet.", ""]
    lines += budget_two_section(runs, cells)
    lines += allocation_section(runs)
    commits = sorted({r.record.get("git_commit") or "?" for r in runs})
    devices = sorted({r.record.get("device") or "?" for r in runs})
    complete = sum(r.complete for r in runs)
    lines += [
        "## Where the records came from",
        "",
        f"{complete} complete records ({len(runs)} in all) under results/minilm/runs; devices: "
        f"{', '.join(devices)}; code commits: {', '.join(commits)}.",
        "",
        "## Cells with fewer than 5 complete seeds",
        "",
        *(f"- {m}" for m in missing),
        "",
    ]
    out = RESULTS / "analysis.md"
    out.write_text("\n".join(lines))
    print(f"[study] wrote {out}")
    return 0


def budget_two_section(runs: list, cells: dict) -> list[str]:
    """Table 2's other budget for the rank methods: their b = 2 cells at budget 8's rates (the paper's one
    rate per task) and, where budget 2's sweep picked another rate, at that rate (variant ``b2rate``);
    DoRA against LoRA and AdaLoRA, paired over seeds, both ways."""
    from dora_bench.report.cells import Settings, aggregate, metric
    from dora_bench.report.compare import compare, to_markdown

    lines = ["## Budget 2 (the rank methods)", ""]
    methods = RANK_METHODS.split(",")
    tasks = [t for t in TASKS if any(cells.get((t, "minilm", m, None, 2)) for m in methods)]
    if not tasks:
        return [*lines, "No budget-2 record yet.", ""]
    lines += [
        "At budget 8's rates, and at budget 2's own (`b2rate`, only where budget 2's sweep below picked another):",
        "",
        "| method | rates | " + " | ".join(tasks) + " |",
        "|---|---|" + "---:|" * len(tasks),
    ]
    retuned = {m for m in methods if any(cells.get((t, "minilm", m, "b2rate", 2)) for t in tasks)}
    for method in methods:
        for variant in (None, "b2rate") if method in retuned else (None,):
            texts = [
                cell_text(aggregate(cells.get((task, "minilm", method, variant, 2), []), metric(), Settings(seeds=5)))
                for task in tasks
            ]
            label = "budget 2's" if variant else "budget 8's"
            lines.append(f"| {method} | {label} | " + " | ".join(texts) + " |")

    # each method's runs at budget 2's own rate: the b2rate variant where there is one
    own = [
        relabelled(r, variant=None) if r.key[3] == "b2rate" else r
        for r in runs
        if r.key[4] == 2 and (r.key[3] == "b2rate" or (r.key[3] is None and r.key[2] not in retuned))
    ]
    for label, pool in (("budget 8's rates", runs), ("each method's budget-2 rate", own)):
        if pool is own and not retuned:
            continue
        for other in methods[1:]:
            rows = compare(pool, tasks, "minilm", "dora", other, 2, 2, Settings(seeds=1))
            lines += ["", f"DoRA − {other} at budget 2, {label}:", "", to_markdown(rows)]
    picks, table, missing = sweep_table(2, list(methods))
    if picks:
        at_eight = saved_picks()
        lines += [
            "",
            f"The rate sweep at budget 2 ({' + '.join(SWEEP_TASKS)}, seed 100, the grid of budget 8's sweep): do "
            "the rates picked at budget 8 suit budget 2? (The scaling α / r of every rank method is 4x larger at "
            "r = 2 than at r = 8, so the same rate moves the update further.)",
            "",
            *table,
            "",
            "Best at budget 2 / picked at budget 8: "
            + ", ".join(f"{m} {picks[m]:g} / {at_eight.get(m, float('nan')):g}" for m in methods if m in picks)
            + (f" (incomplete: {'; '.join(missing)})" if missing else ""),
        ]
    return [*lines, ""]


def allocation_section(runs: list) -> list[str]:
    """Where DoRA and AdaLoRA put the budget (Figure 2's grid: the seeds' mean per task, then the tasks'
    mean, so every task weighs the same; runs that learnt nothing are left out), and the three tendencies
    the paper reads off its Figure 2 for roberta-base on SST-2, each as a number: in the middle layers Wq
    and Wk get more than Wv; early layers' Wo gets more than its layer's mean; the last layers' Wf2 gets
    very little."""
    lines = ["## Where the budget went (Figure 2's grid: mean over seeds per task, then over tasks)", ""]
    for method in ("dora", "adalora"):
        by_task: dict[str, list[dict]] = {}
        for r in runs:
            extras, best = r.record.get("extras") or {}, r.record.get("best")
            if (
                r.complete
                and r.key[2:] == (method, None, 8)
                and "rank_allocation_grid" in extras
                and best
                and not learnt_nothing(r.key[0], best["metrics"][r.record["main_metric"]])
            ):
                by_task.setdefault(r.key[0], []).append(extras["rank_allocation_grid"])
        if not by_task:
            lines += [f"{method}: no complete run that learnt its task yet.", ""]
            continue
        first = next(iter(by_task.values()))[0]
        rows, columns = first["rows"], first["columns"]

        def task_mean(grids: list[dict], i: int, j: int) -> float:
            return statistics.mean(g["values"][i][j] for g in grids)

        mean = [
            [statistics.mean(task_mean(grids, i, j) for grids in by_task.values()) for j in range(len(columns))]
            for i in range(len(rows))
        ]
        tasks = ", ".join(f"{t} {len(g)}" for t, g in sorted(by_task.items()))
        lines += [
            f"**{method}** (runs per task: {tasks}; budget 8, so 8.0 is an even spread)",
            "",
            "| layer | " + " | ".join(columns) + " | mean |",
            "|---|" + "---:|" * (len(columns) + 1),
            *(
                f"| {row} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {statistics.mean(values):.1f} |"
                for row, values in zip(rows, mean)
            ),
            "| mean | "
            + " | ".join(f"{statistics.mean(col):.1f}" for col in zip(*mean))
            + f" | {statistics.mean(v for r in mean for v in r):.1f} |",
            "",
            f"Cells from {min(map(min, mean)):.1f} to {max(map(max, mean)):.1f}.",
            "",
        ]
        col = {name: j for j, name in enumerate(columns)}
        third = max(1, len(rows) // 3)
        middle, early, late = range(third, len(rows) - third), range(third), range(len(rows) - third, len(rows))

        def avg(layers: range, names: tuple[str, ...], mean: list = mean, col: dict = col) -> float:
            return statistics.mean(mean[i][col[n]] for i in layers for n in names)

        def row_mean(layers: range, mean: list = mean) -> float:
            return statistics.mean(v for i in layers for v in mean[i])

        lines += [
            f"- middle layers ({middle.start}-{middle.stop - 1}): Wq, Wk {avg(middle, ('Wq', 'Wk')):.1f} "
            f"vs Wv {avg(middle, ('Wv',)):.1f} (paper: Wq, Wk more, Wv fewer)",
            f"- early layers (0-{early.stop - 1}): Wo {avg(early, ('Wo',)):.1f} vs their mean "
            f"{row_mean(early):.1f} (paper: early Wo more)",
            f"- last layers ({late.start}-{late.stop - 1}): Wf2 {avg(late, ('Wf2',)):.1f} vs their mean "
            f"{row_mean(late):.1f} (paper: very few)",
            "",
        ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("sweep", "edge", "pick", "main", "retuned", "dem", "all", "commit", "report"))
    parser.add_argument("--data-dir", default="../shared/data/glue_data", help="the GLUE TSV folder")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (default: one per core)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--tasks", help="main: rte,mrpc,stsb,cola,sst2 unless given; dem: stsb,sst2")
    parser.add_argument("--budget", type=int, help="main: the budget of the rank methods (default: the experiment's 8)")
    args = parser.parse_args()
    if args.stage not in ("pick", "commit", "report") and not Path(args.data_dir, "RTE", "dev.tsv").is_file():
        parser.error(f"--data-dir {args.data_dir} holds no RTE/dev.tsv: point it at the GLUE TSV folder")
    stages = {
        "sweep": sweep,
        "edge": edge,
        "pick": pick,
        "main": main_grid,
        "retuned": retuned,
        "dem": dem,
        "all": everything,
        "commit": commit,
        "report": report,
    }
    return stages[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
