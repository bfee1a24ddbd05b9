"""`make demo`: the whole pipeline on the embedded default, offline, on a CPU, in a few minutes.

Every registered method trains on the generated demo task (`task=demo`: a toy sentiment
task the 2-layer byte-level `backbone=tiny` learns in a couple of epochs) with 2 seeds,
through the same `dora-bench -m` sweep a paper run uses; then the records become the
summary table that `make tables` would write.

    python scripts/demo.py [--results-dir results/demo] [--seeds 0,1] [--methods lora,dora]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    from dora_bench.methods import method_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results/demo", help="where the records go (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(method_names()), help="comma-separated methods (default: all)")
    parser.add_argument("--budget", type=int, default=2, help="budget= for every method (default: %(default)s)")
    # The methods' own rates are published for roberta-base; the 32-wide random model wants one larger rate.
    parser.add_argument(
        "--lr", type=float, default=5e-3, help="one learning rate for every method (default: %(default)s)"
    )
    args = parser.parse_args()

    sweep = [
        sys.executable,
        "-m",
        "dora_bench.run.cli",
        "-m",
        "task=demo",
        "backbone=tiny",
        f"method={args.methods}",
        f"seed={args.seeds}",
        f"budget={args.budget}",
        f"results_dir={args.results_dir}",
        f"trainer.lr={args.lr}",
        "trainer.progress=false",
        "trainer.cpu_threads=1",
    ]
    print("$ " + " ".join(sweep[2:]).replace("dora_bench.run.cli", "dora-bench", 1), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if subprocess.run(sweep, env=env).returncode != 0:
        print("demo: the sweep failed (see above); records written so far are kept", file=sys.stderr)
        return 1
    print_summary(Path(args.results_dir), seeds=len(args.seeds.split(",")))
    return 0


def print_summary(results_dir: Path, seeds: int) -> None:
    """The demo's cells as `make tables` renders them, plus size and time per method."""
    from dora_bench.report.tables import Settings, all_cells, load_runs, to_markdown

    runs = [run for run in load_runs(results_dir) if run.record.get("task") == "demo"]
    print("\n" + to_markdown(all_cells(runs, Settings(seeds=seeds))))
    print("| method | budget | trainable (paper count) | seconds per run | rank allocation |")
    print("|---|---|---|---|---|")
    seen = set()
    for run in runs:
        record = run.record
        if record["status"] != "complete" or (record["method"], record["budget"]) in seen:
            continue
        seen.add((record["method"], record["budget"]))
        seconds = sum(e["seconds"] + e.get("eval_seconds", 0) for e in record["epochs"])
        picture = run.path.parent / "rank_allocation.png"
        print(
            f"| {record['method']} | {record['budget'] if record['budget'] is not None else '-'} | "
            f"{record['trainable_params']['paper']:,} | {seconds:.1f} | {picture if picture.exists() else ''} |"
        )
    print(
        f"\nrecords: {results_dir}/runs/demo/ (one record.json per run; "
        f"`dora-bench-tables --results-dir {results_dir}` writes the tables and figures)"
    )


if __name__ == "__main__":
    sys.exit(main())
