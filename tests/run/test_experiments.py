"""Every experiment composes with the real configs and sweeps the paper's grid; the launchers
resolve without a GPU or a cluster; runs are placed on GPUs evenly."""

from __future__ import annotations

from collections import Counter

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dora_bench.errors import ConfigError
from dora_bench.run.launch import parallel_runs, pick_device, register_resolvers
from support import CONF_DIR, needs_joblib, needs_submitit

BUDGET_FREE = {"full_ft", "bitfit"}  # their records say budget null: one run serves every budget

# jobs Hydra launches, distinct runs (records) they make. Table 2: 2 budgets x 8 tasks x 7 methods
# x 5 seeds = 560 jobs; Full FT and BitFit run once for both budgets: 560 - 2 x 8 x 5 = 480 runs.
EXPERIMENTS = {
    "table2": (2 * 8 * 7 * 5, 2 * 8 * 5 * 5 + 8 * 2 * 5),
    "table3": (2 * 2 * 7 * 5, 2 * 2 * 5 * 5 + 2 * 2 * 5),
    "table4": (2 * 1 * 4 * 5, 2 * 3 * 5 + 1 * 5),
    "table5_dem": (3 * 2 * 5, 3 * 2 * 5),
    "table6_init_budget": (3 * 5 * 5, 3 * 5 * 5),
    "figure2_allocation": (1 * 2 * 4 * 5, 1 * 2 * 4 * 5),
    "table9_efficiency": (7 * 5, 7 * 5),
    # MiniLM study: 5 seeds x 5 tasks x 8 methods at one budget; the lr sweep: 2 tasks x 8 methods x 3 rates
    "minilm_glue": (5 * 5 * 8, 5 * 5 * 8),
    "minilm_lr_sweep": (1 * 7 * 4, 1 * 7 * 4),
    # the long-horizon study: its plain arms (the control arms are conf/study/minilm_long.yaml's)
    "minilm_long": (5 * 2 * 3, 5 * 2 * 3),
    # decoder LLMs: 8 methods (BitFit left out: Llama has no biases) x budget 8 x 3 seeds
    "llm_commonsense": (8 * 3, 8 * 3),
    "llm_gsm8k": (8 * 3, 8 * 3),
    "llm_efficiency": (8, 8),  # one timing run per method
    # the published protocols: LoRA and DoRA-wd, one seed (their tables report one run)
    "llm_commonsense_dorawd": (2, 2),
    "llm_gsm8k_llmadapters": (2, 2),
}
SEEDS = {
    "minilm_lr_sweep": {"100"},
    "llm_commonsense": {"0", "1", "2"},
    "llm_gsm8k": {"0", "1", "2"},
    "llm_efficiency": {"0"},
    "llm_commonsense_dorawd": {"0"},
    "llm_gsm8k_llmadapters": {"0"},
}
BACKBONES = {
    "table4": "bart-base",
    "minilm_glue": "minilm",
    "minilm_lr_sweep": "minilm",
    "minilm_long": "minilm",
    "llm_commonsense": "llama-3.2-1b",
    "llm_gsm8k": "llama-3.2-1b",
    "llm_efficiency": "llama-3.2-1b",
    "llm_commonsense_dorawd": "llama-3.2-1b",  # their models by backbone.name_or_path (docs/llm.md)
    "llm_gsm8k_llmadapters": "llama-3.2-1b",
}
LLM = {
    "llm_commonsense": "commonsense",
    "llm_gsm8k": "gsm8k",
    "llm_efficiency": "gsm8k-synthetic",
    "llm_commonsense_dorawd": "commonsense-llm-adapters",
    "llm_gsm8k_llmadapters": "gsm8k-llm-adapters",
}

