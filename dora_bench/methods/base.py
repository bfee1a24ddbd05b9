"""The method plugin interface, and the registry that finds a method by name.

A method is one module in this package: a ``Config`` dataclass that checks itself,
the layer it injects (if any), a ``Method`` subclass with the hooks it needs, and a
``register_method("name", Class)`` call at the bottom. The training loop sees only
the hooks below, called in this order (peft's ``update_and_allocate`` contract):

    model = method.apply(model, target)           # freeze the backbone, inject, return
    method.on_train_begin(model, total_steps)     # the loop now knows T
    for step in 1..T:                             # optimizer steps
        for each micro-batch k of the step (trainer.grad_accum; one by default):
            loss = share_k * model(**micro_batch).loss   # task loss, weighted to the whole batch's mean
            extra = method.extra_loss(model, step)       # with the last micro-batch only: DoRA's DEM
            (loss + extra).backward()
        clip; optimizer.step(); scheduler.step()
        method.after_step(model, step)            # scores, pruning, masks (the whole step's grads still there)
        optimizer.zero_grad()
    record["extras"] = method.report(model)
    method.export(model, run_dir)                 # adapters, merged weights, plots

``step`` is the 1-based index of the optimizer step in progress (1..T): ``extra_loss``
and ``after_step`` of one iteration see the same ``t``, and once ``after_step(model, t)``
returns, ``t`` steps are done. ``extra_loss`` is called once per step, so it must depend on the
weights alone (it gets no batch): the weights don't move within a step.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dora_bench.errors import ConfigError


@dataclass(frozen=True)
class AdaptTarget:
    """Where a method acts inside a backbone; built by ``backbones.py``.

    ``target_modules`` are module-name suffixes (peft's matching rule: a module is
    adapted when its dotted name equals a suffix or ends with ``"." + suffix``).
    ``head_modules`` name the task head (``classifier``, ``qa_outputs``...), which
    every method trains fully and which the paper's parameter counts leave out.
    """

    architecture: str  # "roberta" | "bart"
    target_modules: tuple[str, ...]
    head_modules: tuple[str, ...] = ()

    def is_target(self, module_name: str) -> bool:
        return any(module_name == t or module_name.endswith("." + t) for t in self.target_modules)

    def is_head(self, param_name: str) -> bool:
        parts = param_name.split(".")
        return any(h in parts for h in self.head_modules)


@dataclass
class UnsizedConfig:
    """The config of a method ``budget=`` does not size (Full FT, BitFit): nothing to set."""

    budget: int | None = None  # accepted so that sweeps over budget compose; ignored


class Method:
    """A PEFT method as the training loop sees it. Every hook but ``apply`` is optional."""

    name: ClassVar[str] = ""
    #: False for methods whose size ``budget=`` does not set (Full FT, BitFit); their
    #: records store ``budget: null`` and their run directory says ``b-``.
    uses_budget: ClassVar[bool] = True
    Config: ClassVar[type] = object
    #: Under FSDP (``trainer.fsdp``) the frozen weights are sharded over the processes; a method's own
    #: trainable parameters stay whole on every process (its hooks read them between steps) unless
    #: this is True: Full FT's trainable parameters are the model's weights, the ones worth sharding.
    shard_trainable: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    # -- set-up ---------------------------------------------------------------------
    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        """Freeze what must not train, inject the method, return the model to train."""
        raise NotImplementedError

    def extra_input_positions(self) -> int:
        """Positions the method adds to every input (a soft prompt's tokens); the loop checks
        ``task.max_length`` plus these against the backbone's position table."""
        return 0

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        """Called once the loop knows the number of optimizer steps ``T``."""

    # -- every step -----------------------------------------------------------------
    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """A term added to the task loss before ``backward`` (None: nothing)."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """After ``optimizer.step()``, before ``zero_grad()``: gradients are still there."""

    # -- evaluation and reporting ---------------------------------------------------
    def first_countable_step(self) -> int:
        """Epochs ending before this step are not eligible as the run's best epoch
        (SPEC §3: for DoRA and AdaLoRA only epochs after the budget is final count)."""
        return 0

    def paper_trainable_params(self, model: nn.Module, target: AdaptTarget) -> int:
        """Trainable parameters counted as the paper counts them: the task head left out."""
        return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not target.is_head(n))

    def report(self, model: nn.Module) -> dict[str, Any]:
        """Method-specific results for the record's ``extras`` (JSON-serialisable)."""
        return {}

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        """Write artefacts beside the record; return {what: relative path}."""
        return {}

    # -- checkpointing --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides model weights needed to resume (scores, masks, counters)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but got keys {sorted(state)}")


# -- registry ----------------------------------------------------------------------------

_REGISTRY: dict[str, type[Method]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: Keys of ``conf/method/*.yaml`` read by the training loop, not by the method's Config. Keys ending
#: in ``_by_task`` are per-task tables that the yaml's own interpolations read (AdaLoRA's alpha).
LOOP_KEYS = ("name", "lr", "lr_by_task")


def register_method(name: str, cls: type[Method]) -> type[Method]:
    """Make ``cls`` available as ``method=<name>``; names are lowercase and unique."""
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} must be lowercase letters, digits and '_'")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered (by {_REGISTRY[name].__module__})")
    cls.name = name
    _REGISTRY[name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(method_names())}")
    return _REGISTRY[name]


def build_method(method_cfg: dict[str, Any]) -> Method:
    """Build a method from its resolved config group (``cfg.method`` as a plain dict)."""
    cls = method_class(method_cfg["name"])
    args = {k: v for k, v in method_cfg.items() if k not in LOOP_KEYS and not k.endswith("_by_task")}
    fields = {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(cls.Config) else set()
    unknown = sorted(set(args) - fields)
    if unknown:
        raise ConfigError(
            f"method {cls.name!r} has no setting {', '.join(unknown)}: "
            f"known settings are {', '.join(sorted(fields)) or '(none)'}"
        )
    try:
        config = cls.Config(**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method {cls.name!r}: {err}") from None
    return cls(config)
