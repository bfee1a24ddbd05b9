"""The loop's side of data parallelism: one process per GPU, each with its share of every global batch.

    torchrun --nproc-per-node 4 -m dora_bench.run.cli task=gsm8k backbone=llama method=dora budget=8
    accelerate launch --multi_gpu --num_processes 4 -m dora_bench.run.cli task=gsm8k ...

``trainer.batch_size`` stays the *global* batch: each of the W processes gets ``batch[rank::W]``
(``batching.ShuffledBatches``), and its loss is weighted so that torch DDP's gradient average
equals the gradient of the loss over the whole global batch, the one a single process computes:

    loss_r = mean_r · n_r · W / N      (n_r: loss terms on process r, N = Σ n_r)
    (1/W) Σ_r ∇loss_r = Σ_r ∇(sum_r) / N = ∇(global mean)

With gradient accumulation (``trainer.grad_accum``) each process's share is itself fed as
micro-batches ``k``, weighted ``n_rk · W / N`` (N over every micro-batch of the step on every
process); DDP skips its all-reduce for all but the last (``no_sync``).

A loss term is a response token for a language model (labels shifted by one, as the model shifts
them) or a sequence, and an example for a classifier. Parameters start equal (same seed, and DDP
broadcasts rank 0's at wrap time) and receive the same averaged gradients, so every process holds
the same weights after every step; methods that score or prune from weights and gradients (DoRA,
AdaLoRA) decide the same on every process, and DoRA also ranks from rank 0's broadcast scores.
Only rank 0 writes the record, checkpoints and exports; every process evaluates (causal-LM tasks
share the generation out and gather it).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from dora_bench import distributed
from dora_bench.errors import ConfigError
from dora_bench.run import sharding
from dora_bench.tasks.batching import LABEL_PAD


def check_batch(batch_size: int, grad_accum: int = 1) -> None:
    """The global batch must split evenly over the processes, and each share into ``grad_accum``
    micro-batches (equal shares, so equal memory)."""
    world = distributed.world_size()
    if world > 1 and batch_size % (world * grad_accum):
        accumulated = f" x trainer.grad_accum={grad_accum} micro-batches" if grad_accum > 1 else ""
        raise ConfigError(
            f"trainer.batch_size={batch_size} is the global batch and must split over {world} processes"
            f"{accumulated}: set it to a multiple of {world * grad_accum}"
        )


def wrap(
    model: nn.Module, device: torch.device, *, fsdp: bool = False, shard_trainable: bool = False, backbone: str = ""
) -> tuple[nn.Module, list[nn.Parameter]]:
    """``(forward, replicated)``: the module the loop calls forward on, and the parameters whose gradients
    the loop itself must average (``sharding.average_gradients``).

    One process: ``model``, nothing. Several: torch DDP around ``model`` (DDP averages), or with
    ``fsdp`` the model sharded in place (``sharding.py``) and the parameters it left whole.
    Methods keep the unwrapped ``model`` (their hooks read its submodules by name)."""
    if distributed.world_size() == 1:
        return model, []
    if fsdp:
        return model, sharding.shard(model, shard_trainable=shard_trainable, backbone=backbone)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None), []


def loss_terms(batch: dict[str, torch.Tensor], causal: bool) -> int:
    """How many terms this process's mean loss averages: label tokens (shifted by one for a causal LM),
    else examples."""
    labels = batch.get("labels")
    if labels is not None and labels.dim() > 1:
        return int(((labels[:, 1:] if causal else labels) != LABEL_PAD).sum())
    return len(next(iter(batch.values())))


def loss_shares(micro_batches: list[dict[str, torch.Tensor]], causal: bool, device: torch.device) -> list[float]:
    """``n_rk · W / N`` for each of this process's micro-batches ``k``: the factors that turn their
    mean losses into their shares of the mean over the whole global batch of one optimizer step
    (``N``: the loss terms of every micro-batch on every process; one micro-batch: ``n_r · W / N``)."""
    local = [loss_terms(batch, causal) for batch in micro_batches]
    total = distributed.all_reduce_sum_(torch.tensor([float(sum(local))], device=device)).item()
    return [n * distributed.world_size() / max(total, 1.0) for n in local]


def no_sync(forward: nn.Module) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` (a backward that only accumulates, for all but a step's last micro-batch);
    nothing to skip in one process. FSDP reduces every micro-batch's gradients: more traffic, the same sum."""
    from torch.nn.parallel import DistributedDataParallel

    return forward.no_sync() if isinstance(forward, DistributedDataParallel) else contextlib.nullcontext()


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean over processes of per-process values (a copy; for logging and the divergence check,
    which must stop every process at the same step)."""
    return distributed.all_reduce_sum_(values.detach().clone()) / distributed.world_size()
