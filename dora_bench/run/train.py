"""The one training loop every method runs through: ``train(cfg) -> record``.

``train`` reads as set-up (``setup``: ``build_data``, ``build_model``, ``build_loader``,
``build_optimizer_and_schedule``, ``resume``) -> epochs (``train_epoch``; on evaluated epochs
``evaluate_epoch``, then ``record_epoch`` and ``save_epoch_checkpoint``) -> ``finish`` ->
``save_outputs``; a dry run is one early return. The optimizer step is written out in full in
``train_epoch``. Methods act only through the hooks of ``methods/base.py``; anything that
touches the loss is visible there (``method.extra_loss``): AdaLoRA's orthogonality penalty
included, which adalora.py computes itself rather than leave to peft's forward.

Data parallel (``torchrun`` / ``accelerate launch``): every process runs this function; each
trains on its share of every global batch (``data_parallel.py``), and only rank 0 claims the
run folder and writes the record, checkpoints and exports.

Gradient accumulation (``trainer.grad_accum``): ``trainer.batch_size`` is the batch of one
optimizer step, fed as ``grad_accum`` micro-batches (``batching.StepBatches``); each micro-batch's
mean loss is weighted by its share of the step's loss terms, so the summed gradient is the
gradient of the whole batch's mean. Steps, schedules and method hooks count optimizer steps.

Resuming: after every evaluated epoch the loop saves ``checkpoint.pt`` (trainable weights,
optimizer, schedule, method state, RNG, the epochs so far); a rerun of an unfinished run
loads it and goes on with the next epoch, which then sees the same batches and dropout
masks as an uninterrupted run would have. With ``trainer.checkpoint_every_steps`` the same
file is also written every N steps, and a rerun goes on from the next batch of that epoch.
The checkpoint goes once the run completes.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from dora_bench import distributed, records
from dora_bench.backbones import BackboneConfig, adapt_target, load_model, load_tokenizer
from dora_bench.errors import ConfigError, RecordExistsError, TrainingDiverged
from dora_bench.methods import AdaptTarget, Method, build_method
from dora_bench.report.heatmaps import save_allocation_heatmap
from dora_bench.run import data_parallel, efficiency, memory, sharding
from dora_bench.run.checkpoints import (
    load_checkpoint,
    restore_training_state,
    rng_of_this_process,
    save_checkpoint,
    set_rng_state,
)
from dora_bench.run.checks import check_config, resolve_lr
from dora_bench.run.launch import autocast_factory, describe_device, torch_device
from dora_bench.run.metrics_log import METRICS_NAME, MetricsLog, start_wandb
from dora_bench.tasks import load_task, task_model_kind

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from dora_bench.tasks import Task


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment and return its record (also written to ``record.json``)."""
    check_config(cfg)
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    budget = int(cfg.budget) if method.uses_budget else None
    out_dir = records.run_dir_of(cfg, budget)
    record = start_record(cfg, budget)
    if cfg.dry_run:
        return dry_run(cfg, method, record, out_dir / "dry_run.json")
    device = torch_device(cfg.trainer.device, cfg.get("num_gpus"))
    distributed.init(device)  # a no-op outside torchrun / accelerate launch
    main = distributed.is_main()
    # a parallel sweep that names this run twice runs it once; the processes of one data-parallel run are one run
    with records.claim(out_dir) if main else contextlib.nullcontext():
        checkpoint = prepare_run_dir(cfg, out_dir, record)
        try:
            run = setup(cfg, method, record, out_dir, checkpoint, device)
            metrics_path = out_dir / METRICS_NAME if main else None
            wandb_run = start_wandb(cfg, record) if main else None
            with MetricsLog(metrics_path, wandb_run=wandb_run, after_step=run.step if checkpoint else None) as log:
                if checkpoint is not None and not run.progress:  # last, so nothing before the loop draws from it
                    set_rng_state(rng_of_this_process(checkpoint))
                for epoch in range(run.done_epochs + 1, run.num_epochs + 1):
                    seconds, train_loss = train_epoch(run, epoch, log)
                    if is_evaluated(run, epoch):
                        entry = evaluate_epoch(run, epoch, seconds, train_loss)
                        record_epoch(run, entry, log)
                        save_epoch_checkpoint(run, epoch)
                        if device.type == "cuda":  # the next epoch's training peak starts here
                            torch.cuda.reset_peak_memory_stats(device)
            finish(run)
            if main:  # rank 0 writes for the run
                save_outputs(run)
            return record
        except BaseException as err:  # keep what was learnt about the failure; a rerun replaces it
            if main:
                record.update(status="failed", error=f"{type(err).__name__}: {err}", finished_at=records.now_iso())
                records.write_json_atomic(out_dir / records.RECORD_NAME, record)
                (out_dir / "traceback.txt").write_text(traceback.format_exc())
            raise


