"""End to end through the one loop: every method on the demo task with the tiny backbone."""

import json
import random

import pytest
import torch

from dora_bench import records
from dora_bench.methods import method_names
from dora_bench.run.train import linear_warmup_decay, select_epochs, train
from support import TINY, compose

# Enough steps for the loss to fall visibly on the demo task, few enough for seconds on a CPU:
# 3 epochs of 20 steps at the rate the demo uses for every method.
SHORT = ["task.train_size=320", "task.dev_size=64", "trainer.epochs=3", "trainer.lr=5e-3", "trainer.log_every=5"]


def _logged_losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["task_loss"] for line in lines if "task_loss" in line]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """``short_run(method)``: (config, record) of one SHORT run of ``method``, trained once per
    module and shared by the tests that only read its record (a run costs seconds)."""
    done = {}

    def run(method):
        if method not in done:
            root = tmp_path_factory.mktemp(method)
            cfg = compose(
                [*TINY, f"results_dir={root / 'results'}", f"cache_dir={root / 'cache'}", f"method={method}", *SHORT]
            )
            done[method] = cfg, train(cfg)
        return done[method]

    return run


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_and_writes_a_complete_record(short_run, method):
    cfg, record = short_run(method)
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method=method, variant=None, budget=record["budget"], seed=0
    )
    on_disk = json.loads((run_dir / "record.json").read_text())
    assert on_disk["status"] == "complete" and on_disk["error"] is None
    assert set(on_disk) == set(records.RECORD_KEYS)
    assert on_disk["eval_examples"] > 0 and on_disk["main_metric"] == "accuracy"
    assert [e["epoch"] for e in on_disk["epochs"]] == [1, 2, 3]
    assert on_disk["eval_examples"] == 64 and on_disk["last"]["epoch"] == 3
    assert on_disk["precision"] == "fp32" and len(on_disk["data_fingerprint"]) == 16  # what tables pool on
    assert on_disk["best"]["epoch"] in (1, 2, 3)
    assert 0 < on_disk["trainable_params"]["paper"] <= on_disk["trainable_params"]["model"]
    first, last = on_disk["epochs"][0]["train_loss"], on_disk["epochs"][-1]["train_loss"]
    assert last < first, f"{method}: mean training loss did not go down ({first:.3f} -> {last:.3f})"
    assert len(_logged_losses(run_dir)) == 60 // 5


def _component_size(module: str) -> int:
    """d_in + d_out + 1 of a tiny-RoBERTa module (32 wide, FFN 64): one kept component's parameters."""
    if module.endswith("intermediate.dense") or (module.endswith("output.dense") and "attention" not in module):
        return 32 + 64 + 1
    return 32 + 32 + 1


@pytest.mark.parametrize("method", ["dora", "adalora"])
def test_budget_moving_methods_end_with_exactly_bT_components_per_module(short_run, method):
    cfg, record = short_run(method)
    modules = 2 * 6  # tiny: 2 layers x the six module types of SPEC §1
    extras = record["extras"]
    ranks = extras["rank_allocation"]
    assert len(ranks) == modules
    # budget=2: bT * M = 24 components kept in all, however they are spread over the modules
    assert sum(ranks.values()) == cfg.budget * modules == 24
    assert extras["budget_schedule"][-1]["kept"] == 24
    # it started above: b0 = ceil(1.5 bT) = 3 components in every module
    assert extras["initial_trainable_params"] == sum(3 * _component_size(name) for name in ranks)
    # the record's count is the paper's count of what was kept, sum of kept_i (d_in + d_out + 1)
    kept_params = sum(k * _component_size(name) for name, k in ranks.items())
    assert record["trainable_params"]["paper"] == extras["final_trainable_params"] == kept_params
    # T = 60, t_f = 0.5 T: the budget is final from step 30; epochs end at steps 20, 40, 60
    assert [(e["step"], e["countable"]) for e in record["epochs"]] == [(20, False), (40, True), (60, True)]
    assert record["best"]["epoch"] in (2, 3) and record["best"]["countable"] is True


