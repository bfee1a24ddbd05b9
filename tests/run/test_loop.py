"""The loop as it runs: a probe method, registered for the test, watches every hook of ``train(cfg)``.

DoRA's and AdaLoRA's own tests drive hand-written loops; only a method plugged into the real one
can tell whether ``train.py`` calls the hooks in the order ``methods/base.py`` promises, with the
gradients and weights each hook is owed.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch import nn

from dora_bench.methods import base
from dora_bench.methods.base import Method, UnsizedConfig, register_method
from dora_bench.run.train import train
from dora_bench.tasks.classification import SequenceClassificationTask
from support import TINY, compose

# 3 epochs of 20 steps (320 examples, batches of 16). lr and warm-up are pinned so the first
# step's update can be worked out by hand; clipping is off so the probe's gradient is exact.
STEPS_PER_EPOCH, EPOCHS = 20, 3
LOOP = [
    "task.train_size=320",
    "task.dev_size=32",
    f"trainer.epochs={EPOCHS}",
    "trainer.lr=5e-3",
    "trainer.warmup_ratio=0.06",  # round(0.06 * 60) = 4 warm-up steps: step 1 runs at 5e-3 / 5
    "trainer.weight_decay=0.01",
    "trainer.max_grad_norm=1e9",
    "trainer.checkpoint=false",
]
FIRST_COUNTABLE = 40  # the end of epoch 2: a boundary, so ">" instead of ">=" shows


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class Probe(Method):
    """Trains the head and one extra scalar ``w`` that only ``extra_loss`` (``w ** 2``) reaches:
    its gradient, 2w, says whether the extra loss went into ``backward``."""

    Config = UnsizedConfig
    uses_budget = False
    log: list  # what was called, in order (a fresh list per run: see the fixture)
    problems: list  # what a hook found wrong, as sentences
    seen: dict  # values to compare after the run

    def apply(self, model, target):
        for name, p in model.named_parameters():
            p.requires_grad_(target.is_head(name))
        model.probe_w = nn.Parameter(torch.ones(()))
        self.log.append(("apply",))
        return model

    def on_train_begin(self, model, total_steps):
        self.log.append(("on_train_begin", total_steps))

    def extra_loss(self, model, step):
        self.log.append(("extra_loss", step))
        params = _trainable(model)
        # the previous step's gradients are gone before this step's forward (zero_grad after after_step)
        stale = [n for n, p in params.items() if p.grad is not None and p.grad.any()]
        if stale:
            self.problems.append(f"step {step}: gradients left from the previous step on {stale}")
        if not model.training:
            self.problems.append(f"step {step}: extra_loss called in eval mode")
        self.before = {n: p.detach().clone() for n, p in params.items()}
        return model.probe_w**2

    def after_step(self, model, step):
        self.log.append(("after_step", step))
        params = _trainable(model)
        missing = [n for n, p in params.items() if p.grad is None]
        if missing:
            self.problems.append(f"step {step}: no gradient in after_step on {missing}")
            return
        w_before = self.before["probe_w"].item()
        if model.probe_w.grad.item() != pytest.approx(2 * w_before, rel=1e-6):
            self.problems.append(f"step {step}: d(w^2)/dw = {model.probe_w.grad.item()}, not 2w = {2 * w_before}")
        unchanged = [n for n, p in params.items() if torch.equal(p.detach(), self.before[n])]
        if unchanged:
            self.problems.append(f"step {step}: the optimizer has not moved {unchanged} yet")
        if step == 1:
            # AdamW's first step: m̂ = g, v̂ = g², so w <- w (1 - lr wd) - lr g / (|g| + eps), at the
            # warm-up's first rate lr = 5e-3 / (4 + 1); w = 1, g = 2
            lr = 5e-3 / 5
            self.seen["first_w"] = (model.probe_w.item(), (1 - lr * 0.01) - lr * 2 / (2 + 1e-8))

    def first_countable_step(self):
        self.log.append(("first_countable_step",))
        return FIRST_COUNTABLE

    def report(self, model):
        self.log.append(("report",))
        return {"probe_w": model.probe_w.item()}

    def export(self, model, run_dir):
        self.log.append(("export",))
        return {}


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """One run of ``method=probe`` shared by the tests below (a run costs seconds). The probe is
    registered for it and taken out of the registry again; dev accuracies are scripted as 0.9, 0.8,
    0.7 for epochs 1-3 whatever the model, so the best epoch is decided by the ``countable`` flags
    alone (epoch 1 would win if they were ignored)."""
    probe = type("Probe", (Probe,), {"log": [], "problems": [], "seen": {}})
    scores = iter([0.9, 0.8, 0.7])

    def evaluate(self, model, **kwargs):
        probe.log.append(("evaluate",))
        return {"accuracy": next(scores), "f1": 0.5}

    root = tmp_path_factory.mktemp("probe")
    cfg = compose([*TINY, f"results_dir={root / 'results'}", f"cache_dir={root / 'cache'}", "method=bitfit", *LOOP])
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"name": "probe"})  # any method's group composes; the probe replaces it
    register_method("probe", probe)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SequenceClassificationTask, "evaluate", evaluate)
            record = train(cfg)
    finally:
        base._REGISTRY.pop("probe")
    return probe, record


def test_hooks_run_in_the_documented_order_with_the_gradients_and_weights_they_expect(probed_run):
    probe, record = probed_run
    expected = [("apply",), ("on_train_begin", STEPS_PER_EPOCH * EPOCHS)]
    for epoch in range(1, EPOCHS + 1):
        for step in range((epoch - 1) * STEPS_PER_EPOCH + 1, epoch * STEPS_PER_EPOCH + 1):
            expected += [("extra_loss", step), ("after_step", step)]
        expected += [("evaluate",), ("first_countable_step",)]
    expected += [("report",), ("export",)]
    assert probe.log == expected
    assert probe.problems == []
    # after_step(1) saw the weights after the first optimizer step, not before it nor after the second
    seen, by_hand = probe.seen["first_w"]
    assert seen == pytest.approx(by_hand, rel=1e-7) and seen != 1.0
    assert record["status"] == "complete" and record["extras"]["probe_w"] < 1.0


def test_countable_from_the_first_countable_step_and_best_only_among_those(probed_run):
    _, record = probed_run
    epochs = record["epochs"]
    assert [e["step"] for e in epochs] == [20, 40, 60]
    # countable exactly for epochs that end at or after step 40
    assert [e["countable"] for e in epochs] == [False, True, True]
    # epoch 1 scored highest but came before the budget was final; of the rest, epoch 2 is best
    assert record["best"] == {"epoch": 2, "metrics": {"accuracy": 0.8, "f1": 0.5}, "countable": True}
    assert record["last"] == {"epoch": 3, "metrics": {"accuracy": 0.7, "f1": 0.5}}


def test_the_probe_is_gone_from_the_registry_after_its_run(probed_run):
    from dora_bench.methods import method_names

    assert "probe" not in method_names()


def test_a_loss_that_stops_being_finite_stops_the_run_with_a_failed_record(tmp_path):
    from dora_bench import records
    from dora_bench.errors import TrainingDiverged

    class Diverging(Probe):
        log, problems, seen = [], [], {}

        def extra_loss(self, model, step):
            w = super().extra_loss(model, step)
            return w * float("nan") if step == 3 else w

    cfg = compose(
        [*TINY, f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "method=bitfit", *LOOP]
    )
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"name": "probe"})
    register_method("probe", Diverging)
    try:
        with pytest.raises(
            TrainingDiverged, match=r"^step 3: loss nan, gradient norm nan \(last finite loss [0-9.]+\)"
        ):
            train(cfg)
    finally:
        base._REGISTRY.pop("probe")
    (path,) = (tmp_path / "results").rglob(records.RECORD_NAME)
    record = records.read_record(path)
    assert record["status"] == "failed" and record["error"].startswith("TrainingDiverged: step 3: loss nan")
    assert record["epochs"] == [] and record["best"] is None  # nothing was scored after the bad step