@dataclass
class RunState:
    """What the steps of one run share while it trains; built by ``setup``. (A record on disk, read
    back by the report side, is ``report.cells.RunRecord``.)"""

    cfg: DictConfig
    method: Method
    record: dict[str, Any]
    out_dir: Path
    device: torch.device
    task: Task
    model: torch.nn.Module  # what the method adapted; its hooks, evaluation and export use it
    forward: torch.nn.Module  # what the loop calls: ``model`` (also under FSDP), or torch DDP around it
    target: AdaptTarget
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Callable[[], AbstractContextManager]
    total_steps: int
    num_epochs: int
    replicated: list[torch.nn.Parameter] = field(default_factory=list)  # FSDP: whole on every process
    bar: Any = None  # the progress bar; ``setup`` starts it last
    step: int = 0  # optimizer steps done
    done_epochs: int = 0
    last_finite_loss: float | None = None  # named in the error if the loss stops being finite
    progress: dict[str, float] = field(default_factory=dict)  # the epoch so far, when a step checkpoint resumes it
    pending_rng: dict[str, Any] | None = None  # a step checkpoint's RNG, restored once its epoch's loader is running
    train_peak_mib: float = 0.0  # Table 9 compares training memory: evaluation is left out


# -- set-up ----------------------------------------------------------------------------------------


def start_record(cfg: DictConfig, budget: int | None) -> dict[str, Any]:
    return records.new_record(
        task=cfg.task.name,
        method=cfg.method.name,
        variant=cfg.variant,
        budget=budget,
        seed=cfg.seed,
        backbone=cfg.backbone.name,
        config=OmegaConf.to_container(cfg, resolve=True),
        git_commit=records.git_commit(),
        versions=records.package_versions(),
        started_at=records.now_iso(),
    )


def prepare_run_dir(cfg: DictConfig, out_dir: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse to overwrite a complete record, load the checkpoint of a run to resume (None: a fresh
    start) and clear what an earlier attempt left; every process returns once all have read it."""
    record_path = out_dir / records.RECORD_NAME
    if records.is_complete(record_path) and not cfg.overwrite:
        raise RecordExistsError(f"a complete record exists at {record_path}: kept; pass overwrite=true to run again")
    checkpoint = None
    if cfg.resume and not cfg.overwrite:
        checkpoint = load_checkpoint(out_dir / records.CHECKPOINT_NAME, record["config"])
    # A failed attempt's traceback or an old adapter must not outlive it; a resumed attempt
    # keeps what it continues from.
    if distributed.is_main():
        records.clear_run_dir(out_dir, keep=(records.CHECKPOINT_NAME, METRICS_NAME) if checkpoint else ())
    distributed.barrier()  # every process has read the checkpoint before anything is written
    return checkpoint


def dry_run(cfg: DictConfig, method: Method, record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Build the model and count what trains; no data, no training (the label count comes from the config)."""
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, method, record, int(cfg.task.get("num_labels", 2)))
    record.update(status="dry_run", extras=method.report(model), finished_at=records.now_iso())
    if "initial_trainable_params" in record["extras"]:  # budget-moving methods start larger
        print(
            f"[dora-bench] at the start (initial budget): {record['extras']['initial_trainable_params']:,}; "
            f"at the end (budget={cfg.budget}, if every module kept bT): {record['trainable_params']['paper']:,}"
        )
    records.write_json_atomic(path, record)
    print(f"[dora-bench] dry run: nothing trained; counts written to {path}")
    return record


