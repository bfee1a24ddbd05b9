"""The loop's step by value: ``train_epoch`` on a one-weight model whose every step is worked out by hand.

``w`` starts at 1; a batch's task loss is ``w · x`` (its gradient ``x``) and the method's extra loss
``w² / 2`` (its gradient ``w``); SGD at lr 0.1. Each test's numbers differ from what a slip would give:
clipping on or off, the logged step, the extra loss in or out, the share of a data-parallel process.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dora_bench import distributed
from dora_bench.run import train as train_module
from dora_bench.run.train import RunState, build_loader, train_epoch


class Steps(list):
    """A loader: one list of micro-batches per optimizer step, and the (epoch, skip) its sampler was set to."""

    def __init__(self, steps):
        super().__init__(steps)
        self.sampler = SimpleNamespace(epochs=[])
        self.sampler.set_epoch = lambda epoch, skip=0: self.sampler.epochs.append((epoch, skip))


class Half(nn.Module):
    """The method: an extra loss ``w² / 2``; ``after_step`` records ``w`` after each update."""

    def __init__(self):
        super().__init__()
        self.after = []

    def extra_loss(self, model, step):
        return 0.5 * model.weight.sum() ** 2

    def after_step(self, model, step):
        self.after.append(round(model.weight.item(), 6))


class Log(list):
    write = list.append


def _run(xs, *, max_grad_norm=1e9, total_steps=None, log_every=2, kind="sequence_classification", labels=None):
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)

    def forward(x, labels=None):
        return SimpleNamespace(loss=(model.weight * x).mean())

    batches = [{"x": torch.tensor([[float(x)]])} for x in xs]
    if labels is not None:
        for batch in batches:
            batch["labels"] = labels
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = OmegaConf.create({"seed": 3, "trainer": {"max_grad_norm": max_grad_norm, "log_every": log_every}})
    return RunState(
        cfg=cfg,
        method=Half(),
        record={},
        out_dir=None,
        device=torch.device("cpu"),
        task=SimpleNamespace(model_kind=kind),
        model=model,
        forward=forward,
        target=None,
        loader=Steps([[batch] for batch in batches]),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        autocast=contextlib.nullcontext,
        total_steps=total_steps or len(xs),
        num_epochs=1,
        bar=SimpleNamespace(update=lambda n: None, set_postfix=lambda **kw: None),
    )


def test_a_clipped_epoch_by_hand_its_mean_loss_and_its_log_lines():
    # step 1: loss 1·1 + 1/2 = 1.5, gradient 1 + 1 = 2, clipped to 1: w = 0.9
    # step 2: loss 0.9·2 + 0.405 = 2.205, gradient 2.9 -> 1: w = 0.8
    # step 3: loss 0.8·3 + 0.32 = 2.72, gradient 3.8 -> 1: w = 0.7
    run, log = _run([1, 2, 3], max_grad_norm=1.0), Log()
    _, mean_loss = train_epoch(run, 2, log)
    assert run.method.after == [0.9, 0.8, 0.7]
    assert mean_loss == pytest.approx((1.5 + 2.205 + 2.72) / 3)
    assert run.step == 3 and run.last_finite_loss == pytest.approx(2.72)
    assert run.loader.sampler.epochs[0][0] == 1  # epoch e shuffles with e - 1
    # every log_every = 2 steps and the last: the norm logged is the one before clipping
    assert [line["step"] for line in log] == [2, 3]
    assert log[0] == pytest.approx(
        {"step": 2, "epoch": 2, "loss": 2.205, "task_loss": 1.8, "extra_loss": 0.405, "lr": 0.1, "grad_norm": 2.9}
    )
    assert log[1]["grad_norm"] == pytest.approx(3.8)


def test_without_clipping_the_whole_gradient_steps():
    run = _run([1, 2, 3])  # w: 1 - 0.2 = 0.8, 0.8 - 0.28 = 0.52, 0.52 - 0.352 = 0.168
    train_epoch(run, 1, Log())
    assert run.method.after == [0.8, 0.52, 0.168]


def test_the_epoch_stops_at_the_runs_last_step():
    run = _run([1, 2, 3], max_grad_norm=1.0, total_steps=2, log_every=100)
    log = Log()
    _, mean_loss = train_epoch(run, 1, log)
    assert run.step == 2 and mean_loss == pytest.approx((1.5 + 2.205) / 2)
    assert [line["step"] for line in log] == [2]  # the last step is logged whatever log_every says


def test_one_process_keeps_its_random_stream(monkeypatch):
    seeds = []
    monkeypatch.setattr(torch, "manual_seed", seeds.append)
    train_epoch(_run([1]), 2, Log())
    assert seeds == []


def test_a_data_parallel_process_weights_its_loss_and_seeds_its_dropout(monkeypatch):
    """Process 1 of 2 of a causal LM: its batch has 1 response token (labels shifted by one), the
    other process 3, so its share of the global mean is 1 · 2 / 4 = 0.5 (an unshifted count, 2 tokens,
    would give 2 · 2 / 5 = 0.8). Both processes see the same losses, so their mean is this one's."""
    seeds = []

    def all_reduce_sum_(tensor):
        if tensor.numel() == 1:  # the count of loss terms
            tensor += 3.0
        else:  # the losses: the other process's are the same
            tensor *= 2
        return tensor

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "all_reduce_sum_", all_reduce_sum_)
    monkeypatch.setattr(torch, "manual_seed", seeds.append)
    run, log = _run([2], kind="causal_lm", labels=torch.tensor([[5, 6, -100, -100]])), Log()
    train_epoch(run, 2, log)
    assert seeds == [3 * 100_003 + 2 * 1_009 + 1]  # (seed, epoch, rank): a resumed epoch draws the same masks
    # task loss 0.5 · (1 · 2) = 1; extra 0.5; gradient 0.5 · 2 + 1 = 2: w = 1 - 0.2
    assert log[0]["task_loss"] == pytest.approx(1.0) and log[0]["loss"] == pytest.approx(1.5)
    assert run.method.after == [0.8]


