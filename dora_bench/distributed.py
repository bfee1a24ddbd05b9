"""Data-parallel runs: what each part of a run needs to know about its process group.

``torchrun --nproc-per-node N -m dora_bench.run.cli ...`` (or ``accelerate launch``) starts N copies
of the run and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; ``init`` joins
them into one process group (NCCL on GPUs, gloo on CPUs). Every copy builds the same model from
the same seed and sees its own share of each global batch. Outside such a launch every function
here answers as a single process would (rank 0 of 1), so the rest of the code never branches on
whether it is distributed.

A leaf module: the methods (DoRA broadcasts its scores) and the loop both import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def launched() -> bool:
    """True in a process started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device) -> None:
    """Join the launch's process group (once per process); NCCL for CUDA devices, gloo otherwise.

    The timeout is long because ranks wait for each other at the first collective after an
    evaluation, and generating on a large dev set takes a while."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and all_gather_object use the current device
        dist.init_process_group(backend, timeout=timedelta(hours=2))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """The process that writes records, checkpoints and exports (rank 0)."""
    return rank() == 0


def broadcast_from_main_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank 0's copy (a no-op in a single process)."""
    if world_size() > 1:
        _on_backend_device(tensor, lambda t: dist.broadcast(t, src=0))
    return tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place (a no-op in a single process)."""
    if world_size() > 1:
        _on_backend_device(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM))
    return tensor


def max_over_processes(value: int) -> int:
    """The largest ``value`` any process holds (``value`` itself in a single process)."""
    if world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    _on_backend_device(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.MAX))
    return int(tensor.item())


def _on_backend_device(tensor: torch.Tensor, collective: Callable[[torch.Tensor], object]) -> None:
    """Run ``collective`` on ``tensor``, through a GPU copy where NCCL needs one (it can't reduce CPU tensors)."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        copy = tensor.to(f"cuda:{torch.cuda.current_device()}")
        collective(copy)
        tensor.copy_(copy)
    else:
        collective(tensor)


def gather_rows(local: list[Any], count: int) -> list[Any]:
    """Rows ``0..count-1`` computed round-robin (process ``r`` did rows ``r, r+W, r+2W...``, in that
    order, in ``local``), put back in row order on every process."""
    if world_size() == 1:
        return list(local)
    parts: list[list[Any]] = [[] for _ in range(world_size())]
    dist.all_gather_object(parts, list(local))
    rows: list[Any] = [None] * count
    for r, part in enumerate(parts):
        rows[r :: world_size()] = part
    return rows


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process (``[value]`` in a single process)."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