def setup(
    cfg: DictConfig,
    method: Method,
    record: dict[str, Any],
    out_dir: Path,
    checkpoint: dict[str, Any] | None,
    device: torch.device,
) -> RunState:
    """Data, model + method, optimizer and schedule, in that order (each draws from the seeded RNG);
    the state of a resumed run restored."""
    lr, lr_source = resolve_lr(cfg)
    world = distributed.world_size()
    record["device"] = describe_device(device) + (f" x {world} processes" if world > 1 else "")
    if checkpoint is not None:
        record["started_at"] = checkpoint["started_at"]
    say(
        f"[dora-bench] {cfg.task.name} / {cfg.backbone.name} / {cfg.method.name} budget={record['budget']} "
        f"seed={cfg.seed} -> {out_dir}"
    )
    torch.manual_seed(cfg.seed)
    task = build_data(cfg, record)
    model, target = build_model(cfg, method, record, task.num_labels)
    forward, replicated = place_model(cfg, method, model, device)
    loader, total_steps, num_epochs = build_loader(cfg, task)
    method.on_train_begin(model, total_steps)
    optimizer, scheduler = build_optimizer_and_schedule(cfg, model, lr, total_steps, device)
    weights = cfg.backbone.get("dtype") or "fp32"
    autocast = autocast_factory(device, cfg.trainer.precision, weights)
    record["precision"] = "fp32" if autocast is contextlib.nullcontext else "bf16-autocast"
    record["extras"] = {"lr": lr, "lr_source": lr_source, "total_steps": total_steps, "frozen_weights": weights}
    if world > 1:
        record["extras"]["world_size"] = world
        record["extras"]["parallel"] = "fsdp" if forward is model else "ddp"
    record["extras"]["memory_estimate"] = estimate_memory(cfg, method, model, record["precision"])
    say(
        f"[dora-bench] {total_steps} steps ({num_epochs} epochs of {len(loader)}), lr {lr:g} from {lr_source}, "
        f"device {record['device']}, precision {record['precision']}"
    )
    run = RunState(
        cfg=cfg,
        method=method,
        record=record,
        out_dir=out_dir,
        device=device,
        task=task,
        model=model,
        forward=forward,
        target=target,
        loader=loader,
        optimizer=optimizer,
        scheduler=scheduler,
        autocast=autocast,
        total_steps=total_steps,
        num_epochs=num_epochs,
        replicated=replicated,
    )
    if checkpoint is not None:
        resume(run, checkpoint)
    start_measuring(run)
    return run


def build_data(cfg: DictConfig, record: dict[str, Any]) -> Task:
    """The tokenizer and the task (read, tokenised, cached); what the record says about the data."""
    tokenizer = load_tokenizer(BackboneConfig.from_dict(OmegaConf.to_container(cfg.backbone, resolve=True)))
    task = load_task(OmegaConf.to_container(cfg.task, resolve=True), tokenizer, cache_dir=_cache_dir(cfg))
    task.progress = bool(cfg.trainer.progress) and distributed.is_main()
    record.update(
        eval_examples=task.eval_examples, data_fingerprint=task.data_fingerprint(), main_metric=task.main_metric
    )
    return task


def build_model(
    cfg: DictConfig, method: Method, record: dict[str, Any], num_labels: int
) -> tuple[torch.nn.Module, AdaptTarget]:
    """The backbone with the method applied; its parameter counts go into the record.

    Frozen weights stay in ``backbone.dtype``; whatever trains is held in float32 (bf16 master
    weights would lose small AdamW updates), so Full FT trains an fp32 model whatever the dtype."""
    backbone_cfg = BackboneConfig.from_dict(OmegaConf.to_container(cfg.backbone, resolve=True))
    kind = task_model_kind(cfg.task)
    target = adapt_target(backbone_cfg, kind)
    model = load_model(backbone_cfg, kind, num_labels)
    # a decoder's prompt and its generated tokens share the position table
    generated = int(cfg.task.get("max_new_tokens") or 0) if kind == "causal_lm" else 0
    check_input_length(int(cfg.task.max_length) + generated, method.extra_input_positions(), model, backbone_cfg.name)
    if cfg.trainer.get("gradient_checkpointing"):
        enable_gradient_checkpointing(model, backbone_cfg.name)
    model = train_in_fp32(method.apply(model, target))
    counts = record["trainable_params"] = count_parameters(model, method, target)
    say(
        f"[dora-bench] parameters: {counts['model']:,} in the model, {counts['total']:,} trainable, "
        f"{counts['paper']:,} as the paper counts them"
    )
    return model, target


