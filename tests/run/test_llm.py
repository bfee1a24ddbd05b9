"""The loop on decoder LLMs (tiny-llama, tiny-gpt2): every method trains and records, bf16 frozen weights
with fp32 adapters, gradient checkpointing that changes memory and not the numbers, Table 9's line."""

from __future__ import annotations

import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from dora_bench.errors import ConfigError
from dora_bench.methods import build_method
from dora_bench.run.checks import check_config
from dora_bench.run.train import build_model, train
from support import TINY_LLM

SHORT = ["trainer.max_steps=12", "task.pruning_interval=2"]  # DoRA/AdaLoRA: warm-up 1 step, pruning to step 6


def run(tiny_cfg, *overrides: str) -> dict:
    return train(tiny_cfg(*TINY_LLM, *SHORT, *overrides))


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_a_decoder_trains_through_the_loop_and_records_table_9s_line(tiny_cfg, tmp_path, method):
    record = run(tiny_cfg, f"method={method}")
    assert record["status"] == "complete" and record["main_metric"] == "exact_match"
    assert set(record["best"]["metrics"]) == {"exact_match", "no_number", "test_exact_match", "test_no_number"}
    efficiency = record["extras"]["efficiency"]
    assert efficiency["train_minutes"] > 0 and efficiency["seconds_per_step"] > 0 and efficiency["peak_rss_mib"] > 0
    assert efficiency["adapter_mib"] > 0 and efficiency["peak_gpu_mib"] is None  # a CPU run
    if method == "dora":  # exactly bT components per module are kept: 2 x 14 projections
        assert sum(record["extras"]["rank_allocation"].values()) == 2 * 14


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full_ft", "houlsby", "pfeiffer", "adalora", "dora_wd", "prompt_tuning"])
def test_every_other_method_trains_a_decoder(tiny_cfg, method):
    record = run(tiny_cfg, f"method={method}")
    assert record["status"] == "complete" and record["trainable_params"]["total"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bitfit", "dora", "houlsby"])
def test_gpt2s_conv1d_layers_train_through_the_loop(tiny_cfg, method):
    record = run(tiny_cfg, "backbone=tiny-gpt2", f"method={method}")
    assert record["status"] == "complete"


@pytest.mark.slow
def test_commonsense_trains_and_scores_every_set(tiny_cfg):
    record = run(tiny_cfg, "task=commonsense-synthetic", "method=dora")
    sets = {"boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa"}
    assert set(record["last"]["metrics"]) == sets | {"avg", "unparsed"}


def test_bitfit_on_llama_stops_in_one_line(tiny_cfg):
    with pytest.raises(ConfigError, match="no bias terms"):
        run(tiny_cfg, "method=bitfit")


def test_bf16_frozen_weights_train_fp32_adapters_under_autocast(tiny_cfg):
    cfg = tiny_cfg(*TINY_LLM, *SHORT, "method=dora", "backbone.dtype=bf16")
    model, _ = build_model(cfg, build_method(OmegaConf.to_container(cfg.method, resolve=True)), {}, 0)
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    # a short lora run: bf16 autocast on a CPU is slow, and DoRA's dtypes were checked above
    record = train(
        tiny_cfg(*TINY_LLM, "method=lora", "backbone.dtype=bf16", "trainer.max_steps=3", "task.max_new_tokens=4")
    )
    assert record["precision"] == "bf16-autocast" and record["extras"]["frozen_weights"] == "bf16"
    assert record["config"]["backbone"]["dtype"] == "bf16"
    with pytest.raises(ConfigError, match="runs under bf16 autocast"):
        check_config(tiny_cfg(*TINY_LLM, "backbone.dtype=bf16", "trainer.precision=fp32"))


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_cfg):
    """Recomputed activations, replayed dropout masks: the numbers of a run without it."""
    results = []
    for checkpointing in (False, True):
        cfg = tiny_cfg(*TINY_LLM, "method=lora", f"trainer.gradient_checkpointing={str(checkpointing).lower()}")
        torch.manual_seed(0)
        model, _ = build_model(cfg, build_method(OmegaConf.to_container(cfg.method, resolve=True)), {}, 0)
        assert model.is_gradient_checkpointing == checkpointing
        model.train()
        ids = torch.randint(3, 259, (4, 20))
        torch.manual_seed(1)  # the same LoRA dropout masks
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert any(g.abs().sum() > 0 for g in grads_a)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)


