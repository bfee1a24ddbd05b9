"""Checkpoints: what a crashed or killed run needs to go on where it stopped.

Saved after every evaluated epoch (``trainer.checkpoint``) and, with
``trainer.checkpoint_every_steps``, every N optimizer steps inside an epoch, to the same file;
removed when the run completes. A rerun of the same settings resumes from it (``resume``).
Only trainable weights are kept: the frozen backbone is rebuilt from the config. Settings
must match except the keys that say where or how a run executes (``records.EXECUTION_KEYS``).

A step checkpoint also holds the epoch so far (``progress``: its summed training loss, steps
and seconds) and every process's RNG; where in the epoch the loader is needs no saving, since
an epoch's batch order is a function of (seed, epoch) and the step count says how far it went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dora_bench import distributed, records
from dora_bench.errors import ConfigError
from dora_bench.methods import Method
from dora_bench.run import sharding

CHECKPOINT_FORMAT = 1
#: What save_checkpoint writes and a resume reads: a file without one of these can't be resumed.
CHECKPOINT_KEYS = (
    "format",
    "epoch",
    "step",
    "total_steps",
    "config",
    "started_at",
    "epochs",
    "resumed",
    "params",
    "optimizer",
    "scheduler",
    "method",
    "rng",
)


def save_checkpoint(
    path: Path,
    *,
    record: dict[str, Any],
    epoch: int,
    step: int,
    total_steps: int,
    model: torch.nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, float] | None = None,
) -> None:
    """Everything the loop needs to go on after ``epoch`` epochs and ``step`` optimizer steps, written
    atomically by rank 0. Only trainable weights: the frozen backbone is rebuilt from the config.
    ``progress``: a step checkpoint's epoch so far (None: saved at the end of ``epoch``).

    Called on every process: under FSDP the trainable weights and their AdamW moments may be sharded
    (Full FT), and gathering them whole takes every process; so does gathering the RNG states."""
    rng_by_rank = distributed.gather_objects(rng_state()) if progress is not None else None
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    gather = any(sharding.is_sharded(p) for _, p in trainable)
    if not distributed.is_main() and not gather:
        return
    params = {name: sharding.whole_on_main(p) for name, p in trainable}
    optimizer_state = sharding.whole_optimizer_state(optimizer) if gather else optimizer.state_dict()
    if not distributed.is_main():
        return
    records.save_torch_atomic(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "step": step,
            "total_steps": total_steps,
            "config": record["config"],
            "started_at": record["started_at"],
            "epochs": record["epochs"],
            "resumed": record["extras"].get("resumed", []),
            # the code that trained up to here: a resume under another commit says so in its record
            "git_commit": record.get("git_commit"),
            "params": params,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "method": method.state_dict(),
            "rng": rng_state(),
            # mid-epoch, each process's dropout masks go on from its own generator
            **({"progress": progress, "rng_by_rank": rng_by_rank} if progress is not None else {}),
        },
    )


def rng_state() -> dict[str, Any]:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, refused unless made with the same settings
    (``config``: the resolved config of this attempt; bookkeeping keys may differ)."""
    if not path.is_file():
        return None
    try:
        # mmap: the processes of a sharded run each read the pages they need, not a copy of the whole file
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise ConfigError(
            f"checkpoint at {path} can't be read ({type(err).__name__}): delete it or pass resume=false"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"checkpoint at {path} is not a dora-bench checkpoint of format {CHECKPOINT_FORMAT}: "
            f"delete it or pass resume=false"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ConfigError(
            f"checkpoint at {path} is not a dora-bench checkpoint of format {CHECKPOINT_FORMAT} "
            f"(it has no {', '.join(missing)}): delete it or pass resume=false"
        )
    differences = setting_differences(checkpoint["config"], config)
    if differences:
        _refuse_checkpoint(path, differences)
    return checkpoint


def setting_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: saved -> current"`` for every setting that differs, bookkeeping keys left out."""
    before, after = records.flatten_config(saved), records.flatten_config(current)
    keys = sorted(
        key
        for key in before.keys() | after.keys()
        if not records.is_execution_key(key) and before.get(key, _ABSENT) != after.get(key, _ABSENT)
    )
    return [f"{key}: {before.get(key, _ABSENT)} -> {after.get(key, _ABSENT)}" for key in keys]


def restore_training_state(
    checkpoint: dict[str, Any],
    path: Path,
    total_steps: int,
    model: torch.nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, int]:
    """Load weights, optimizer, schedule and method state; return (epochs done, steps done).
    The RNG is restored separately (``set_rng_state``), right before the loop."""
    if checkpoint["total_steps"] != total_steps:  # same config, different data
        _refuse_checkpoint(path, [f"total_steps: {checkpoint['total_steps']} -> {total_steps}"])
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if checkpoint["params"].keys() != trainable.keys():
        changed = sorted(checkpoint["params"].keys() ^ trainable.keys())
        _refuse_checkpoint(path, [f"trainable parameters: {len(changed)} names differ, e.g. {changed[0]}"])
    reshaped = [name for name, p in trainable.items() if checkpoint["params"][name].shape != p.shape]
    if reshaped:  # checked before any weight is copied: a refused model is left as it was
        name = reshaped[0]
        before, now = tuple(checkpoint["params"][name].shape), tuple(trainable[name].shape)
        _refuse_checkpoint(
            path, [f"trainable parameters: {len(reshaped)} shapes differ, e.g. {name} {before} -> {now}"]
        )
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(sharding.like(checkpoint["params"][name], param))
    optimizer.load_state_dict(sharding.optimizer_state_like(checkpoint["optimizer"], optimizer))
    scheduler.load_state_dict(checkpoint["scheduler"])
    method.load_state_dict(checkpoint["method"])
    return int(checkpoint["epoch"]), int(checkpoint["step"])


def rng_of_this_process(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The RNG state this process saved: its own in a step checkpoint, rank 0's otherwise (each
    data-parallel epoch reseeds every process, so an epoch checkpoint needs no other)."""
    by_rank = checkpoint.get("rng_by_rank")
    return by_rank[distributed.rank()] if by_rank else checkpoint["rng"]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore torch's generators (dropout masks, the loader's base seed) as they were when saved."""
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        for index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, index)


def _refuse_checkpoint(path: Path, differences: list[str]) -> None:
    shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
    raise ConfigError(
        f"checkpoint at {path} was made with different settings ({shown}): delete it or pass resume=false"
    )


_ABSENT = "(absent)"