def place_model(
    cfg: DictConfig, method: Method, model: torch.nn.Module, device: torch.device
) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """The model on its device and, under data parallelism, wrapped: returns what the loop calls
    and the parameters FSDP leaves whole. Before the optimizer: FSDP replaces the parameters it shards."""
    if device.type == "cpu" and cfg.trainer.get("cpu_threads"):
        torch.set_num_threads(int(cfg.trainer.cpu_threads))
    model.to(device)
    data_parallel.check_batch(cfg.trainer.batch_size, int(cfg.trainer.get("grad_accum") or 1))
    return data_parallel.wrap(
        model,
        device,
        fsdp=bool(cfg.trainer.get("fsdp")),
        shard_trainable=method.shard_trainable,
        backbone=cfg.backbone.name,
    )


def build_loader(cfg: DictConfig, task: Task) -> tuple[DataLoader, int, int]:
    """This process's micro-batches, one list per optimizer step; the optimizer steps of the run
    (``trainer.max_steps`` caps them) and the epochs they take."""
    trainer = cfg.trainer
    loader = task.step_loader(
        trainer.batch_size,
        int(trainer.get("grad_accum") or 1),
        seed=cfg.seed,
        group_by_length=trainer.group_by_length,
        num_workers=trainer.num_workers,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )
    total_steps = len(loader) * trainer.epochs
    if trainer.max_steps is not None:
        total_steps = min(total_steps, trainer.max_steps)
    return loader, total_steps, math.ceil(total_steps / len(loader))


