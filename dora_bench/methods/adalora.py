"""AdaLoRA (Zhang et al., ICLR 2023) through peft: SVD-form updates whose ranks follow importance.

Each adapted linear layer gets ``ΔW = (α / b0) · P diag(λ) Q`` (peft's ``lora_B``, ``lora_E``,
``lora_A``: ``P`` is ``d_out x b0``, ``λ`` has ``b0`` entries, ``Q`` is ``b0 x d_in``), with
``λ = 0`` at start. One "rank" is the triplet ``(P_i, λ_i, Q_i)``. Every step the allocator
scores each triplet by smoothed sensitivity ``|w · ∂L/∂w|`` times its uncertainty (EMAs with
β1 = β2 = 0.85), and every ``deltaT`` steps of the budget phase it zeroes the ``λ_i`` of the
lowest-scoring triplets across all modules, so that the kept total follows the cubic
schedule ``b(t) = b_T + (b_0 - b_T)(1 - p)^3`` (totals over modules) from ``M · b0`` down
to ``M · bT``. What trains: ``P, λ, Q`` of the six module types of SPEC §1, and the head.

Phases in peft's terms, the pitfalls checked against peft's source and issues (why the
orthogonality penalty is added in ``extra_loss``; why ``after_step`` must come before
``zero_grad``), and the parameter count: docs/methods.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.lora import target_linears
from dora_bench.methods.shared.allocation import allocation_grid
from dora_bench.methods.shared.dropout import use_cheap_dropout
from dora_bench.methods.shared.linears import fan_in_fan_out

ADAPTER = "default"  # peft's name for the one adapter of a run


@dataclass
class AdaLoRAConfig:
    target_r: int  # bT: final average rank per module (the CLI's budget)
    init_r: int | None = None  # b0: initial rank of every module; None: ceil(1.5 * target_r) (SPEC §1)
    tinit_fraction: float = 0.15  # warm-up share of T without masking (tinit), as DoRA's t_i
    tfinal_fraction: float = 0.5  # final share of T with the allocation fixed (tfinal), as DoRA's t_f
    deltaT: int = 10  # steps between re-allocations in the budget phase (the task's pruning interval)
    beta1: float = 0.85  # EMA of sensitivity (AdaLoRA default)
    beta2: float = 0.85  # EMA of uncertainty (AdaLoRA default)
    orth_reg_weight: float = 0.1  # weight of the orthogonality penalty on P and Q (the yaml: per task, as the scripts)
    alpha: float = 32.0  # scaling alpha / init_r (the yaml: per task, as the scripts whose lr we use)
    dropout: float = 0.1  # on the adapter's input only

    def __post_init__(self) -> None:
        if self.init_r is None:
            self.init_r = math.ceil(1.5 * int(self.target_r))
        if int(self.target_r) < 1:
            raise ValueError(f"target_r={self.target_r} must be >= 1: set budget=1 or more")
        if int(self.init_r) <= int(self.target_r):
            # with nothing to prune, peft's mask_to_budget asks torch.kthvalue for k = 0 and fails
            raise ValueError(
                f"init_r={self.init_r} must exceed target_r={self.target_r} for AdaLoRA to prune: "
                f"set init_r > target_r (or null), or use method=lora for a fixed rank"
            )
        if not (
            0 <= self.tinit_fraction < 1
            and 0 <= self.tfinal_fraction < 1
            and self.tinit_fraction + self.tfinal_fraction < 1
        ):
            raise ValueError(
                f"tinit_fraction={self.tinit_fraction} + tfinal_fraction={self.tfinal_fraction} "
                f"must leave a budget phase: keep both in [0, 1) with a sum below 1"
            )
        if int(self.deltaT) < 1:
            raise ValueError(f"deltaT={self.deltaT} must be >= 1: use the task's pruning interval")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ValueError(f"beta1={self.beta1}, beta2={self.beta2} must lie in (0, 1): AdaLoRA uses 0.85")
        if self.orth_reg_weight < 0:
            raise ValueError(f"orth_reg_weight={self.orth_reg_weight} is negative: use 0.1, or 0 to switch it off")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")


def phases(total_steps: int, tinit_fraction: float, tfinal_fraction: float) -> tuple[int, int]:
    """``(tinit, tfinal)`` in steps for ``T = total_steps`` (peft's ``tinit`` and ``tfinal``)."""
    # floor, with the same guard against 0.15 * 60 = 8.999... as DoRA's phases
    tinit = math.floor(tinit_fraction * total_steps + 1e-9)
    tfinal = math.floor(tfinal_fraction * total_steps + 1e-9)
    # fractions summing below 1 always leave a budget phase; a positive fraction must also give
    # at least one step, or a short run would silently skip warm-up or the fixed final phase
    if (tinit_fraction > 0 and tinit < 1) or (tfinal_fraction > 0 and tfinal < 1):
        shortest = math.ceil(1 / min(f for f in (tinit_fraction, tfinal_fraction) if f > 0))
        raise ConfigError(
            f"AdaLoRA's phases need whole steps: T={total_steps} gives tinit={tinit}, "
            f"tfinal={tfinal}; train for at least {shortest} steps"
        )
    return tinit, tfinal


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """Mean of ``||Q Qᵀ - I||_F`` and ``||PᵀP - I||_F`` over every adapted module (peft's A = Q, B = P)."""
    norms = []
    for layer in _svd_layers(model).values():
        q, p = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
        for gram in (q @ q.T, p.T @ p):
            norms.append(
                torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype))
            )
    return torch.stack(norms).mean()


