"""A seeded sample of one module's mutants for `make mutate`, and the score of a sample (docs/mutation.md).

mutmut 3 writes every mutant's name into ``mutants/<path>.meta`` when it generates them (any
``mutmut run`` does, before testing). A whole module is hours on 2 cores; a sample is minutes:

    python scripts/mutant_sample.py --sample train > train.txt       # docs/mutation.md's sample of run/train.py
    mutmut run --max-children 1 $(cat train.txt)
    python scripts/mutant_sample.py --sample train --score train.txt

    python scripts/mutant_sample.py dora_bench/run/train.py --seed 22 --n 40 --only '*x_train_epoch__*'

The sample is ``random.Random(seed).sample`` of the sorted names that match ``--only`` (all of the
module's when omitted), itself sorted; every name when ``--n`` is at least their count. ``--sample``
names one of SAMPLES: the module, size and functions docs/mutation.md reports, with seed 22.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import random
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", None: "not run"}


def _functions(*names: str) -> list[str]:
    """Globs on mutant names for functions (``train_epoch``) and methods (``DoRA.extra_loss``, ``DoRALinear.*``)."""
    globs = []
    for name in names:
        cls, _, method = name.rpartition(".")
        globs.append(f"*ǁ{cls}ǁ{method}__*" if cls and method != "*" else f"*ǁ{cls}ǁ*" if cls else f"*x_{name}__*")
    return globs


# name: (module, sample size, functions that make a number; none: every mutant of the module)
SAMPLES: dict[str, tuple[str, int, list[str]]] = {
    "train": (
        "dora_bench/run/train.py",
        40,
        _functions(
            "train_epoch",
            "train_step",
            "accumulate",
            "report_step",
            "build_loader",
            "build_optimizer_and_schedule",
            "build_optimizer",
            "optimizer_params",
            "linear_warmup_decay",
            "select_epochs",
            "count_parameters",
        ),
    ),
    "data_parallel": (
        "dora_bench/run/data_parallel.py",
        100,
        _functions("check_batch", "loss_terms", "loss_shares", "mean_over_processes"),
    ),
    "train_step": ("dora_bench/run/train.py", 30, _functions("train_step", "accumulate", "report_step")),
    "sharding": ("dora_bench/run/sharding.py", 12, _functions("average_gradients", "whole", "like")),
    "efficiency": ("dora_bench/run/efficiency.py", 12, _functions("measure", "peak_rss_mib", "artifact_mib")),
    "dora": (
        "dora_bench/methods/dora.py",
        40,
        _functions(
            "training_phases",
            "is_pruning_step",
            "scheduled_pruned",
            "components_to_prune",
            "random_arm_seed",
            "importance_scores",
            "dem_variance_sum",
            "DoRALinear.*",
            "DoRA.extra_loss",
            "DoRA._update_scores",
            "DoRA._prune",
            "DoRA._apply_mask",
            "DoRA.first_countable_step",
            "DoRA.paper_trainable_params",
        ),
    ),
    "lora": (
        "dora_bench/methods/lora.py",
        20,
        _functions("LoRALinear.*", "merged_copy", "replace_linears", "target_linears"),
    ),
    "adalora": (
        "dora_bench/methods/adalora.py",
        20,
        _functions(
            "phases",
            "orthogonality_penalty",
            "AdaLoRA.extra_loss",
            "AdaLoRA.after_step",
            "AdaLoRA.on_train_begin",
            "AdaLoRA.first_countable_step",
            "AdaLoRA.final_ranks",
            "AdaLoRA.paper_trainable_params",
            "_cost",
        ),
    ),
    "adapters": (
        "dora_bench/methods/adapters.py",
        20,
        _functions(
            "Bottleneck.*", "HoulsbyOutput.*", "PfeifferOutput.*", "AdaptedProjection.*", "BottleneckAdapters.apply"
        ),
    ),
    "bitfit": ("dora_bench/methods/bitfit.py", 100, []),
    "dora_wd": ("dora_bench/methods/dora_wd.py", 20, []),
    "dropout": (
        "dora_bench/methods/shared/dropout.py",
        12,
        _functions("drop_input", "_cpu_mask", "InputDropout.forward"),
    ),
    "gsm8k": (
        "dora_bench/tasks/gsm8k.py",
        30,
        _functions("canonical_number", "final_number", "exact_match", "GSM8KTask.evaluate", "scored"),
    ),
    "squad": (
        "dora_bench/tasks/squad.py",
        30,
        _functions("best_answers", "_answer_tokens", "context_tokens", "build_features", "SquadTask.evaluate"),
    ),
    "commonsense": (
        "dora_bench/tasks/commonsense.py",
        30,
        _functions("parse_answer", "score", "CommonsenseTask.evaluate"),
    ),
    "summarization": (
        "dora_bench/tasks/summarization.py",
        20,
        _functions("SummarizationTask.evaluate", "SummarizationTask.generate"),
    ),
    "llm_adapters": (
        "dora_bench/tasks/llm_adapters.py",
        100,
        _functions("response_of", "commonsense_answer", "math_answer", "gold_number", "math_score"),
    ),
    "instruct": (
        "dora_bench/tasks/instruct.py",
        100,
        _functions("normalise", "exact_match", "InstructTask.evaluate"),
    ),
    "memory": (
        "dora_bench/run/memory.py",
        20,
        _functions("estimate", "activation_bytes_of", "line", "measured_line", "as_record", "gib"),
    ),
    "diagnostics": (
        "dora_bench/report/diagnostics.py",
        30,
        _functions(
            "mean_pairwise_correlation",
            "rank_spread",
            "random_allocations",
            "band",
            "spread_null",
            "agreement_null",
            "t_interval",
            "initial_rank",
            "grid_array",
            "diagnose",
            "table_rows",
            "AllocationDiagnostics.*",
        ),
    ),
    "study": (
        "dora_bench/report/study.py",
        20,
        _functions("pick_rates", "comparison_sections", "cell_text", "constant_scores", "learnt_nothing"),
    ),
}


def mutants_of(module: str) -> dict[str, int | None]:
    meta = Path("mutants") / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"]


def sample(names: list[str], only: list[str], n: int, seed: int) -> list[str]:
    pool = sorted(name for name in names if not only or any(fnmatch.fnmatch(name, p) for p in only))
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", help="a path under only_mutate, e.g. dora_bench/run/train.py")
    parser.add_argument("--sample", choices=sorted(SAMPLES), help="docs/mutation.md's sample (module, n, functions)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=[], help="globs on the mutant names (the functions)")
    parser.add_argument("--population", action="store_true", help="print how many mutants the sample is drawn from")
    parser.add_argument("--score", help="a file of mutant names: print each one's status and the count")
    args = parser.parse_args()
    if args.sample:
        args.module, args.n, args.only = SAMPLES[args.sample]
    if not args.module:
        parser.error("name a module or a --sample")
    codes = mutants_of(args.module)
    if args.population:
        print(len(sample(list(codes), args.only, len(codes), args.seed)), "of", len(codes))
    elif not args.score:
        print("\n".join(sample(list(codes), args.only, args.n, args.seed)))
    else:
        names = Path(args.score).read_text().split()
        status = {name: STATUS.get(codes[name], "other") for name in names}
        for name in names:
            if status[name] != "killed":
                print(f"{status[name]:9} {name}")
        counts = Counter(status.values())
        print(f"{counts['killed']}/{len(names)} killed", dict(counts))


if __name__ == "__main__":
    main()
