"""Gradient accumulation (``trainer.grad_accum``): 4 micro-batches of 4 train as one batch of 16.

tiny-llama on generated GSM8K-style rows (a causal LM: the loss is a mean over response tokens, and
the micro-batches hold different numbers of them, so a mean of micro-batch means would not do);
dropout off (tiny-llama has none; the methods' is set to 0), so the two runs differ only in the
order floating-point sums are taken. Compared: every logged step (loss, the method's term, the
gradient norm, the lr), the final weights, and DoRA's mask and AdaLoRA's ranks at every ranking.
"""

from __future__ import annotations

import json

import pytest
import torch

from dora_bench.run import train as train_module
from support import TINY_LLM, compose

# 80 training rows (96 less the 16 held out for selection): 5 steps of 16 an epoch, 15 in all.
# DoRA and AdaLoRA: warm-up to step 2, rankings at steps 4, 6 and 8, the allocation fixed from step 8.
OVERRIDES = [
    *TINY_LLM,
    "method.dropout=0",
    "trainer.batch_size=16",
    "trainer.epochs=3",
    "trainer.eval_every_epochs=3",
    "trainer.log_every=1",
    "task.pruning_interval=2",
    "trainer.checkpoint=false",
]


def _run(tmp_path, method: str, accum: int, monkeypatch) -> dict:
    """One run; its record, log lines, final trainable weights, the method's state and the micro-batches it fed."""
    seen: dict = {"micro": []}
    keep_finish, keep_accumulate = train_module.finish, train_module.accumulate

    def accumulate(run, micro_batches):
        seen["micro"].append([int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches])
        return keep_accumulate(run, micro_batches)

    def finish(run):
        seen["params"] = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
        seen["state"] = run.method.state_dict()
        return keep_finish(run)

    out = tmp_path / f"accum{accum}"
    cfg = compose(
        [*OVERRIDES, f"method={method}", f"trainer.grad_accum={accum}", f"results_dir={out}", f"cache_dir={tmp_path}/c"]
    )
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "accumulate", accumulate)
        patch.setattr(train_module, "finish", finish)
        seen["record"] = train_module.train(cfg)
    seen["log"] = [json.loads(line) for line in next(out.rglob("metrics.jsonl")).read_text().splitlines()]
    return seen


@pytest.mark.parametrize("method", ["dora", "adalora"])
def test_four_micro_batches_of_four_train_as_one_batch_of_sixteen(tmp_path, monkeypatch, method):
    whole, accumulated = _run(tmp_path, method, 1, monkeypatch), _run(tmp_path, method, 4, monkeypatch)

    # the loop really fed 4 micro-batches a step, with unequal token counts (so the weighting matters)
    assert [len(m) for m in whole["micro"]] == [1] * 15 and [len(m) for m in accumulated["micro"]] == [4] * 15
    assert [sum(m) for m in accumulated["micro"]] == [m[0] for m in whole["micro"]]
    assert any(len(set(m)) > 1 for m in accumulated["micro"])
    assert accumulated["record"]["extras"]["memory_estimate"]["batch"] == 4
    assert whole["record"]["extras"]["total_steps"] == accumulated["record"]["extras"]["total_steps"] == 15

    steps = [line for line in whole["log"] if "loss" in line]
    assert [line["step"] for line in steps] == list(range(1, 16))
    for one, other in zip(steps, (line for line in accumulated["log"] if "loss" in line), strict=True):
        assert one["step"] == other["step"] and one["lr"] == other["lr"]  # the schedule counts optimizer steps
        for key in ("loss", "task_loss", "extra_loss", "grad_norm"):
            expected = one[key] if one[key] is None else pytest.approx(one[key], rel=1e-5, abs=1e-7)
            assert other[key] == expected, (one["step"], key)
    assert steps[0]["extra_loss"] is not None  # DEM / the orthogonality penalty took part

    for name, value in whole["params"].items():
        torch.testing.assert_close(accumulated["params"][name], value, rtol=1e-4, atol=1e-6)
    extras, other = whole["record"]["extras"], accumulated["record"]["extras"]
    assert extras["budget_schedule"] == other["budget_schedule"]
    # the budget moved at optimizer steps of the schedule (AdaLoRA's list starts at step 0 and only notes changes)
    moves = [e["step"] for e in extras["budget_schedule"] if e["step"] > 0]
    assert moves == [4, 6, 8] if method == "dora" else moves and set(moves) <= {4, 6, 8}
    assert extras["rank_allocation"] == other["rank_allocation"]
    if method == "dora":
        assert torch.equal(whole["state"]["mask"], accumulated["state"]["mask"])
        assert not whole["state"]["mask"].all()  # it pruned: the equality is about a real decision
    else:  # which of each module's triplets are kept
        assert whole["state"]["rank_pattern"] == accumulated["state"]["rank_pattern"]
        assert sum(extras["rank_allocation"].values()) < sum(
            len(kept) for kept in whole["state"]["rank_pattern"].values()
        )


def test_a_batch_that_does_not_split_into_the_micro_batches_is_refused(tiny_cfg):
    from dora_bench.errors import ConfigError
    from dora_bench.run.train import train

    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg("method=lora", "trainer.batch_size=10", "trainer.grad_accum=4"))
    assert str(refused.value) == (
        "trainer.batch_size=10 is the batch of one optimizer step and must split into trainer.grad_accum=4 "
        "equal micro-batches: set trainer.batch_size to a multiple of 4"
    )


def test_a_run_out_of_memory_resumes_its_checkpoint_with_more_micro_batches(tmp_path, monkeypatch):
    # grad_accum is how a step executes, not what it computes: a checkpoint made at 1 resumes at 4
    from dora_bench.methods import method_class

    whole = _run(tmp_path, "dora", 1, monkeypatch)
    cls, original = method_class("dora"), method_class("dora").after_step

    def after_step(self, model, step):
        original(self, model, step)
        if step == 9:
            raise RuntimeError("out of memory at step 9")

    common = [*OVERRIDES, "method=dora", f"results_dir={tmp_path / 'resumed'}", f"cache_dir={tmp_path}/c"]
    with monkeypatch.context() as patch:
        patch.setattr(cls, "after_step", after_step)
        with pytest.raises(RuntimeError, match="out of memory"):
            train_module.train(compose([*common, "trainer.checkpoint=true", "trainer.checkpoint_every_steps=4"]))
    resumed = train_module.train(
        compose([*common, "trainer.checkpoint=true", "trainer.checkpoint_every_steps=4", "trainer.grad_accum=4"])
    )
    assert resumed["extras"]["resumed"][0]["step"] == 8
    assert resumed["extras"]["rank_allocation"] == whole["record"]["extras"]["rank_allocation"]
    assert resumed["epochs"][-1]["train_loss"] == pytest.approx(whole["record"]["epochs"][-1]["train_loss"], rel=1e-5)


def test_step_checkpoints_without_checkpoints_are_refused(tiny_cfg):
    from dora_bench.errors import ConfigError
    from dora_bench.run.train import train

    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg("method=lora", "trainer.checkpoint=false", "trainer.checkpoint_every_steps=5"))
    assert str(refused.value) == (
        "trainer.checkpoint_every_steps=5 saves nothing with trainer.checkpoint=false: "
        "set trainer.checkpoint=true or trainer.checkpoint_every_steps=null"
    )