# debug=smoke: the demo task in place of the paper's tasks, seeds 0 and 1; methods, budgets, arms kept
SMOKE_JOBS = {
    "table2": 2 * 7 * 2,
    "table3": 2 * 7 * 2,
    "table4": 2 * 4 * 2,
    "table5_dem": 2 * 2,
    "table6_init_budget": 5 * 2,
    "figure2_allocation": 2 * 4 * 2,
    "table9_efficiency": 7 * 2,
    "minilm_glue": 8 * 2,
    "minilm_lr_sweep": 7 * 4 * 2,
    "minilm_long": 3 * 2,
    "llm_commonsense": 8 * 2,
    "llm_gsm8k": 8 * 2,
    "llm_efficiency": 8 * 2,
    "llm_commonsense_dorawd": 2 * 2,
    "llm_gsm8k_llmadapters": 2 * 2,
}


@pytest.fixture(scope="module")
def hydra_compose():
    """Hydra's compose API on the real conf/, the hydra node included (sweeper, launcher)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


def sweep_jobs(cfg, *command_line: str) -> list[list[str]]:
    """The override lists Hydra's basic sweeper launches: the experiment's params, the command line's on top."""
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()] + list(command_line)
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)[0]


def run_identity(job: list[str]) -> tuple:
    """What names a run's record folder: a budget-free method's budget doesn't."""
    settings = dict(item.lstrip("+").split("=", 1) for item in job)
    if settings.get("method") in BUDGET_FREE:
        settings.pop("budget", None)
    return tuple(sorted(settings.items()))


def covering_jobs(jobs: list[list[str]]) -> list[list[str]]:
    """A few jobs that together use every value of every swept key but the seed (greedy set cover)."""
    uncovered = {item for job in jobs for item in job if not item.startswith("seed=")}
    chosen = []
    while uncovered:
        best = max(jobs, key=lambda job: len(uncovered & set(job)))
        chosen.append(best)
        uncovered -= set(best)
    return chosen


def test_root_defaults_let_experiments_then_debug_override():
    """conf/config.yaml's defaults: `_self_` first (groups override its values), then experiment,
    then debug, so `experiment=table2 debug=smoke` shrinks the experiment's grid and not the reverse."""
    import yaml

    entries = [
        next(iter(e)) if isinstance(e, dict) else e
        for e in yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    ]
    assert entries[0] == "_self_", "the root config's values must be defaults the groups can override"
    assert "experiment" in entries and entries.index("experiment") < entries.index("debug"), (
        "add `- experiment: null` before `- debug: null` in conf/config.yaml's defaults"
    )


