"""Where a run goes: its device inside a sweep (and what the device means for precision), and the
resolvers the launcher configs use.

One roberta-base run leaves an H100 mostly idle (five at once gave 4.6x the throughput
of one), so a sweep on one machine runs ``num_gpus x runs_per_gpu`` jobs at a time
(``hydra/launcher=local_gpus``) and each job picks its GPU from its job number. On
Slurm every array task gets its own GPU and sees it as ``cuda:0``.

``register_resolvers()`` must run before Hydra composes a config that uses them
(``dora_bench.run.cli.main`` calls it first thing).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from dora_bench import distributed
from dora_bench.errors import ConfigError

if TYPE_CHECKING:
    import torch


def pick_device(requested: str, job_num: int | None = None, num_gpus: int | str | None = None) -> str:
    """The torch device string for one run.

    ``requested`` is ``trainer.device``: ``auto`` (a GPU if there is one, else the CPU),
    ``cuda`` (a GPU, required), ``cuda:<i>``, ``cpu`` or ``mps``. ``auto`` and ``cuda``
    put job ``n`` of a multirun on ``cuda:{n % num_gpus}``: round-robin, so a cell's
    seeds (adjacent job numbers) land on different GPUs and each GPU gets the same
    number of jobs. Loads even out only on average: joblib hands the next job to
    whichever worker is free, so while runs of very different lengths overlap one GPU
    can hold more of them than another for a while.

    ``job_num`` None: a single run (or read Hydra's job number when one is running);
    ``num_gpus`` None or ``"auto"``: count the visible GPUs. Given both, the function
    is pure (the tests call it so).
    """
    if job_num is None:
        job_num = hydra_job_num()
    if num_gpus is None or num_gpus == "auto":
        num_gpus = visible_gpu_count()
    num_gpus = int(num_gpus)
    requested = str(requested).strip().lower()

    if requested == "cpu" or requested == "mps":
        return requested
    if requested == "auto" and num_gpus == 0:
        return "cpu"
    if requested in ("auto", "cuda"):
        if num_gpus == 0:
            raise ConfigError("trainer.device=cuda but no GPU is visible: use trainer.device=auto or cpu")
        if distributed.launched():  # torchrun / accelerate launch: one process per GPU, by local rank
            return f"cuda:{distributed.local_rank() % num_gpus}"
        return f"cuda:{(job_num or 0) % num_gpus}"
    if requested.startswith("cuda:") and requested[5:].isdigit():
        index = int(requested[5:])
        if index >= num_gpus:
            raise ConfigError(
                f"trainer.device={requested} but {num_gpus} GPU(s) are visible: "
                f"use cuda:0..cuda:{max(num_gpus - 1, 0)} or trainer.device=auto"
            )
        return requested
    raise ConfigError(f"trainer.device={requested!r} is not known: use auto, cpu, cuda or cuda:<index>")


def torch_device(requested: str, num_gpus: int | str | None = None) -> torch.device:
    """``trainer.device`` as a torch device (a data-parallel process: the GPU of its local rank)."""
    import torch

    return torch.device(pick_device(str(requested), num_gpus=num_gpus))


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def autocast_factory(
    device: torch.device, precision: str, weights: str = "fp32"
) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on GPU (``precision=auto``), fp32 on CPU unless the frozen weights are bf16
    (then autocast everywhere: it is what lets fp32 adapters meet bf16 weights); returns a
    context-manager factory (``contextlib.nullcontext`` for fp32)."""
    import torch

    use_bf16 = precision == "bf16" or (precision == "auto" and (device.type == "cuda" or weights != "fp32"))
    if not use_bf16:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def hydra_job_num() -> int | None:
    """Hydra's job number inside a multirun, None in a single run or outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return int(hydra_cfg.job.num)


def visible_gpu_count() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES respected)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parallel_runs(num_gpus: int | str, runs_per_gpu: int) -> int:
    """Jobs a one-machine sweep runs at once: ``num_gpus x runs_per_gpu`` (a machine
    without a GPU counts as one device, so ``runs_per_gpu`` runs share its CPUs)."""
    if num_gpus == "auto":
        num_gpus = visible_gpu_count()
    try:
        num_gpus, runs_per_gpu = int(num_gpus), int(runs_per_gpu)
    except (TypeError, ValueError):
        raise ConfigError(
            f"num_gpus={num_gpus!r}, runs_per_gpu={runs_per_gpu!r}: use whole numbers (num_gpus may also be auto)"
        ) from None
    if num_gpus < 0 or runs_per_gpu < 1:
        raise ConfigError(f"num_gpus={num_gpus}, runs_per_gpu={runs_per_gpu}: need num_gpus >= 0 and runs_per_gpu >= 1")
    return max(num_gpus, 1) * runs_per_gpu


def backbone_name(name_or_path: str) -> str:
    """A backbone's short name from its Hub id or folder: ``meta-llama/Llama-3.2-1B`` -> ``llama-3.2-1b``.

    The decoder configs name their runs this way, so that two checkpoints given to one config
    (``backbone=llama backbone.name_or_path=...``) never share run folders or table cells."""
    name = str(name_or_path).rstrip("/").rpartition("/")[2].lower()
    if not name or name in (".", ".."):
        raise ConfigError(f"backbone.name_or_path={name_or_path!r} names no checkpoint: set backbone.name=<short name>")
    return name


def register_resolvers() -> None:
    """Make ``${parallel_runs:num_gpus,runs_per_gpu}`` and ``${backbone_name:path}`` available to the
    configs (idempotent)."""
    if not OmegaConf.has_resolver("parallel_runs"):
        OmegaConf.register_new_resolver("parallel_runs", parallel_runs)
    if not OmegaConf.has_resolver("backbone_name"):
        OmegaConf.register_new_resolver("backbone_name", backbone_name)