def test_complete_record_is_kept_unless_overwrite(tiny_cfg):
    from dora_bench.errors import RecordExistsError

    cfg = tiny_cfg("method=bitfit", "trainer.max_steps=3", "trainer.epochs=1")
    first = train(cfg)
    with pytest.raises(RecordExistsError, match="overwrite=true"):
        train(cfg)
    # Mark the kept record so that a rerun which really trains can be told from one that hands it
    # back (timestamps can't tell: they have one-second resolution and a run takes about that).
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method="bitfit", variant=None, budget=None, seed=0
    )
    kept = records.read_record(run_dir / "record.json")
    assert kept["started_at"] == first["started_at"]  # the refusal left it alone
    kept.update(started_at="2000-01-01T00:00:00+00:00", epochs=[{**kept["epochs"][0], "train_loss": -1.0}])
    records.write_json_atomic(run_dir / "record.json", kept)
    (run_dir / "metrics.jsonl").write_text("")
    again = train(tiny_cfg("method=bitfit", "trainer.max_steps=3", "trainer.epochs=1", "overwrite=true"))
    on_disk = records.read_record(run_dir / "record.json")
    assert on_disk == again and again["started_at"] > "2000-01-01T00:00:00+00:00"
    assert again["epochs"][0]["train_loss"] > 0 and again["epochs"][0]["step"] == 3
    assert len(_logged_losses(run_dir)) == 1  # step 3, the last, is logged: the log was written anew


def test_dry_run_counts_parameters_without_training(tiny_cfg):
    cfg = tiny_cfg("method=lora", "budget=2", "dry_run=true")
    record = train(cfg)
    assert record["status"] == "dry_run" and record["epochs"] == []
    # tiny: 2 layers x (4 attention modules 32x32 + 32->64 + 64->32), r=2
    assert record["trainable_params"]["paper"] == 2 * 2 * (4 * (32 + 32) + 2 * (32 + 64))
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method="lora", variant=None, budget=2, seed=0
    )
    assert (run_dir / "dry_run.json").is_file() and not (run_dir / "record.json").exists()