def test_every_experiment_file_is_checked_here():
    assert {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")} == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_sweeps_the_paper_grid_and_every_job_composes(hydra_compose, name):
    cfg = hydra_compose(f"experiment={name}")
    assert cfg.hydra.mode.name == "MULTIRUN"  # `dora-bench experiment=...` sweeps without -m
    jobs = sweep_jobs(cfg)
    assert (len(jobs), len({run_identity(job) for job in jobs})) == EXPERIMENTS[name]
    seeds = {item.split("=")[1] for job in jobs for item in job if item.startswith("seed=")}
    assert seeds == SEEDS.get(name, {"0", "1", "2", "3", "4"})
    for overrides in covering_jobs(jobs):  # every task, method, budget and arm in some job that composes
        job = hydra_compose(f"experiment={name}", *overrides)
        OmegaConf.to_container(OmegaConf.masked_copy(job, [k for k in job if k != "hydra"]), resolve=True)
        assert job.backbone.name == BACKBONES.get(name, "roberta-base")
        if name in LLM:  # the decoder setting: bf16 frozen weights, checkpointed layers, no BitFit
            assert (job.task.name, job.backbone.dtype, job.trainer.gradient_checkpointing) == (LLM[name], "bf16", True)
            assert "method=bitfit" not in {item for job in jobs for item in job}


@pytest.mark.parametrize(
    ("name", "lr", "new_tokens", "warmup"),
    [("llm_commonsense_dorawd", 2e-4, 32, 0.0031), ("llm_gsm8k_llmadapters", 3e-4, 256, 0.053)],
)
def test_the_published_protocols_carry_their_settings(hydra_compose, name, lr, new_tokens, warmup):
    for method in ("lora", "dora_wd"):
        cfg = hydra_compose(f"experiment={name}", f"method={method}")
        assert (cfg.task.protocol, cfg.task.max_length, cfg.task.num_beams, cfg.task.max_new_tokens) == (
            "llm_adapters", 256, 4, new_tokens)  # fmt: skip
        assert (cfg.method.r, cfg.method.alpha, cfg.method.dropout) == (32, 64, 0.05)
        assert list(cfg.backbone.target_modules) == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
        assert (cfg.task.lr, cfg.task.batch_size, cfg.task.epochs) == (lr, 16, 3)
        assert (cfg.trainer.warmup_ratio, cfg.trainer.weight_decay) == (warmup, 0.0)


def test_ablation_arms_set_their_variant_and_knob(hydra_compose):
    nodem = hydra_compose("experiment=table5_dem", "task=cola", "+experiment/ablation=nodem")
    dem = hydra_compose("experiment=table5_dem", "task=cola", "+experiment/ablation=default")
    assert (nodem.variant, nodem.method.dem_coef, nodem.budget) == ("nodem", 0.0, 8)
    assert dem.variant is None and dem.method.dem_coef == dem.task.dem_coef > 0  # plain DoRA: table2's records
    b0 = hydra_compose("experiment=table6_init_budget", "task=mrpc", "+experiment/ablation=b0_6")
    default = hydra_compose("experiment=table6_init_budget", "task=mrpc", "+experiment/ablation=default")
    assert (b0.variant, b0.method.init_budget, b0.budget) == ("b0_6", 6, 2)
    assert default.variant is None and default.method.init_budget is None  # ceil(1.5 x 2) = 3
    timing = hydra_compose("experiment=table9_efficiency", "method=dora")
    assert (timing.trainer.epochs, timing.variant, timing.runs_per_gpu) == (1, "epoch1", 1)


PAPER_ARTEFACTS = sorted(name for name in EXPERIMENTS if name.startswith(("table", "figure")))


@pytest.mark.parametrize("name", PAPER_ARTEFACTS)
def test_paper_artefacts_train_in_fp32_unless_asked(hydra_compose, name):
    # the released code ran under `accelerate launch` without mixed precision: fp32 on a GPU too
    assert hydra_compose(f"experiment={name}").trainer.precision == "fp32"
    assert hydra_compose(f"experiment={name}", "trainer.precision=bf16").trainer.precision == "bf16"


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_smoke_variant_is_small_offline_and_apart(hydra_compose, name):
    jobs = sweep_jobs(hydra_compose(f"experiment={name}", "debug=smoke"))
    assert len(jobs) == SMOKE_JOBS[name]
    job = hydra_compose(f"experiment={name}", "debug=smoke", *jobs[-1])
    stand_ins = (f"{LLM[name].removesuffix('-synthetic')}-synthetic", "tiny-llama") if name in LLM else ("demo", "tiny")
    assert (job.task.name, job.backbone.name, job.results_dir) == (*stand_ins, "results/smoke")
    assert job.trainer.max_steps <= 60


def test_debug_tiny_overrides_the_defaults(hydra_compose):
    cfg = hydra_compose("debug=tiny", "method=dora")
    assert (cfg.task.name, cfg.backbone.name, cfg.trainer.max_steps) == ("demo", "tiny", 60)


@needs_joblib
def test_local_gpus_launcher_resolves_and_builds(hydra_compose):
    cfg = hydra_compose("experiment=table2", "hydra/launcher=local_gpus", "num_gpus=2", "runs_per_gpu=3")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["n_jobs"] == 6 and launcher["_target_"].endswith("JoblibLauncher")
    assert type(instantiate(cfg.hydra.launcher)).__name__ == "JoblibLauncher"
    auto = hydra_compose("hydra/launcher=local_gpus")
    assert auto.hydra.launcher.n_jobs >= 1  # num_gpus=auto: the visible GPUs (none here counts as one device)


@needs_submitit
def test_slurm_launcher_resolves_without_a_cluster(hydra_compose):
    cfg = hydra_compose("experiment=table2", "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == ("gpu", 1, 1)
    assert launcher["array_parallelism"] >= 1 and launcher["timeout_min"] > 0
    assert type(instantiate(cfg.hydra.launcher)).__name__ == "SlurmLauncher"


@pytest.mark.parametrize(
    "requested, job, gpus, expected",
    [
        ("auto", None, 0, "cpu"),
        ("auto", None, 2, "cuda:0"),
        ("auto", 5, 2, "cuda:1"),
        ("cuda", 7, 4, "cuda:3"),
        ("cuda:1", 0, 2, "cuda:1"),
        ("cpu", 3, 8, "cpu"),
        ("CUDA", 2, 2, "cuda:0"),
    ],
)
def test_pick_device(requested, job, gpus, expected):
    assert pick_device(requested, job, gpus) == expected


@pytest.mark.parametrize("requested, gpus", [("cuda", 0), ("cuda:2", 2), ("tpu", 1), ("cuda:x", 1)])
def test_pick_device_refuses_what_cant_work(requested, gpus):
    with pytest.raises(ConfigError, match="trainer.device"):
        pick_device(requested, 0, gpus)


def test_round_robin_gives_every_gpu_the_same_number_of_jobs():
    # 4 GPUs x 5 runs each = 20 jobs; a cell's 5 seeds (jobs 0-4) land on 4 different GPUs
    assert Counter(pick_device("auto", n, 4) for n in range(20)) == {f"cuda:{g}": 5 for g in range(4)}
    assert len({pick_device("auto", n, 4) for n in range(4)}) == 4


def test_parallel_runs():
    assert (parallel_runs(2, 3), parallel_runs(0, 3), parallel_runs("1", "5")) == (6, 3, 5)
    with pytest.raises(ConfigError, match="runs_per_gpu"):
        parallel_runs(2, 0)


@pytest.mark.slow
def test_smoke_sweep_runs_end_to_end_and_tabulates(tmp_path):
    """Table 5's smoke sweep on the CPU (seed 0 only: 2 runs), then its tables and figures."""
    import subprocess
    import sys

    from dora_bench.report.tables import main as tables_main

    results = tmp_path / "results"
    command = [
        sys.executable,
        "-m",
        "dora_bench.run.cli",
        "experiment=table5_dem",
        "debug=smoke",
        "seed=0",
        f"results_dir={results}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.parent.parent.parent.name for p in (results / "runs").rglob("record.json")) == [
        "dora",
        "dora-nodem",
    ]
    assert tables_main(["--results-dir", str(results), "--seeds", "1", "--backbone", "tiny"]) == 0
    cells = (results / "tables" / "all_cells.md").read_text()
    assert (
        "| demo | tiny | dora |  | 8 | accuracy |" in cells and "| demo | tiny | dora | nodem | 8 | accuracy |" in cells
    )
    assert (results / "figures" / "curves" / "demo" / "tiny" / "dora-nodem_b8.png").is_file()


@pytest.mark.parametrize("name", ["llm_commonsense", "llm_commonsense_dorawd"])
def test_runs_of_one_evaluation_also_checkpoint_every_thousand_steps(hydra_compose, name):
    # ~28-32k steps and one evaluation at the end: epoch checkpoints alone could lose a whole run
    cfg = hydra_compose(f"experiment={name}", "method=dora")
    trainer = cfg.trainer
    assert (trainer.eval_every_epochs, trainer.checkpoint, trainer.checkpoint_every_steps) == (3, True, 1000)
    assert hydra_compose().trainer.checkpoint_every_steps is None  # the default: epoch checkpoints only