def test_build_loader_counts_the_steps_and_the_epochs_they_take():
    task = SimpleNamespace(step_loader=lambda batch_size, micro, **kw: [None] * 4)  # 4 steps an epoch

    def cfg(max_steps):
        trainer = {"batch_size": 8, "group_by_length": False, "num_workers": 0, "epochs": 3, "max_steps": max_steps}
        return OmegaConf.create({"seed": 0, "trainer": trainer})

    assert build_loader(cfg(None), task)[1:] == (12, 3)
    assert build_loader(cfg(6), task)[1:] == (6, 2)  # max_steps caps them: 6 steps take 2 epochs
    assert build_loader(cfg(20), task)[1:] == (12, 3)  # a cap above the run changes nothing


def test_the_schedule_is_built_over_the_runs_steps_with_its_warm_up_rounded():
    cfg = OmegaConf.create({"trainer": {"weight_decay": 0.0, "warmup_ratio": 0.3}})
    model = nn.Linear(1, 1)
    optimizer, scheduler = train_module.build_optimizer_and_schedule(cfg, model, 1.0, 10, torch.device("cpu"))
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    # round(0.3 · 10) = 3 warm-up steps to the peak at step 3, then (10 - s) / 7 down to 1/7 at step 9
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7])


def test_a_step_of_two_micro_batches_weights_each_by_its_share_and_adds_the_extra_loss_once():
    # one step fed as micro-batches x = 1 and x = 3 (one example each): task loss 0.5·1 + 0.5·3 = 2,
    # extra 0.5 once; gradient 2 + 1 = 3: w = 1 - 0.3. (Unweighted: 4 and w = 0.5; extra twice: w = 0.6.)
    run, log = _run([1], log_every=1), Log()
    run.loader = Steps([[{"x": torch.tensor([[1.0]])}, {"x": torch.tensor([[3.0]])}]])
    _, mean_loss = train_epoch(run, 1, log)
    assert run.method.after == [0.7] and mean_loss == pytest.approx(2.5)
    assert log[0] == pytest.approx(
        {"step": 1, "epoch": 1, "loss": 2.5, "task_loss": 2.0, "extra_loss": 0.5, "lr": 0.1, "grad_norm": 3.0}
    )


def test_report_step_moves_the_bar_by_one_and_logs_every_log_every_steps_and_the_last():
    updates, postfixes, log = [], [], Log()
    run = SimpleNamespace(
        scheduler=SimpleNamespace(get_last_lr=lambda: [0.25]),
        bar=SimpleNamespace(update=updates.append, set_postfix=lambda **kw: postfixes.append(kw)),
        cfg=OmegaConf.create({"trainer": {"log_every": 3}}),
        total_steps=4,
        step=0,
    )
    results = [train_module.StepResult(1.5 + s, torch.tensor(1.0 + s), None, torch.tensor(0.5)) for s in range(4)]
    results[2].extra = torch.tensor(0.5)
    for result in results:
        run.step += 1
        train_module.report_step(run, 2, result, log)
    assert updates == [1, 1, 1, 1]
    assert postfixes[0] == {"loss": "1.5000", "lr": "2.50e-01", "epoch": 2}
    # steps 3 (log_every) and 4 (the last), not 1 and 2 (step / 3 is never 0)
    assert log == [
        {"step": 3, "epoch": 2, "loss": 3.5, "task_loss": 3.0, "extra_loss": 0.5, "lr": 0.25, "grad_norm": 0.5},
        {"step": 4, "epoch": 2, "loss": 4.5, "task_loss": 4.0, "extra_loss": None, "lr": 0.25, "grad_norm": 0.5},
    ]


def test_fsdp_s_whole_parameters_step_on_the_gradient_averaged_over_the_processes(monkeypatch):
    """Process 0 of 2: its gradient 2 + 1 = 3, the other's 5; the step takes their mean, 4: w = 0.6.
    The losses of both processes are the same, so their mean is this one's."""
    others = iter([1.0, 5.0])  # the other process's loss terms, then its gradient

    def all_reduce_sum_(tensor):
        if tensor.numel() == 1:
            tensor += next(others)
        else:  # the losses
            tensor *= 2
        return tensor

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_sum_", all_reduce_sum_)
    run = _run([2])
    run.replicated = [run.model.weight]
    run.step = 1
    result = train_module.train_step(run, [{"x": torch.tensor([[2.0]])}])
    assert run.method.after == [0.6]
    assert run.model.weight.grad is None  # zeroed to None after the hook
    # share 1 · 2 / 2 = 1: task loss 2, extra 0.5
    assert (result.loss, result.task_loss.item(), result.extra.item()) == pytest.approx((2.5, 2.0, 0.5))
    assert float(result.grad_norm) == pytest.approx(4.0)
