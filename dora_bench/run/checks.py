"""Check a composed config before anything is built: every error is one line that names the fix.

Methods and tasks check their own fields (their Config ``__post_init__``); this module
checks what the loop itself reads, and resolves the learning rate.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dora_bench.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that can't work."""
    from dora_bench.methods import method_class

    method_class(cfg.method.name)  # unknown method -> one line listing the known ones
    _positive_int(cfg.budget, "budget", "budget=2 (the paper's budgets are 2 and 8)")
    _non_negative_int(cfg.seed, "seed")
    trainer = cfg.trainer
    _positive_int(trainer.epochs, "trainer.epochs", "trainer.epochs=3")
    _positive_int(trainer.batch_size, "trainer.batch_size", "trainer.batch_size=16")
    _positive_int(trainer.eval_batch_size, "trainer.eval_batch_size", "trainer.eval_batch_size=64")
    if trainer.max_steps is not None:
        _positive_int(trainer.max_steps, "trainer.max_steps", "trainer.max_steps=20, or null for whole epochs")
    _positive_int(trainer.eval_every_epochs, "trainer.eval_every_epochs", "trainer.eval_every_epochs=1")
    _positive_int(trainer.log_every, "trainer.log_every", "trainer.log_every=10")
    check_step_settings(trainer)
    if trainer.get("cpu_threads") is not None:
        _positive_int(trainer.cpu_threads, "trainer.cpu_threads", "trainer.cpu_threads=1, or null for torch's default")
    if trainer.lr is not None:
        _positive_float(trainer.lr, "trainer.lr")
    if not 0.0 <= float(trainer.warmup_ratio) < 1.0:
        raise ConfigError(f"trainer.warmup_ratio={trainer.warmup_ratio} must lie in [0, 1): the paper uses 0.06")
    if float(trainer.weight_decay) < 0:
        raise ConfigError(f"trainer.weight_decay={trainer.weight_decay} is negative: use 0.01 (SPEC §3) or 0")
    if float(trainer.max_grad_norm) <= 0:
        raise ConfigError(f"trainer.max_grad_norm={trainer.max_grad_norm} must be > 0: use 1.0 (SPEC §3)")
    if trainer.get("fsdp") and cfg.method.get("export_merged"):
        raise ConfigError(
            "method.export_merged=true needs the whole backbone in one process and trainer.fsdp=true splits it: "
            "set method.export_merged=false and merge adapter/ afterwards (peft's merge_and_unload)"
        )
    if trainer.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer.precision!r} is not known: use one of {', '.join(PRECISIONS)}")
    if cfg.backbone.get("dtype", "fp32") != "fp32" and trainer.precision == "fp32":
        # fp32 adapters meet bf16 weights only under autocast
        raise ConfigError(
            f"backbone.dtype={cfg.backbone.dtype} runs under bf16 autocast: set trainer.precision=auto "
            f"(or bf16), or backbone.dtype=fp32 for an fp32 run"
        )
    for key, value in (
        ("resume", cfg.get("resume")),
        ("trainer.checkpoint", trainer.get("checkpoint")),
        ("trainer.gradient_checkpointing", trainer.get("gradient_checkpointing")),
        ("overwrite", cfg.overwrite),
        ("dry_run", cfg.dry_run),
    ):
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
    if cfg.logger not in ("none", "wandb"):
        raise ConfigError(f"logger={cfg.logger!r} is not known: use logger=none or logger=wandb")
    for key in ("data_dir", "train_file", "dev_file"):
        value = cfg.task.get(key)
        if value is not None and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"task.{key}={value} does not exist: point it at an existing path")
    if cfg.variant is not None and not str(cfg.variant).replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"variant={cfg.variant!r} must be letters, digits, '_' or '.': it names a folder")
    allocation = cfg.method.get("allocation", "importance")
    if allocation != "importance" and cfg.variant is None:
        raise ConfigError(
            f"method.allocation={allocation} is a control arm and needs its own records: "
            f"add +experiment/ablation={allocation} (or variant={allocation})"
        )
    check_results_dir(cfg.results_dir)
    resolve_lr(cfg)


def check_step_settings(trainer: DictConfig) -> None:
    """``trainer.grad_accum`` micro-batches must each get at least one example from every step's batch;
    step checkpoints need a positive interval and checkpoints on (else they would silently not be saved)."""
    accum = _positive_int(trainer.get("grad_accum", 1), "trainer.grad_accum", "trainer.grad_accum=1")
    if trainer.batch_size % accum:
        raise ConfigError(
            f"trainer.batch_size={trainer.batch_size} is the batch of one optimizer step and must split into "
            f"trainer.grad_accum={accum} equal micro-batches: set trainer.batch_size to a multiple of {accum}"
        )
    if trainer.get("checkpoint_every_steps") is not None:
        _positive_int(
            trainer.checkpoint_every_steps,
            "trainer.checkpoint_every_steps",
            "trainer.checkpoint_every_steps=500, or null for epoch checkpoints only",
        )
        if not trainer.checkpoint:
            raise ConfigError(
                f"trainer.checkpoint_every_steps={trainer.checkpoint_every_steps} saves nothing with "
                f"trainer.checkpoint=false: set trainer.checkpoint=true or trainer.checkpoint_every_steps=null"
            )


def check_results_dir(value: Any) -> None:
    """Refuse a ``results_dir`` that can't hold run folders: a file, a path under a file, or a
    place where no folder can be made (a read-only disk, /proc). The nearest existing folder is
    probed by making and removing an empty folder in it: permission bits can't tell, since root
    passes them on a read-only disk too."""
    path = Path(str(value)).expanduser()
    fix = "pass results_dir=<a folder you can write>"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"results_dir={value} is a file, not a folder: {fix}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"results_dir={value} lies under {existing}, which is a file: {fix}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dora-bench-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"results_dir={value}: can't create folders in {existing} ({err.strerror}): {fix}") from None


def resolve_lr(cfg: DictConfig) -> tuple[float, str]:
    """The learning rate and where it came from, in order of precedence:
    ``trainer.lr`` (the command line) > a rate picked for the method by a sweep (``lr_picks``,
    with ``lr_picks_source`` saying which) > the method's published lr for this task
    (``method.lr_by_task``) > the method's lr (``method.lr``) > the task's (Table 8)."""
    picks = cfg.get("lr_picks") or {}
    candidates: list[tuple[Any, str]] = [
        (cfg.trainer.lr, "trainer.lr"),
        (
            picks.get(cfg.method.name),
            f"lr_picks.{cfg.method.name} ({cfg.get('lr_picks_source') or 'source not given'})",
        ),
        ((cfg.method.get("lr_by_task") or {}).get(cfg.task.name), f"method.lr_by_task.{cfg.task.name}"),
        (cfg.method.get("lr"), "method.lr"),
        (cfg.task.get("lr"), "task.lr"),
    ]
    for value, source in candidates:
        if value is not None:
            return _positive_float(value, source), source
    raise ConfigError(f"no learning rate for task {cfg.task.name!r}: set trainer.lr=<value>")


def _positive_int(value: Any, key: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value} must be a whole number >= 1: e.g. {example}")
    return value


def _non_negative_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value} must be a whole number >= 0")
    return value


def _positive_float(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number: e.g. {key}=2e-4") from None
    if not number > 0:
        raise ConfigError(f"{key}={value} must be > 0: e.g. {key}=2e-4")
    return number