def test_a_decoders_prompt_and_generation_must_fit_its_positions(tiny_cfg):
    with pytest.raises(ConfigError, match="exceeds backbone 'tiny-llama'"):
        run(tiny_cfg, "method=lora", "task.max_length=1000", "task.max_new_tokens=100")


def test_a_decoder_backbone_is_named_after_its_checkpoint(tiny_cfg):
    from dora_bench.run.launch import backbone_name

    assert tiny_cfg("backbone=llama").backbone.name == "llama-3.2-1b"
    cfg = tiny_cfg("backbone=llama", "backbone.name_or_path=/models/Meta-Llama-3-8B/")
    assert cfg.backbone.name == "meta-llama-3-8b"  # two checkpoints given to backbone=llama never share a folder
    assert backbone_name("Qwen/Qwen2.5-0.5B") == "qwen2.5-0.5b"
    with pytest.raises(ConfigError, match="names no checkpoint"):
        backbone_name("/")


@pytest.mark.slow
def test_torchrun_starts_a_two_process_run_that_writes_one_record(tmp_path):
    """The command docs/llm.md gives, on the CPU: torchrun, two gloo processes, the Hydra CLI in each."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
        "-m", "dora_bench.run.cli", *TINY_LLM, *SHORT, "method=dora", "trainer.batch_size=8",
        f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (record_path,) = (tmp_path / "results" / "runs").rglob("record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete" and record["extras"]["world_size"] == 2
    assert done.stdout.count("[dora-bench] done:") == 1  # rank 0 speaks for the run


@pytest.mark.slow
def test_the_llm_smoke_sweep_runs_and_make_tables_writes_its_tables(tmp_path):
    import subprocess
    import sys

    from dora_bench.report.tables import main as tables_main

    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "dora_bench.run.cli", "experiment=llm_gsm8k", "debug=smoke", "seed=0",
        "method=dora,lora", f"results_dir={results}", f"cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert tables_main(["--results-dir", str(results)]) == 0
    table = (results / "tables" / "llm_gsm8k-synthetic_tiny-llama.md").read_text()
    assert "| dora | 8 |" in table and "| lora | 8 |" in table and "| full_ft | — | — | — |" in table
    assert (results / "tables" / "llm_gsm8k-synthetic_tiny-llama_efficiency.md").is_file()
    assert (results / "figures" / "llm" / "gsm8k-synthetic_tiny-llama_accuracy_vs_memory.png").is_file()


@pytest.mark.slow
def test_instruct_trains_on_your_files_and_scores_loss_and_exact_match(tiny_cfg, tmp_path):
    import json

    rows = [{"prompt": f"Add {a} and {b}.", "response": str(a + b)} for a in range(6) for b in range(6)]
    for name, part in (("train", rows[:28]), ("dev", rows[28:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    record = run(
        tiny_cfg,
        "task=instruct",
        "backbone=tiny-gpt2",
        "method=dora",
        f"task.train_file={tmp_path / 'train.jsonl'}",
        f"task.dev_file={tmp_path / 'dev.jsonl'}",
        "task.exact_match=true",
        "task.max_new_tokens=4",
        "trainer.lr=5e-3",
        "trainer.batch_size=4",
    )
    metrics = record["last"]["metrics"]
    assert set(metrics) == {"loss", "perplexity", "token_accuracy", "exact_match"}
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert record["eval_examples"] == 8 and record["main_metric"] == "token_accuracy"
