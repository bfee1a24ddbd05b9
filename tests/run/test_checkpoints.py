"""Checkpoints that can't be resumed are refused, each with one line that names the file and the fix.

(A checkpoint made with other settings is refused through ``train`` in test_train.py.)
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import Method
from dora_bench.run.checkpoints import load_checkpoint, restore_training_state, rng_of_this_process, save_checkpoint
from dora_bench.run.train import linear_warmup_decay

CONFIG = {"task": {"name": "demo"}, "method": {"name": "probe"}, "seed": 0}
FIX = "delete it or pass resume=false"


def training_state(*shapes: tuple[int, int]):
    """A model of linear layers of these shapes, with its optimizer and schedule, one step taken."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(d_in, d_out) for d_in, d_out in shapes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = linear_warmup_decay(optimizer, 2, 60)
    model(torch.ones(1, shapes[0][0])).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def saved(tmp_path, total_steps: int = 60, shapes=((3, 2),)):
    model, optimizer, scheduler = training_state(*shapes)
    path = tmp_path / "checkpoint.pt"
    record = {"config": CONFIG, "started_at": "2026-01-01T00:00:00+00:00", "epochs": [], "extras": {}}
    save_checkpoint(
        path,
        record=record,
        epoch=1,
        step=20,
        total_steps=total_steps,
        model=model,
        method=Method(None),
        optimizer=optimizer,
        scheduler=scheduler,
    )
    return path


def refusal(call) -> str:
    with pytest.raises(ConfigError) as refused:
        call()
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_checkpoint_resumes_into_the_same_model(tmp_path):
    path = saved(tmp_path)
    model, optimizer, scheduler = training_state((3, 2))
    with torch.no_grad():
        model[0].weight.zero_()
    checkpoint = load_checkpoint(path, CONFIG)
    assert restore_training_state(checkpoint, path, 60, model, Method(None), optimizer, scheduler) == (1, 20)
    assert torch.equal(model[0].weight, checkpoint["params"]["0.weight"])


def test_a_step_checkpoint_holds_the_epoch_so_far_and_the_rng_it_was_saved_with(tmp_path):
    model, optimizer, scheduler = training_state((3, 2))
    record = {"config": CONFIG, "started_at": "2026-01-01T00:00:00+00:00", "epochs": [], "extras": {}}
    path = tmp_path / "checkpoint.pt"
    torch.manual_seed(7)
    state = torch.get_rng_state()
    progress = {"loss_sum": 2.5, "loss_count": 5, "seconds": 1.25, "last_finite_loss": 0.5}
    save_checkpoint(
        path, record=record, epoch=1, step=25, total_steps=60, model=model, method=Method(None),
        optimizer=optimizer, scheduler=scheduler, progress=progress,
    )  # fmt: skip
    torch.rand(3)  # the generator moves on after the save
    checkpoint = load_checkpoint(path, CONFIG)
    assert restore_training_state(checkpoint, path, 60, model, Method(None), optimizer, scheduler) == (1, 25)
    assert checkpoint["progress"] == progress
    assert torch.equal(rng_of_this_process(checkpoint)["cpu"], state)  # one process: rank 0's, its own
    assert "progress" not in load_checkpoint(saved(tmp_path / "epoch"), CONFIG)  # an epoch checkpoint has none


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short (a full disk, a copy interrupted)
        lambda data: b"",  # empty
        lambda data: b"not a checkpoint at all\n",  # another file under its name
    ],
    ids=["truncated", "empty", "text"],
)
def test_a_damaged_file_is_refused(tmp_path, damage):
    path = saved(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    message = refusal(lambda: load_checkpoint(path, CONFIG))
    assert re.fullmatch(rf"checkpoint at {re.escape(str(path))} can't be read \(\w+\): {FIX}", message), message


@pytest.mark.parametrize(
    "change",
    [
        lambda saved: {**saved, "format": 2},  # a later format, everything else in place
        lambda saved: {k: v for k, v in saved.items() if k != "format"},  # no format at all
        lambda saved: {k: v for k, v in saved.items() if k != "params"},  # format 1, the weights missing
        lambda saved: saved["params"]["0.weight"],  # a tensor saved under the name
    ],
    ids=["format2", "no_format", "no_params", "tensor"],
)
def test_a_file_of_another_format_is_refused(tmp_path, change):
    path = saved(tmp_path)
    torch.save(change(torch.load(path, weights_only=True)), path)
    message = refusal(lambda: load_checkpoint(path, CONFIG))
    assert message.startswith(f"checkpoint at {path} is not a dora-bench checkpoint of format 1")
    assert message.endswith(f": {FIX}")


def test_a_checkpoint_of_another_run_length_is_refused(tmp_path):
    # The same settings over other data (a grown train file) give another T: DoRA's and AdaLoRA's
    # schedules and the lr schedule would not be those the saved state was made under.
    path = saved(tmp_path, total_steps=60)
    model, optimizer, scheduler = training_state((3, 2))
    checkpoint = load_checkpoint(path, CONFIG)
    message = refusal(lambda: restore_training_state(checkpoint, path, 40, model, Method(None), optimizer, scheduler))
    assert message == f"checkpoint at {path} was made with different settings (total_steps: 60 -> 40): {FIX}"


def test_a_checkpoint_of_other_parameters_is_refused_before_anything_is_loaded(tmp_path):
    path = saved(tmp_path)
    checkpoint = load_checkpoint(path, CONFIG)

    def refused_untouched(*shapes):
        model, optimizer, scheduler = training_state(*shapes)
        before = [p.detach().clone() for p in model.parameters()]
        message = refusal(
            lambda: restore_training_state(checkpoint, path, 60, model, Method(None), optimizer, scheduler)
        )
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        return message

    # another trainable parameter set: a second layer in the model, or in the checkpoint
    assert refused_untouched((3, 2), (2, 2)) == (
        f"checkpoint at {path} was made with different settings "
        f"(trainable parameters: 2 names differ, e.g. 1.bias): {FIX}"
    )
    larger = saved(tmp_path / "larger", shapes=((3, 2), (2, 2)))
    model, optimizer, scheduler = training_state((3, 2))
    message = refusal(
        lambda: restore_training_state(
            load_checkpoint(larger, CONFIG), larger, 60, model, Method(None), optimizer, scheduler
        )
    )
    assert message == (
        f"checkpoint at {larger} was made with different settings "
        f"(trainable parameters: 2 names differ, e.g. 1.bias): {FIX}"
    )
    # the same names, other shapes (a backbone file changed under the same settings)
    assert refused_untouched((4, 2)) == (
        f"checkpoint at {path} was made with different settings "
        f"(trainable parameters: 1 shapes differ, e.g. 0.weight (2, 3) -> (2, 4)): {FIX}"
    )