def test_failure_is_recorded_then_raised(tiny_cfg, monkeypatch):
    from dora_bench.methods.lora import LoRA

    def broken(self, model, step):
        raise RuntimeError(f"boom at step {step}")

    monkeypatch.setattr(LoRA, "after_step", broken)
    cfg = tiny_cfg("method=lora", "trainer.max_steps=2")
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method="lora", variant=None, budget=2, seed=0
    )
    on_disk = json.loads((run_dir / "record.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == "RuntimeError: boom at step 1"
    assert "boom" in (run_dir / "traceback.txt").read_text()


def test_best_epoch_only_among_countable_epochs():
    epochs = [
        {"epoch": 1, "countable": False, "metrics": {"accuracy": 0.9}},
        {"epoch": 2, "countable": True, "metrics": {"accuracy": 0.7}},
        {"epoch": 3, "countable": True, "metrics": {"accuracy": 0.8}},
        {"epoch": 4, "countable": True, "metrics": {"accuracy": 0.8}},
    ]
    best, last = select_epochs(epochs, "accuracy")
    assert best["epoch"] == 3 and best["countable"] and last["epoch"] == 4
    best, _ = select_epochs(epochs[:1], "accuracy")
    assert best["epoch"] == 1 and best["countable"] is False


def test_linear_schedule_warms_up_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, warmup_steps=3, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[3:] == sorted(lrs[3:], reverse=True) and scheduler.get_last_lr()[0] == 0.0


def test_too_long_inputs_for_the_backbone_are_refused_before_training(tiny_cfg):
    from dora_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task.max_length=300 exceeds backbone 'tiny'.s 257 positions"):
        train(tiny_cfg("method=lora", "task.max_length=300", "dry_run=true"))


def _decayed_by_name(tiny_cfg, method_cfg: dict) -> dict[str, bool]:
    """Whether build_optimizer puts each trainable parameter of the tiny model under ``method_cfg``
    in the weight-decay group."""
    from omegaconf import OmegaConf

    from dora_bench.backbones import BackboneConfig, adapt_target, load_model
    from dora_bench.methods import build_method
    from dora_bench.run.train import build_optimizer

    backbone = BackboneConfig.from_dict(OmegaConf.to_container(tiny_cfg().backbone, resolve=True))
    model = build_method(method_cfg).apply(
        load_model(backbone, "sequence_classification", 2), adapt_target(backbone, "sequence_classification")
    )
    optimizer = build_optimizer(model, 1e-3, 0.01, torch.device("cpu"))
    decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert set(decay) == {0.01, 0.0}
    return {n: id(p) in decay[0.01] for n, p in model.named_parameters() if p.requires_grad}


def test_gates_decay_but_biases_and_layernorms_do_not(tiny_cfg):
    dora = _decayed_by_name(tiny_cfg, {"name": "dora", "final_budget": 2})
    gates = [n for n in dora if n.endswith("lora_c")]
    assert len(gates) == 12 and all(dora[n] for n in gates)  # DoRA's c decays, as in the released code
    assert all(dora[n] for n in dora if n.endswith(("lora_A", "lora_B")))
    # Full FT trains every LayerNorm (DoRA freezes them): the rule's LayerNorm half only shows here.
    # tiny: the embeddings' LayerNorm and 2 per layer, each a weight and a bias.
    full = _decayed_by_name(tiny_cfg, {"name": "full_ft"})
    norms = [n for n in full if "LayerNorm" in n]
    assert len(norms) == 2 * (1 + 2 * 2)
    assert not any(full[n] for n in norms)
    assert not any(full[n] for n in full if n.endswith("bias"))
    # everything else decays: the embeddings and every linear weight
    assert all(full[n] for n in full if "LayerNorm" not in n and not n.endswith("bias"))
    assert full["roberta.encoder.layer.0.attention.self.query.weight"]


def test_a_rerun_after_a_failure_leaves_no_stale_files(tiny_cfg, monkeypatch):
    from dora_bench.methods.lora import LoRA

    cfg = tiny_cfg("method=lora", "trainer.max_steps=2", "trainer.epochs=1")
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method="lora", variant=None, budget=2, seed=0
    )
    with monkeypatch.context() as patch:
        patch.setattr(LoRA, "after_step", lambda self, model, step: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            train(cfg)
    assert (run_dir / "traceback.txt").exists()
    assert train(cfg)["status"] == "complete"  # a failed record is not kept: the run goes again
    assert not (run_dir / "traceback.txt").exists() and (run_dir / "adapter").is_dir()


# -- resuming an interrupted run ---------------------------------------------------------------


def _crash_after_step(patch, method: str, crash_step: int) -> None:
    """Make ``method``'s after_step raise once ``crash_step`` steps are done (a killed job)."""
    from dora_bench.methods import method_class

    cls = method_class(method)
    original = cls.after_step

    def after_step(self, model, step):
        original(self, model, step)
        if step == crash_step:
            raise RuntimeError(f"interrupted at step {step}")

    patch.setattr(cls, "after_step", after_step)


def _interrupted(tiny_cfg, monkeypatch, overrides, method, crash_step):
    """An attempt killed at ``crash_step``; returns its run folder."""
    cfg = tiny_cfg(f"method={method}", *overrides)
    with monkeypatch.context() as patch:
        _crash_after_step(patch, method, crash_step)
        with pytest.raises(RuntimeError, match="interrupted"):
            train(cfg)
    return records.run_dir(cfg.results_dir, task="demo", backbone="tiny", method=method, variant=None, budget=2, seed=0)


def _without_timings(epochs):
    return [{k: v for k, v in e.items() if k not in ("seconds", "eval_seconds")} for e in epochs]


def _fresh_method(cfg, loaded):
    from omegaconf import OmegaConf

    from dora_bench.backbones import BackboneConfig, adapt_target, load_model
    from dora_bench.methods import build_method

    backbone = BackboneConfig.from_dict(OmegaConf.to_container(cfg.backbone, resolve=True))
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    model = method.apply(
        load_model(backbone, "sequence_classification", 2), adapt_target(backbone, "sequence_classification")
    )
    method.on_train_begin(model, 60)
    method.load_state_dict(loaded)
    return method


def _same(a, b) -> bool:
    """Equal nested containers, tensors compared exactly."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _adapter_tensors(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("method", ["lora", "dora", "adalora"])
def test_an_interrupted_run_resumes_and_ends_as_if_never_stopped(tiny_cfg, monkeypatch, capsys, tmp_path, method):
    # 3 epochs of 20 steps; killed at step 25, in epoch 2 (DoRA and AdaLoRA mid-budget-phase,
    # with a ranking at step 19/20 inside the checkpoint and more to come after it).
    cfg = tiny_cfg(f"method={method}", *SHORT)
    straight = train(cfg)
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method=method, variant=None, budget=2, seed=0
    )
    straight_dir = run_dir.rename(tmp_path / "straight")

    assert _interrupted(tiny_cfg, monkeypatch, SHORT, method, crash_step=25) == run_dir
    saved = torch.load(run_dir / records.CHECKPOINT_NAME, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 20) and [e["epoch"] for e in saved["epochs"]] == [1]
    # The method's state goes back in whole (AdaLoRA's scores could be lost without changing which
    # triplets this tiny run prunes, so the end-to-end comparison below can't tell).
    assert _same(_fresh_method(cfg, loaded=saved["method"]).state_dict(), saved["method"])
    capsys.readouterr()

    resumed = train(cfg)
    assert "resuming from epoch 2 (step 20)" in capsys.readouterr().out
    assert resumed["status"] == "complete" and resumed["extras"]["resumed"][0]["step"] == 20
    assert _without_timings(resumed["epochs"]) == _without_timings(straight["epochs"])
    assert resumed["best"] == straight["best"] and resumed["last"] == straight["last"]
    untimed = {k: v for k, v in straight["extras"].items() if k != "efficiency"}  # wall-clock times and memory
    assert {k: v for k, v in resumed["extras"].items() if k not in ("resumed", "efficiency")} == untimed
    # the log holds each step once, as the uninterrupted run's does
    assert (run_dir / "metrics.jsonl").read_text() == (straight_dir / "metrics.jsonl").read_text()
    ours, theirs = _adapter_tensors(run_dir), _adapter_tensors(straight_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # the checkpoint and the failed attempt's traceback are gone once the run completes
    assert not (run_dir / records.CHECKPOINT_NAME).exists() and not (run_dir / "traceback.txt").exists()


def test_a_resume_under_another_commit_names_both_in_the_record(tiny_cfg, monkeypatch, capsys):
    # the record's git_commit is the last attempt's; the steps before the checkpoint ran under the first
    cfg = tiny_cfg("method=lora", *SHORT)
    monkeypatch.setattr(records, "git_commit", lambda repo=None: "1111111")
    run_dir = _interrupted(tiny_cfg, monkeypatch, SHORT, "lora", crash_step=25)
    assert torch.load(run_dir / records.CHECKPOINT_NAME, weights_only=True)["git_commit"] == "1111111"
    monkeypatch.setattr(records, "git_commit", lambda repo=None: "2222222")
    capsys.readouterr()
    resumed = train(cfg)
    assert resumed["git_commit"] == "2222222"
    assert resumed["extras"]["resumed"][0]["checkpoint_commit"] == "1111111"
    assert "checkpoint was written at commit 1111111, this attempt runs 2222222" in capsys.readouterr().out


# Step checkpoints every 7 steps (3 epochs of 20); each attempt is killed at a step drawn at random (seeded: the test
# is the same every time) after at least one step checkpoint and not at one, so the resume starts
# mid-epoch, between checkpoints, with batches of that epoch already seen.
_KILLS = random.Random(20).sample([s for s in range(8, 60) if s % 7], 3)


@pytest.mark.parametrize(
    ("method", "crash_step", "every", "extra"),
    [
        ("lora", _KILLS[0], 7, []),
        ("dora", _KILLS[1], 7, []),
        ("adalora", _KILLS[2], 7, []),
        # one evaluation, at the end (llm_commonsense's shape): the checkpoint at step 40 ends epoch 2, unevaluated
        ("dora", 45, 10, ["trainer.eval_every_epochs=3"]),
    ],
)
def test_a_run_killed_mid_epoch_resumes_from_its_step_checkpoint_as_if_never_stopped(
    tiny_cfg, monkeypatch, capsys, tmp_path, method, crash_step, every, extra
):
    overrides = [*SHORT, f"trainer.checkpoint_every_steps={every}", *extra]
    cfg = tiny_cfg(f"method={method}", *overrides)
    straight = train(cfg)
    run_dir = records.run_dir(
        cfg.results_dir, task="demo", backbone="tiny", method=method, variant=None, budget=2, seed=0
    )
    straight_dir = run_dir.rename(tmp_path / "straight")

    assert _interrupted(tiny_cfg, monkeypatch, overrides, method, crash_step=crash_step) == run_dir
    saved = torch.load(run_dir / records.CHECKPOINT_NAME, weights_only=True)
    checkpointed = crash_step - crash_step % every
    assert saved["step"] == checkpointed and saved["epoch"] == (checkpointed - 1) // 20
    assert saved["progress"]["loss_count"] == checkpointed - 20 * saved["epoch"]  # the epoch's steps so far
    assert _same(_fresh_method(cfg, loaded=saved["method"]).state_dict(), saved["method"])
    capsys.readouterr()

    resumed = train(cfg)
    batch = checkpointed - 20 * saved["epoch"]
    assert (
        f"resuming in epoch {saved['epoch'] + 1} at step {checkpointed} (batch {batch} of 20)"
        in capsys.readouterr().out
    )
    assert resumed["status"] == "complete" and resumed["extras"]["resumed"][0]["step"] == checkpointed
    assert _without_timings(resumed["epochs"]) == _without_timings(straight["epochs"])
    assert resumed["best"] == straight["best"] and resumed["last"] == straight["last"]
    untimed = {k: v for k, v in straight["extras"].items() if k != "efficiency"}
    assert {k: v for k, v in resumed["extras"].items() if k not in ("resumed", "efficiency")} == untimed
    assert (run_dir / "metrics.jsonl").read_text() == (straight_dir / "metrics.jsonl").read_text()
    ours, theirs = _adapter_tensors(run_dir), _adapter_tensors(straight_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not (run_dir / records.CHECKPOINT_NAME).exists()


_KILLED = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from support import compose
from dora_bench.methods import method_class
from dora_bench.run.train import train
cls, original = method_class("dora"), method_class("dora").after_step
def after_step(self, model, step):
    original(self, model, step)
    if step == 31:
        os.kill(os.getpid(), signal.SIGKILL)  # no except, no finally: the record, log and claim as a kill leaves them
cls.after_step = after_step
train(compose({overrides!r}))
"""


def test_a_run_killed_by_sigkill_resumes_from_its_step_checkpoint_as_if_never_stopped(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from support import REPO

    overrides = [*TINY, f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", "method=dora"]
    overrides += [*SHORT, "trainer.checkpoint_every_steps=7"]
    straight = train(compose(overrides))
    run_dir = records.run_dir(
        tmp_path / "results", task="demo", backbone="tiny", method="dora", variant=None, budget=2, seed=0
    )
    straight_dir = run_dir.rename(tmp_path / "straight")

    script = _KILLED.format(tests=str(REPO / "tests"), overrides=overrides)
    killed = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == 30  # a line after the checkpoint (step 28): the resumed run must drop it, then log it again
    assert torch.load(run_dir / records.CHECKPOINT_NAME, weights_only=True)["step"] == 28

    resumed = train(compose(overrides))
    assert resumed["extras"]["resumed"][0]["step"] == 28
    assert _without_timings(resumed["epochs"]) == _without_timings(straight["epochs"])
    assert resumed["best"] == straight["best"] and resumed["last"] == straight["last"]
    assert (run_dir / "metrics.jsonl").read_text() == (straight_dir / "metrics.jsonl").read_text()
    ours, theirs = _adapter_tensors(run_dir), _adapter_tensors(straight_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_step_checkpoints_change_nothing_a_run_computes(tiny_cfg, tmp_path):
    # where a run saves is an execution setting: the same log, byte for byte, with and without
    plain = train(tiny_cfg("method=dora", *SHORT, f"results_dir={tmp_path / 'plain'}"))
    saved = train(
        tiny_cfg("method=dora", *SHORT, "trainer.checkpoint_every_steps=3", f"results_dir={tmp_path / 'saved'}")
    )
    logs = [next((tmp_path / name).rglob("metrics.jsonl")).read_text() for name in ("plain", "saved")]
    assert logs[0] == logs[1] and _without_timings(plain["epochs"]) == _without_timings(saved["epochs"])


TWELVE_STEPS = ["task.train_size=64", "task.dev_size=32", "trainer.epochs=3", "trainer.lr=5e-3"]  # 3 epochs of 4


def test_a_checkpoint_made_with_other_settings_is_refused(tiny_cfg, monkeypatch):
    from dora_bench.errors import ConfigError

    run_dir = _interrupted(tiny_cfg, monkeypatch, TWELVE_STEPS, "lora", crash_step=6)
    before = (run_dir / "record.json").read_text()
    with pytest.raises(ConfigError) as refused:
        train(tiny_cfg("method=lora", *TWELVE_STEPS, "trainer.lr=1e-3"))
    message = str(refused.value)
    assert "\n" not in message and message == (
        f"checkpoint at {run_dir / records.CHECKPOINT_NAME} was made with different settings "
        f"(trainer.lr: 0.005 -> 0.001): delete it or pass resume=false"
    )
    # nothing was touched: the checkpoint and the failed record wait for a matching attempt
    assert (run_dir / records.CHECKPOINT_NAME).is_file() and (run_dir / "record.json").read_text() == before
    # where and how a run executes may change: a new log interval still resumes
    resumed = train(tiny_cfg("method=lora", *TWELVE_STEPS, "trainer.log_every=1"))
    assert resumed["extras"]["resumed"][0]["epoch"] == 2


def test_resume_false_starts_over_and_checkpoint_false_saves_nothing(tiny_cfg, monkeypatch, capsys):
    run_dir = _interrupted(tiny_cfg, monkeypatch, TWELVE_STEPS, "lora", crash_step=6)
    assert (run_dir / records.CHECKPOINT_NAME).is_file()
    capsys.readouterr()
    again = train(tiny_cfg("method=lora", *TWELVE_STEPS, "resume=false"))
    assert "resuming" not in capsys.readouterr().out and "resumed" not in again["extras"]
    assert [e["epoch"] for e in again["epochs"]] == [1, 2, 3]
    first_line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert not (run_dir / records.CHECKPOINT_NAME).exists()

    unsaved = _interrupted(
        tiny_cfg, monkeypatch, [*TWELVE_STEPS, "overwrite=true", "trainer.checkpoint=false"], "lora", crash_step=6
    )
    assert not (unsaved / records.CHECKPOINT_NAME).exists()
    assert json.loads((unsaved / "metrics.jsonl").read_text().splitlines()[0]) == first_line