def build_optimizer_and_schedule(
    cfg: DictConfig, model: torch.nn.Module, lr: float, total_steps: int, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``build_optimizer``) and the linear warm-up and decay over the run's steps."""
    trainer = cfg.trainer
    optimizer = build_optimizer(model, lr, trainer.weight_decay, device)
    scheduler = linear_warmup_decay(optimizer, round(trainer.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def estimate_memory(cfg: DictConfig, method: Method, model: torch.nn.Module, precision: str) -> dict[str, Any]:
    """``memory.estimate`` at one process's micro-batch, printed as one line; returns it for the record."""
    trainer = cfg.trainer
    kind = task_model_kind(cfg.task)
    estimate = memory.estimate(
        model,
        batch=max(1, int(trainer.batch_size) // (distributed.world_size() * int(trainer.get("grad_accum") or 1))),
        length=int(cfg.task.max_length) + method.extra_input_positions(),
        activation_bytes=2 if precision == "bf16-autocast" else 4,
        lm_head=kind in ("causal_lm", "seq2seq_lm"),
        recompute=bool(trainer.get("gradient_checkpointing")),
    )
    say(memory.line(estimate))
    return memory.as_record(estimate)


def resume(run: RunState, checkpoint: dict[str, Any]) -> None:
    """Restore weights, optimizer, schedule and method state from ``checkpoint``, and the epochs so far
    into the record (its RNG is restored last, by ``train``, just before the loop)."""
    record = run.record
    run.done_epochs, run.step = restore_training_state(
        checkpoint,
        run.out_dir / records.CHECKPOINT_NAME,
        run.total_steps,
        run.model,
        run.method,
        run.optimizer,
        run.scheduler,
    )
    record["epochs"] = checkpoint["epochs"]
    record["best"], record["last"] = select_epochs(record["epochs"], run.task.main_metric)
    # the commit that wrote the checkpoint (None: a checkpoint older than the key), since the record's own
    # git_commit is this attempt's: steps before ``step`` may have run under other code
    written_by = checkpoint.get("git_commit")
    record["extras"]["resumed"] = [
        *checkpoint["resumed"],
        {"epoch": run.done_epochs + 1, "step": run.step, "at": records.now_iso(), "checkpoint_commit": written_by},
    ]
    if written_by and written_by != record.get("git_commit"):
        say(
            f"[dora-bench] note: the checkpoint was written at commit {written_by}, this attempt runs "
            f"{record.get('git_commit')}; both are in the record (extras.resumed)"
        )
    run.progress = dict(checkpoint.get("progress") or {})
    if run.progress:  # a step checkpoint: its RNG waits for the epoch's loader (``train_epoch``)
        run.pending_rng = rng_of_this_process(checkpoint)
        run.last_finite_loss = run.progress.get("last_finite_loss")
        batch, epoch = run.step - run.done_epochs * len(run.loader), run.done_epochs + 1
        say(f"[dora-bench] resuming in epoch {epoch} at step {run.step} (batch {batch} of {len(run.loader)})")
    else:
        say(f"[dora-bench] resuming from epoch {run.done_epochs + 1} (step {run.step})")


def start_measuring(run: RunState) -> None:
    """Peak memory counted from here; the progress bar started at the step the run is at."""
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    efficiency.reset_peak_rss()
    run.bar = tqdm(
        total=run.total_steps,
        initial=run.step,
        disable=not run.cfg.trainer.progress or not distributed.is_main(),
        dynamic_ncols=True,
        desc="train",
    )


# -- the loop ----------------------------------------------------------------------------------------


def train_epoch(run: RunState, epoch: int, log: MetricsLog) -> tuple[float, float]:
    """One epoch of optimizer steps; returns (seconds, mean training loss). A step checkpoint's epoch
    goes on at its next batch, with its loss and seconds so far."""
    run.model.train()
    # Epoch e shuffles with (seed, e - 1) (batching.ShuffledBatches counts the epochs it has
    # served from 0): set it, since a resumed run starts its loader at a later epoch (or step).
    run.loader.sampler.set_epoch(epoch - 1, skip=run.step - (epoch - 1) * len(run.loader))
    if distributed.world_size() > 1:  # each process its own dropout masks, a function of (seed, epoch, rank)
        torch.manual_seed(run.cfg.seed * 100_003 + epoch * 1_009 + distributed.rank())
    steps = iter(run.loader)  # draws the loader's base seed: before a step checkpoint's RNG goes back
    if run.pending_rng is not None:
        set_rng_state(run.pending_rng)
        run.pending_rng = None
    done, run.progress = run.progress, {}
    start, loss_sum, loss_count = time.perf_counter(), done.get("loss_sum", 0.0), int(done.get("loss_count", 0))
    for micro_batches in steps:
        run.step += 1
        result = train_step(run, micro_batches)
        loss_sum, loss_count = loss_sum + result.loss, loss_count + 1
        report_step(run, epoch, result, log)
        seconds = done.get("seconds", 0.0) + time.perf_counter() - start
        save_step_checkpoint(run, epoch, {"loss_sum": loss_sum, "loss_count": loss_count, "seconds": seconds})
        if run.step >= run.total_steps:
            break
    return done.get("seconds", 0.0) + time.perf_counter() - start, loss_sum / max(loss_count, 1)


@dataclass
class StepResult:
    """One optimizer step as the log sees it: the whole batch's losses (over every process)."""

    loss: float
    task_loss: torch.Tensor
    extra: torch.Tensor | None
    grad_norm: torch.Tensor


def train_step(run: RunState, micro_batches: list[dict[str, torch.Tensor]]) -> StepResult:
    """One optimizer step, every hook in sight: the gradient of the whole batch (``accumulate``),
    clipped, checked, applied; then the method's hook, while the gradients are still there."""
    model, method, optimizer, scheduler, step = run.model, run.method, run.optimizer, run.scheduler, run.step
    loss, task_loss, extra = accumulate(run, micro_batches)
    if run.replicated:  # FSDP leaves a PEFT method's parameters whole: their gradients are averaged here
        sharding.average_gradients(run.replicated)
    grad_norm = torch.nn.utils.clip_grad_norm_(optimizer_params(optimizer), run.cfg.trainer.max_grad_norm)
    grad_norm = sharding.whole(grad_norm)  # FSDP's norm of sharded gradients is itself sharded
    if distributed.world_size() > 1:  # the global batch's loss, the same on every process: all stop together
        loss, task_loss = data_parallel.mean_over_processes(torch.stack([loss, task_loss]))
    loss_value = loss.item()  # one GPU sync per step; the check, the bar and the log need it
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        raise TrainingDiverged(
            f"step {step}: loss {loss_value}, gradient norm {float(grad_norm)} "
            f"(last finite loss {run.last_finite_loss}): lower the lr, then rerun"
        )
    optimizer.step()
    scheduler.step()
    method.after_step(model, step)  # gradients are still there (AdaLoRA's sensitivity needs them)
    optimizer.zero_grad(set_to_none=True)
    run.last_finite_loss = loss_value
    return StepResult(loss_value, task_loss, extra, grad_norm)


def accumulate(
    run: RunState, micro_batches: list[dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward and backward over the step's micro-batches, leaving the gradient of the whole batch's
    mean loss plus the method's term; returns (loss, task loss, method term), detached.

    Each micro-batch's mean loss is weighted by its share of the step's loss terms (tokens for a
    language model: 4 x 4 equals 16 however their lengths differ), over every process under data
    parallel (``data_parallel.loss_shares``). The method's term is added once, with the last
    micro-batch: it depends on the weights alone, which don't move within a step, so once is the
    big batch's gradient. DDP averages over processes only at the last backward (``no_sync``)."""
    causal = run.task.model_kind == "causal_lm"
    weighted = len(micro_batches) > 1 or distributed.world_size() > 1
    shares = data_parallel.loss_shares(micro_batches, causal, run.device) if weighted else [None]
    task_losses, extra = [], None
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else data_parallel.no_sync(run.forward):
            batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
            with run.autocast():
                task_loss = run.forward(**batch).loss
            if shares[index] is not None:
                task_loss = task_loss * shares[index]
            if last:
                extra = run.method.extra_loss(run.model, run.step)
            (task_loss if extra is None else task_loss + extra).backward()
        task_losses.append(task_loss.detach())
    task_loss = task_losses[0] if len(task_losses) == 1 else torch.stack(task_losses).sum()
    return (task_loss if extra is None else task_loss + extra.detach()), task_loss, extra


def report_step(run: RunState, epoch: int, result: StepResult, log: MetricsLog) -> None:
    """The progress bar every step, a metrics line every ``trainer.log_every`` steps and at the last."""
    lr = run.scheduler.get_last_lr()[0]
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{lr:.2e}", epoch=epoch)
    if run.step % run.cfg.trainer.log_every == 0 or run.step == run.total_steps:
        log.write(
            {
                "step": run.step,
                "epoch": epoch,
                "loss": result.loss,
                "task_loss": result.task_loss.item(),
                "extra_loss": None if result.extra is None else result.extra.item(),
                "lr": lr,
                "grad_norm": float(result.grad_norm),
            }
        )


def save_step_checkpoint(run: RunState, epoch: int, progress: dict[str, float]) -> None:
    """Every ``trainer.checkpoint_every_steps`` steps, what a rerun resumes from mid-epoch. Not at a
    step an epoch checkpoint is about to be written at: that one follows the evaluation."""
    every = run.cfg.trainer.get("checkpoint_every_steps")
    if not every or run.step % every:
        return
    epoch_ends = run.step == min(epoch * len(run.loader), run.total_steps)
    if epoch_ends and is_evaluated(run, epoch):
        return
    write_checkpoint(run, epoch - 1, progress={**progress, "last_finite_loss": run.last_finite_loss})


def is_evaluated(run: RunState, epoch: int) -> bool:
    """Whether ``epoch`` ends with an evaluation (every ``trainer.eval_every_epochs``, and the last)."""
    return epoch % run.cfg.trainer.eval_every_epochs == 0 or epoch == run.num_epochs


def evaluate_epoch(run: RunState, epoch: int, seconds: float, train_loss: float) -> dict[str, Any]:
    """Score the dev split(s); returns the epoch's entry for the record. (The training peak of
    memory is read first: evaluation's own allocations are left out of it.)"""
    if run.device.type == "cuda":
        run.train_peak_mib = max(run.train_peak_mib, torch.cuda.max_memory_allocated(run.device) / 2**20)
    start = time.perf_counter()
    metrics = run.task.evaluate(
        run.model, batch_size=run.cfg.trainer.eval_batch_size, device=run.device, autocast=run.autocast
    )
    return {
        "epoch": epoch,
        "step": run.step,
        "seconds": round(seconds, 3),
        "eval_seconds": round(time.perf_counter() - start, 3),
        "train_loss": train_loss,
        "countable": run.step >= run.method.first_countable_step(),
        "metrics": metrics,
    }


def record_epoch(run: RunState, entry: dict[str, Any], log: MetricsLog) -> None:
    """The epoch into the record (best and last picked again) and the log; rank 0 prints it and
    writes the record, so the epochs so far survive a crash."""
    record, metrics = run.record, entry["metrics"]
    record["epochs"].append(entry)
    log.write({"step": run.step, "epoch": entry["epoch"], "eval": metrics})
    record["best"], record["last"] = select_epochs(record["epochs"], run.task.main_metric)
    if distributed.is_main():
        run.bar.write(
            f"[dora-bench] epoch {entry['epoch']}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            + ("" if entry["countable"] else "  (budget not final yet: not eligible as best)")
        )
        records.write_json_atomic(run.out_dir / records.RECORD_NAME, record)


def save_epoch_checkpoint(run: RunState, epoch: int) -> None:
    """What a rerun resumes from (``trainer.checkpoint``). On every process: sharded weights are
    gathered from all; rank 0 writes."""
    if not run.cfg.trainer.checkpoint:
        return
    write_checkpoint(run, epoch)


def write_checkpoint(run: RunState, done_epochs: int, progress: dict[str, float] | None = None) -> None:
    """The run's ``checkpoint.pt`` after ``done_epochs`` whole epochs (and ``progress`` into the next)."""
    save_checkpoint(
        run.out_dir / records.CHECKPOINT_NAME,
        record=run.record,
        epoch=done_epochs,
        step=run.step,
        total_steps=run.total_steps,
        model=run.model,
        method=run.method,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        progress=progress,
    )


def finish(run: RunState) -> None:
    """The method's report, its final parameter count and the run's efficiency into the record
    (on every process)."""
    run.bar.close()
    record, method, model = run.record, run.method, run.model
    if run.device.type == "cuda":
        record["peak_gpu_mib"] = round(run.train_peak_mib, 1)
    record["extras"].update(method.report(model))
    # Budget-moving methods (DoRA, AdaLoRA) only know their paper count once the budget is final.
    record["trainable_params"]["paper"] = int(method.paper_trainable_params(model, run.target))
    record["extras"]["efficiency"] = efficiency.measure(record["epochs"], run.step, run.device, run.train_peak_mib)
    record_measured_memory(run)


def record_measured_memory(run: RunState) -> None:
    """The measured peak beside the estimate: torch's allocated peak in training on a GPU, else peak RSS."""
    measured = run.record["extras"]["efficiency"]
    on_gpu = measured["peak_gpu_mib"] is not None
    peak_gib = (measured["peak_gpu_mib"] if on_gpu else measured["peak_rss_mib"]) / 1024
    source = "torch.cuda.max_memory_allocated" if on_gpu else "peak RSS"
    measured.update(peak_memory_gib=round(peak_gib, 4), peak_memory_source=source)
    say(memory.measured_line(run.record["extras"]["memory_estimate"], peak_gib, source))


def save_outputs(run: RunState) -> None:
    """Rank 0: the exported adapter, the rank heatmap (drawn by the report side), the resolved
    config and the complete record; the checkpoint goes (the exported adapter is the result)."""
    record, out_dir = run.record, run.out_dir
    print(efficiency.line(record))
    record["artifacts"] = {"metrics": METRICS_NAME, **run.method.export(run.model, out_dir)}
    save_rank_heatmap(run)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg, resolve=True))
    record["extras"]["efficiency"]["adapter_mib"] = efficiency.artifact_mib(out_dir, record["artifacts"].get("adapter"))
    record.update(status="complete", finished_at=records.now_iso())
    records.write_json_atomic(out_dir / records.RECORD_NAME, record)
    (out_dir / records.CHECKPOINT_NAME).unlink(missing_ok=True)
    best = record["best"]
    print(
        f"[dora-bench] done: best epoch {best['epoch']} {run.task.main_metric} "
        f"{best['metrics'][run.task.main_metric]:.4f}; record {out_dir / records.RECORD_NAME}"
    )


def save_rank_heatmap(run: RunState) -> None:
    """A budget-moving method's final ranks as ``rank_allocation.png`` (drawn by the report side)."""
    grid = run.record["extras"].get("rank_allocation_grid")
    if not grid:
        return
    cfg = run.cfg
    title = f"{cfg.method.name} on {cfg.task.name}, budget {cfg.budget}, seed {cfg.seed}"
    save_allocation_heatmap(grid, run.out_dir / "rank_allocation.png", title)
    run.record["artifacts"]["rank_allocation"] = "rank_allocation.png"


# -- helpers (each small enough to test alone) ----------------------------------------------


def train_in_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every trainable parameter in float32 (frozen ones keep their dtype)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def count_parameters(model: torch.nn.Module, method: Method, target: AdaptTarget) -> dict[str, int]:
    """``paper``: as the paper counts (head excluded; Full FT: everything); ``paper_nominal``:
    the same before training (DoRA, AdaLoRA: bT components in every module); ``total``: everything
    that trains; ``model``: every parameter of the model."""
    paper = int(method.paper_trainable_params(model, target))
    return {
        "paper": paper,  # updated at the end of training (DoRA, AdaLoRA: kept components)
        "paper_nominal": paper,
        "total": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model": sum(p.numel() for p in model.parameters()),
    }


def select_epochs(epochs: list[dict], main_metric: str) -> tuple[dict | None, dict | None]:
    """Best (highest main metric among countable epochs; the earliest on ties) and last.

    If no epoch is countable (a run shorter than the method's budget phase), the best is
    the last epoch, marked ``countable: false`` so tables can say so."""
    if not epochs:
        return None, None
    last = {"epoch": epochs[-1]["epoch"], "metrics": epochs[-1]["metrics"]}
    countable = [e for e in epochs if e["countable"]]
    if not countable:
        return {**last, "countable": False}, last
    best = max(countable, key=lambda e: (e["metrics"][main_metric], -e["epoch"]))
    return {"epoch": best["epoch"], "metrics": best["metrics"], "countable": True}, last


def enable_gradient_checkpointing(model: torch.nn.Module, backbone: str) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (memory for time).

    Non-reentrant checkpointing: it needs no input that requires grad (the embeddings are frozen)
    and replays dropout's random numbers, so the adapters see the same masks twice."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"backbone {backbone!r} can't checkpoint its layers: set trainer.gradient_checkpointing=false"
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # a key/value cache is useless in training and clashes with recomputation


def check_input_length(max_length: int, extra: int, model: torch.nn.Module, backbone: str) -> None:
    """Refuse inputs the backbone has no position embeddings for (they would crash mid-epoch
    in an index error). ``extra``: positions the method adds (a soft prompt). RoBERTa's
    positions start after its padding index."""
    config = model.config
    limit = config.max_position_embeddings
    if config.model_type == "roberta":
        limit -= config.pad_token_id + 1
    if max_length + extra > limit:
        added = f" + {extra} the method adds" if extra else ""
        raise ConfigError(
            f"task.max_length={max_length}{added} exceeds backbone {backbone!r}'s {limit} positions: "
            f"set task.max_length={limit - extra} or less"
        )


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights take no weight decay (the BERT-family rule).
    Everything else decays, DoRA's scalar gates ``c`` included, as in the released code."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            lowered = name.lower()
            exempt = lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered
            (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"  # the fused kernel is CUDA-only; on CPU the foreach path is the fast one
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def say(message: str) -> None:
    """Print a progress line once per run: from rank 0 of a data-parallel run, as from a single process."""
    if distributed.is_main():
        print(message)


def _cache_dir(cfg: DictConfig) -> Path | None:
    value = cfg.get("cache_dir")
    return Path(str(value)).expanduser() if value else None
