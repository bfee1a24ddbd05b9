"""What the training loop sees of a task: a train loader and an ``evaluate`` on the dev split(s).

One subclass per head: sequence classification (GLUE, the demo, a researcher's files),
span question answering (SQuAD), summarisation (XSum), decoder LLMs. Every split is tokenised
once (and cached) when the task is loaded; batches are padded to their longest sequence.

And the registry of task families (``register_family``): each family module registers its
loader and its model kind at its bottom, as each method module registers its method.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dora_bench import distributed
from dora_bench.errors import ConfigError
from dora_bench.tasks.batching import EncodedDataset, PadCollator, Ragged, step_loader, train_loader

if TYPE_CHECKING:
    from hashlib import _Hash

    from transformers import PreTrainedTokenizerBase


class Task:
    name: str
    model_kind: str  # the head it trains: one of backbones.MODEL_KINDS (its family registers the same)
    num_labels: int  # 1: regression (STS-B); otherwise classes (unused by QA / seq2seq)
    main_metric: str  # key of evaluate()'s result used for best epoch and tables
    eval_examples: int  # dev examples one evaluate() scores (MNLI: matched + mismatched)
    progress: bool = True  # progress bars inside evaluate() (generation); the loop sets it from trainer.progress

    def __init__(self, name: str, train: EncodedDataset, pad_token_id: int) -> None:
        self.name = name
        self.train_set = train
        self.collate = PadCollator(pad_token_id)

    def train_loader(
        self,
        batch_size: int,
        *,
        seed: int,
        group_by_length: bool = False,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> DataLoader:
        """Shuffled batches for ``model(**batch).loss``; the order depends only on ``seed`` and the epoch.
        Data parallel: this process's share (``rank`` of ``world_size``) of each global batch."""
        return train_loader(
            self.train_set,
            self.collate,
            batch_size,
            seed=seed,
            group_by_length=group_by_length,
            num_workers=num_workers,
            rank=rank,
            world_size=world_size,
        )

    def step_loader(
        self,
        batch_size: int,
        micro_batches: int,
        *,
        seed: int,
        group_by_length: bool = False,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> DataLoader:
        """The loop's loader: the batches of ``train_loader``, each as a list of ``micro_batches``
        micro-batches (gradient accumulation; ``batching.step_loader``)."""
        return step_loader(
            self.train_set,
            self.collate,
            batch_size,
            micro_batches,
            seed=seed,
            group_by_length=group_by_length,
            num_workers=num_workers,
            rank=rank,
            world_size=world_size,
        )

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        raise NotImplementedError

    def data_parts(self) -> list[Any]:
        """Everything the run learns from and is scored against: the encoded splits and any
        dev-side gold answers kept outside them (each subclass lists its own)."""
        raise NotImplementedError

    def data_fingerprint(self) -> str:
        """16 hex digits of sha256 over ``data_parts()``: the same rows give the same fingerprint
        wherever the files lie, so tables pool seeds by content, not by path. Token ids are
        hashed, so the tokenizer (i.e. the backbone) is part of it."""
        digest = hashlib.sha256()
        for part in self.data_parts():
            _feed(digest, part)
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, train={len(self.train_set)}, "
            f"eval_examples={self.eval_examples}, main_metric={self.main_metric!r})"
        )


def _feed(digest: _Hash, part: Any) -> None:
    """Hash a dataset, a ragged column, a tensor (dtype and shape included) or plain JSON data."""
    if isinstance(part, EncodedDataset):
        for name in sorted(part.columns):
            digest.update(name.encode())
            _feed(digest, part.columns[name])
    elif isinstance(part, Ragged):
        _feed(digest, part.offsets)
        _feed(digest, part.values)
    elif isinstance(part, torch.Tensor):
        digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
        digest.update(part.detach().cpu().contiguous().numpy())  # the buffer itself: no copy of MNLI's ids
    else:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` for the block; the train/eval state is restored after.

    A model sharded by FSDP (run/sharding.py) also has its outermost unit (embeddings, final norm,
    head) gathered for the block: a peft wrapper's ``generate`` calls the inner model, around which
    that unit's own gathering hooks don't run. Its layers still gather one at a time."""
    was_training = model.training
    sharded = _is_fsdp(model)
    model.eval()
    if sharded:
        model.unshard()
    try:
        with torch.no_grad():
            yield
    finally:
        if sharded:
            model.reshard()
        model.train(was_training)


def _is_fsdp(model: nn.Module) -> bool:
    if not torch.distributed.is_available():  # torch builds without distributed support have no FSDP
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def lockstep_decoding() -> dict[str, bool]:
    """``generate`` arguments for several processes: each decodes until all are done, since under FSDP
    every decoding step gathers weights from all of them (none in a single process)."""
    return {"synced_gpus": True} if distributed.world_size() > 1 else {}


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def require(cfg: Mapping[str, Any], key: str, hint: str = "") -> Any:
    """``cfg[key]``, or a ConfigError naming the missing ``task.<key>``."""
    value = cfg.get(key)
    if value is None:
        raise ConfigError(f"task {cfg.get('name', '?')!r} needs task.{key}" + (f": {hint}" if hint else ""))
    return value


def positive_int(cfg: Mapping[str, Any], key: str) -> int:
    value = require(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"task.{key}={value!r} must be a positive integer")
    return value


# -- the families: ``task.family`` in conf/task/<name>.yaml ----------------------------------------


@dataclass(frozen=True)
class TaskFamily:
    """A way of reading a task: ``load(task_cfg, tokenizer, cache_dir) -> Task``, and the head its
    model needs (``model_kind``, the ``Task.model_kind`` of what it loads: the backbone is built,
    and a dry run counts it, before any data is read)."""

    name: str
    load: Callable[[Mapping[str, Any], PreTrainedTokenizerBase, Path | None], Task]
    model_kind: str


_FAMILIES: dict[str, TaskFamily] = {}


def register_family(name: str, load: Callable[..., Task], *, model_kind: str) -> None:
    """Make ``load`` available as ``task.family=<name>``; each family module calls it at its bottom."""
    if name in _FAMILIES:
        raise ValueError(f"task family {name!r} is already registered (by {_FAMILIES[name].load.__module__})")
    _FAMILIES[name] = TaskFamily(name, load, model_kind)


def family_names() -> list[str]:
    return list(_FAMILIES)


def task_family(name: object) -> TaskFamily:
    if name not in _FAMILIES:
        raise ConfigError(f"task.family={name!r} is not known: use one of {', '.join(_FAMILIES)}")
    return _FAMILIES[name]