class AdaLoRA(Method):
    Config = AdaLoRAConfig

    def __init__(self, config: AdaLoRAConfig) -> None:
        super().__init__(config)
        self.total_steps: int | None = None
        self.tfinal = 0
        self.schedule: list[dict[str, int]] = []

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        from peft import AdaLoraConfig, get_peft_model

        cfg = self.config
        peft_config = AdaLoraConfig(
            init_r=int(cfg.init_r),
            target_r=int(cfg.target_r),
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(target.target_modules),
            modules_to_save=list(target.head_modules) or None,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            deltaT=int(cfg.deltaT),
            orth_reg_weight=0.0,  # added in extra_loss instead (see the module docstring)
            fan_in_fan_out=fan_in_fan_out([m for _, m in target_linears(model, target)]),  # GPT-2's Conv1D
            total_step=1,
            tinit=0,
            tfinal=0,  # placeholders until on_train_begin knows T
        )
        model = get_peft_model(model, peft_config)
        use_cheap_dropout(model, cfg.dropout)
        self.model = model  # state_dict needs the allocator and the masks, which live on the model
        self.schedule = [{"step": 0, "kept": sum(self.final_ranks(model).values())}]
        return model

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        tinit, tfinal = phases(total_steps, self.config.tinit_fraction, self.config.tfinal_fraction)
        peft_config = model.peft_config[ADAPTER]
        peft_config.total_step, peft_config.tinit, peft_config.tfinal = total_steps, tinit, tfinal
        if model.base_model.rankallocator.peft_config is not peft_config:  # a peft change would break this
            raise RuntimeError("peft's RankAllocator holds its own config copy: T can't reach it this way")
        self.total_steps, self.tfinal = total_steps, tfinal

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        if self.config.orth_reg_weight == 0:
            return None
        return self.config.orth_reg_weight * orthogonality_penalty(model)

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.total_steps is None:
            raise RuntimeError("AdaLoRA.after_step before on_train_begin: the allocator doesn't know T yet")
        model.base_model.update_and_allocate(step)
        kept = sum(self.final_ranks(model).values())
        if kept != self.schedule[-1]["kept"]:
            self.schedule.append({"step": step, "kept": kept})

    def first_countable_step(self) -> int:
        return 0 if self.total_steps is None else self.total_steps - self.tfinal

    # -- ranks and counts ---------------------------------------------------------------
    def final_ranks(self, model: nn.Module) -> dict[str, int]:
        """``{module path: kept ranks}`` from peft's ``rank_pattern``; ``init_r`` everywhere before any mask."""
        pattern = model.peft_config[ADAPTER].rank_pattern
        if not pattern:
            return {name: layer.r[ADAPTER] for name, layer in _svd_layers(model).items()}
        # Keys are parameter names of lora_E; save_pretrained strips the adapter name in place.
        return {_module_path(key): int(sum(mask)) for key, mask in pattern.items()}

    def paper_trainable_params(self, model: nn.Module, target: AdaptTarget) -> int:
        """Kept triplets, ``Σ kept_i (d_in + d_out + 1)`` (head excluded): the paper's count once
        training is over. Before the first mask: what ``target_r`` everywhere would cost."""
        if model.peft_config[ADAPTER].rank_pattern:
            return _cost(model, self.final_ranks(model))
        return _cost(model, dict.fromkeys(_svd_layers(model), int(self.config.target_r)))

    def report(self, model: nn.Module) -> dict[str, Any]:
        out: dict[str, Any] = {
            "initial_trainable_params": _cost(model, {n: layer.r[ADAPTER] for n, layer in _svd_layers(model).items()}),
            "budget_schedule": self.schedule,
        }
        if model.peft_config[ADAPTER].rank_pattern:
            ranks = self.final_ranks(model)
            out.update(
                rank_allocation=ranks,
                rank_allocation_grid=allocation_grid(ranks),
                final_trainable_params=_cost(model, ranks),
            )
        return out

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        """peft's adapter, shrunk to the kept ranks. A module pruned to rank 0 is saved with empty
        (0 x d) factors, which peft warns about as if a sharded save had gone wrong; they reload
        as no update, which is what rank 0 means, so that warning is replaced by one line of ours."""
        emptied = sorted(name for name, rank in self.final_ranks(model).items() if rank == 0)
        with warnings.catch_warnings():
            if emptied:  # exactly its two factors per emptied module; any other bad tensor still warns
                warnings.filterwarnings("ignore", message=rf"Adapter '{ADAPTER}': {2 * len(emptied)} LoRA tensor\(s\)")
            model.save_pretrained(str(run_dir / "adapter"))
        if emptied:
            emptied_line = f"AdaLoRA pruned {len(emptied)} module(s) to rank 0: exported as empty (no-update) adapters"
            print(f"[dora-bench] {emptied_line}")
        return {"adapter": "adapter"}

    # -- checkpointing ------------------------------------------------------------------
    _SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # the RankAllocator's per-parameter dicts

    def state_dict(self) -> dict[str, Any]:
        """The allocator's scores (sensitivity and its EMAs, by parameter name), the last mask
        (peft's ``rank_pattern``, re-applied every step of the final phase) and the budget schedule
        so far, as CPU copies. ``total_step``, ``tinit``, ``tfinal`` come back from ``on_train_begin``."""
        allocator = self.model.base_model.rankallocator
        state: dict[str, Any] = {
            key: {name: value.to("cpu", copy=True) for name, value in getattr(allocator, key).items()}
            for key in self._SCORES
        }
        pattern = self.model.peft_config[ADAPTER].rank_pattern
        state["rank_pattern"] = {name: list(mask) for name, mask in pattern.items()} if pattern else None
        state["schedule"] = [dict(entry) for entry in self.schedule]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.model.base_model.rankallocator
        params = dict(self.model.base_model.model.named_parameters())  # the names the allocator uses
        unknown = sorted(set().union(*(state[key] for key in self._SCORES)) - set(params))
        if unknown:
            raise ValueError(
                f"AdaLoRA state for parameters this model lacks (e.g. {unknown[0]}): "
                f"resume with the same backbone and budget"
            )
        for key in self._SCORES:
            setattr(allocator, key, {name: value.to(params[name].device) for name, value in state[key].items()})
        self.model.peft_config[ADAPTER].rank_pattern = state["rank_pattern"]
        self.schedule = [dict(entry) for entry in state["schedule"]]


def _svd_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Adapted layers by module path inside the transformers model (peft's ``base_model.model.`` removed)."""
    from peft.tuners.adalora import AdaLoraLayer

    inner = model.base_model.model
    return {name: m for name, m in inner.named_modules() if isinstance(m, AdaLoraLayer)}


def _cost(model: nn.Module, ranks: dict[str, int]) -> int:
    """Parameters of ``ranks[module]`` triplets per module: ``d_in + d_out + 1`` each."""
    return sum(ranks[name] * (layer.in_features + layer.out_features + 1) for name, layer in _svd_layers(model).items())


def _module_path(lora_e_name: str) -> str:
    path = lora_e_name.removesuffix(f".{ADAPTER}").removesuffix(".lora_E")
    return path.removeprefix("base_model.model.")


register_method("adalora", AdaLoRA)
