"""DoRA: Dynamic Low-Rank Adaptation (Mao et al., ACL 2024, arXiv 2405.17357), SPEC §1.

Not the weight-decomposed "DoRA" of Liu et al. (peft's ``use_dora``). Each adapted linear
layer gets ``r = b0`` single-rank components ``(A_i, c_i, B_i)`` (eq. 6):

    ΔW = s · Σ_i c_i B_i A_i,   s = α / b0,   A_i: 1 x d_in,  B_i: d_out x 1,  c_i: scalar gate

Trainable: every ``A``, ``c``, ``B`` and the task head; the backbone is frozen. Budget
``bT`` (the CLI's ``budget``) is the final average number of components per module,
``b0 = ceil(1.5 bT)`` the initial one. After every optimizer step each component gets an
importance (eq. 7) ``S_i = ||c_i B_i A_i||_F / (||Σ_j c_j B_j A_j||_F + 1e-8)``, computed in
closed form from r x r Gram matrices (never a d_out x d_in product), and an EMA (eq. 8)
``Ŝ_i ← β Ŝ_i + (1-β) S_i``. Pruning steps rank all components of all modules together by
``Ŝ`` and set ``c_i = 0`` for the lowest ones (gentle: ``A_i, B_i`` stay and ``c_i`` may
regrow until the next ranking, where pruned components compete again). The DEM loss
(eq. 10) ``γ · (1/(2 M b0)) Σ_modules Σ_i [Var(A_i) + Var(B_i)]`` joins the task loss
until pruning ends.

Phases, schedules, a worked example and the differences from the released code: docs/methods.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dora_bench import distributed
from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.lora import export_peft_adapter, merged_copy, replace_linears
from dora_bench.methods.shared.allocation import COLUMN_ORDER, allocation_grid, module_position
from dora_bench.methods.shared.dropout import drop_input
from dora_bench.methods.shared.linears import features

SCHEDULES = ("reference", "adalora")
#: What a ranking prunes. ``importance``: the lowest Ŝ (the paper). ``random``: the same number, drawn
#: uniformly among the live components (a control: the schedule without the scores). ``inverse``:
#: the highest Ŝ (a negative control: if it does as well, the scores carry no information).
ALLOCATIONS = ("importance", "random", "inverse")
EPS = 1e-8  # eq. 7's guard on the denominator


@dataclass
class DoRAConfig:
    final_budget: int  # bT: final average number of components per module (the CLI's budget)
    init_budget: int | None = None  # b0: initial components per module; None -> ceil(1.5 bT) (App. E)
    warmup_ratio: float = 0.15  # t_i / T: steps that only score, before any pruning
    final_ratio: float = 0.5  # t_f / T: last steps with the component distribution fixed
    schedule: str = "reference"  # "reference" (released code) | "adalora" (AdaLoRA's cubic); see module docstring
    pruning_interval: int = 10  # steps between rankings in the pruning phase (Table 8, per task)
    beta: float = 0.9  # EMA factor of the importance scores (eq. 8)
    dem_coef: float = 0.5  # γ, weight of the DEM loss (Table 8, per task); 0 turns DEM off (Table 5)
    alpha: float = 8.0  # scaling s = α / b0
    dropout: float = 0.1  # on the adapter's input only
    export_merged: bool = False  # also save the backbone with ΔW merged in (zero inference overhead)
    allocation: str = "importance"  # which components a ranking prunes: one of ALLOCATIONS
    allocation_seed: int = 0  # seeds the ``random`` arm's draws (the run's seed, from the config)
    default_scale: bool = False  # s = α / ceil(1.5 bT) whatever b0 is: the no-pruning arm's s equals DoRA's

    def __post_init__(self) -> None:
        if float(self.final_budget) != int(self.final_budget) or int(self.final_budget) < 1:
            raise ValueError(f"final_budget={self.final_budget} must be a whole number >= 1: set budget=1 or more")
        self.final_budget = int(self.final_budget)
        if self.init_budget is None:
            self.init_budget = math.ceil(1.5 * self.final_budget)
        if float(self.init_budget) != int(self.init_budget) or int(self.init_budget) < self.final_budget:
            raise ValueError(
                f"init_budget={self.init_budget} must be a whole number >= final_budget="
                f"{self.final_budget}: raise method.init_budget or set it to null"
            )
        self.init_budget = int(self.init_budget)
        if self.warmup_ratio < 0 or self.final_ratio < 0 or self.warmup_ratio + self.final_ratio >= 1:
            raise ValueError(
                f"warmup_ratio={self.warmup_ratio} and final_ratio={self.final_ratio} must be >= 0 "
                f"with a sum < 1: lower one of them"
            )
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta={self.beta} must lie in [0, 1): the paper uses 0.9")
        if int(self.pruning_interval) < 1:
            raise ValueError(f"pruning_interval={self.pruning_interval} must be >= 1: set method.pruning_interval")
        self.pruning_interval = int(self.pruning_interval)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not known: use one of {', '.join(SCHEDULES)}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation={self.allocation!r} is not known: use one of {', '.join(ALLOCATIONS)}")
        if self.dem_coef < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(
                f"dem_coef={self.dem_coef}, alpha={self.alpha}, dropout={self.dropout}: "
                f"set dem_coef >= 0 (0: no DEM), alpha > 0 and dropout in [0, 1)"
            )

    @property
    def scaling(self) -> float:
        """s of eq. 6: α / b0, or with ``default_scale`` α over the default b0 = ceil(1.5 bT)."""
        return self.alpha / (math.ceil(1.5 * self.final_budget) if self.default_scale else self.init_budget)


# -- schedule: pure functions of the step ------------------------------------------------------


@dataclass(frozen=True)
class Phases:
    """Phase boundaries of a run of ``total`` optimizer steps (see the module docstring)."""

    total: int  # T
    warmup_end: int  # t_i: the last warm-up step (0: no warm-up)
    prune_end: int  # T - t_f: the last pruning step; the mask is fixed after it


def training_phases(total_steps: int, warmup_ratio: float, final_ratio: float) -> Phases:
    # 1e-9: 0.29 * 100 is 28.999999999999996 in floating point and must floor to 29
    t_i = math.floor(warmup_ratio * total_steps + 1e-9)
    t_f = math.floor(final_ratio * total_steps + 1e-9)
    if total_steps < 1 or (warmup_ratio > 0 and t_i < 1) or (final_ratio > 0 and t_f < 1):
        need = max([1] + [math.ceil(1 / r - 1e-9) for r in (warmup_ratio, final_ratio) if r > 0])
        raise ConfigError(
            f"DoRA needs at least {need} optimizer steps to give its warm-up ({warmup_ratio}) and "
            f"final ({final_ratio}) phases a step each, but the run has {total_steps}: train longer"
        )
    # warmup_ratio + final_ratio < 1 (checked by the config) leaves L = T - t_i - t_f >= 1 pruning steps
    return Phases(total=total_steps, warmup_end=t_i, prune_end=total_steps - t_f)


def is_pruning_step(step: int, phases: Phases, interval: int) -> bool:
    """True where the components are re-ranked and the scheduled number pruned."""
    k = step - phases.warmup_end
    return phases.warmup_end < step <= phases.prune_end and (k % interval == 0 or step == phases.prune_end)


def scheduled_pruned(step: int, phases: Phases, n_modules: int, b0: int, bT: int, schedule: str) -> int:
    """Number of components pruned by the schedule at ``step`` (eq. 9), in exact integer arithmetic."""
    if step <= phases.warmup_end:
        return 0
    k, length = min(step, phases.prune_end) - phases.warmup_end, phases.prune_end - phases.warmup_end
    surplus = n_modules * (b0 - bT)  # N (b0 - bT) / b0 with N = M b0
    if schedule == "reference":
        return surplus * k**3 // length**3
    return surplus - surplus * (length - k) ** 3 // length**3


def components_to_prune(
    scores: torch.Tensor, live: torch.Tensor, n: int, allocation: str, draws: torch.Generator
) -> torch.Tensor:
    """Flat indices of the ``n`` components a ranking prunes, from Ŝ and the mask of the last ranking.

    ``importance`` prunes the lowest scores and ``inverse`` the highest (ties: lower index first):
    every component competes again, pruned or not (gentle pruning). ``random`` keeps what the last
    ranking pruned and draws the rest uniformly among the ``live`` components, from ``draws`` (a
    CPU generator seeded per ranking, so a resumed run or another process draws the same).
    """
    if allocation == "random":
        gone = (~live).nonzero().flatten().cpu()
        if n < len(gone):
            raise ValueError(f"the schedule asks for {n} pruned components but {len(gone)} already are")
        alive = live.nonzero().flatten().cpu()
        fresh = alive[torch.randperm(len(alive), generator=draws)[: n - len(gone)]]
        return torch.cat([gone, fresh]).sort().values
    if allocation not in ("importance", "inverse"):
        raise ValueError(f"allocation={allocation!r} is not known: use one of {', '.join(ALLOCATIONS)}")
    order = torch.sort(scores, descending=allocation == "inverse", stable=True).indices
    return order[:n].cpu()


def random_arm_seed(run_seed: int, step: int) -> int:
    """The ``random`` arm's seed at one ranking: a function of the run's seed and the step alone, so
    resuming needs no generator state and every data-parallel process draws the same components."""
    return (int(run_seed) * 1_000_003 + int(step)) % (2**63)


# -- closed-form importance and DEM, batched over the modules of one shape -----------------------


def importance_scores(A: torch.Tensor, B: torch.Tensor, c: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. 7 for a stack of G modules: A (G, r, d_in), B (G, d_out, r), c (G, r) -> S (G, r).

    ``||c_i B_i A_i||_F = |c_i| ||B_i|| ||A_i||`` (a rank-one matrix) and
    ``||Σ_j c_j B_j A_j||_F^2 = Σ_ij (BᵀB)_ij (ÃÃᵀ)_ij`` with ``Ã = diag(c) A``.
    """
    component = c.abs() * A.norm(dim=2) * B.norm(dim=1)
    gated = c.unsqueeze(-1) * A
    gram_a = gated @ gated.transpose(1, 2)
    gram_b = B.transpose(1, 2) @ B
    total = (gram_a * gram_b).sum(dim=(1, 2)).clamp_min(0).sqrt()  # clamp: rounding can dip below 0
    return component / (total.unsqueeze(-1) + eps)


def dem_variance_sum(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``Σ_modules Σ_i [Var(A_i) + Var(B_i)]`` (unbiased) for A (G, r, d_in), B (G, d_out, r)."""
    return A.var(dim=2).sum() + B.var(dim=1).sum()


# -- the layer -----------------------------------------------------------------------------------


class DoRALinear(nn.Module):
    """A frozen linear layer (``nn.Linear`` or GPT-2's ``Conv1D``) plus ``r`` gated single-rank components (eq. 6):

        y = W0 x + b + s · B (c ⊙ (A · dropout(x)))

    ``lora_A``: (r, d_in), ``lora_c``: (r,), ``lora_B``: (d_out, r), ``s = α / r``;
    x: (..., d_in) -> y: (..., d_out). ``A`` and ``B`` start Kaiming-uniform with
    ``kaiming_uniform_``'s default ``a = 0`` (bound sqrt(6 / fan_in)), as the released code
    does (nn.Linear's own init would be ``a = sqrt(5)``, bound 1 / sqrt(fan_in)); ``c = 0``,
    so the layer starts equal to the base.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = features(base)
        kwargs = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(rank, self.in_features, **kwargs)))
        self.lora_c = nn.Parameter(torch.zeros(rank, **kwargs))
        self.lora_B = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(self.out_features, rank, **kwargs)))
        self.scaling, self.dropout = alpha / rank, float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped, factor = drop_input(x, self.dropout, self.training)
        # s and dropout's 1/(1-p) join the r gates, not the (..., d_out) output: one full-size multiply fewer
        return self.base(x) + F.linear(
            F.linear(dropped, self.lora_A) * (self.scaling * factor * self.lora_c), self.lora_B
        )

    def delta_factors(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A_kept, B_kept)`` with ``c`` and ``s`` folded into B: ``ΔW = B_kept @ A_kept``."""
        return self.lora_A[keep], self.lora_B[:, keep] * (self.scaling * self.lora_c[keep])


# -- the method ----------------------------------------------------------------------------------


class DoRA(Method):
    Config = DoRAConfig
    score_fn = staticmethod(importance_scores)  # scripts/bench_step.py swaps in a materialising one

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        cfg = self.config
        alpha = cfg.scaling * cfg.init_budget  # the layer's s = alpha / b0 is then cfg.scaling
        names = replace_linears(model, target, lambda base: DoRALinear(base, cfg.init_budget, alpha, cfg.dropout))
        self.target, self.names = target, names
        self.layers = [model.get_submodule(n) for n in names]
        # Modules of one shape are scored together: a handful of batched kernels per step, not one per module
        by_shape = defaultdict(list)
        for row, layer in enumerate(self.layers):
            by_shape[(layer.out_features, layer.in_features)].append(row)
        self.groups = [(torch.tensor(rows), [self.layers[r] for r in rows]) for rows in by_shape.values()]
        shape = (len(names), cfg.init_budget)
        self.ema = torch.zeros(shape, dtype=torch.float32)  # Ŝ, one row per module (model order)
        self.mask = torch.ones(shape, dtype=torch.bool)  # kept components after the last ranking
        self.mask_final, self.phases, self.history = False, None, []
        return model

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        self.phases = training_phases(total_steps, self.config.warmup_ratio, self.config.final_ratio)
        self._follow_device()

    # -- every step -----------------------------------------------------------------------------
    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        if self.config.dem_coef == 0 or step > self.phases.prune_end:
            return None
        total = sum(dem_variance_sum(*self._stack(layers, "lora_A", "lora_B")) for _, layers in self.groups)
        return self.config.dem_coef * total / (2 * len(self.layers) * self.config.init_budget)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        self._follow_device()
        with torch.autocast(self.ema.device.type, enabled=False):
            if step > self.phases.prune_end:
                # Multiplying after each step is exact whatever the optimizer's momentum does;
                # the gradients of pruned gates are left alone, as in the released code.
                self._apply_mask()
                return
            self._update_scores()
            if is_pruning_step(step, self.phases, self.config.pruning_interval):
                self._prune(step)

    def _stack(self, layers: list[DoRALinear], *names: str) -> list[torch.Tensor]:
        return [torch.stack([getattr(layer, n) for layer in layers]) for n in names]

    def _update_scores(self) -> None:
        current = torch.empty_like(self.ema)
        for rows, layers in self.groups:
            A, B, c = self._stack(layers, "lora_A", "lora_B", "lora_c")
            current.index_copy_(0, rows, self.score_fn(A.float(), B.float(), c.float()))
        self.ema.lerp_(current, 1 - self.config.beta)

    def _prune(self, step: int) -> None:
        cfg = self.config
        n = scheduled_pruned(step, self.phases, len(self.layers), cfg.init_budget, cfg.final_budget, cfg.schedule)
        # Data parallel: every process holds the same weights, so the same scores; ranking rank 0's
        # copy makes the pruned set identical on every process by construction, rounding included.
        distributed.broadcast_from_main_(self.ema)
        draws = torch.Generator().manual_seed(random_arm_seed(cfg.allocation_seed, step))
        pruned = components_to_prune(self.ema.flatten(), self.mask.flatten(), n, cfg.allocation, draws)
        mask = torch.ones(self.ema.numel(), dtype=torch.bool, device=self.ema.device)
        mask[pruned.to(mask.device)] = False
        self.mask = mask.view_as(self.ema)
        self._apply_mask()
        self.mask_final = step == self.phases.prune_end
        self.history.append(
            {
                "step": step,
                "kept": self.ema.numel() - n,
                "pruned": n,
                "ema": self.ema.clone(),
                "mask": self.mask.clone(),
            }
        )

    def _apply_mask(self) -> None:
        gates = [layer.lora_c for layer in self.layers]
        torch._foreach_mul_(gates, list(self.mask.to(gates[0].dtype).unbind(0)))

    def _follow_device(self) -> None:
        device = self.layers[0].lora_c.device
        if self.ema.device != device:
            self.ema, self.mask = self.ema.to(device), self.mask.to(device)
            self.groups = [(rows.to(device), layers) for rows, layers in self.groups]

    # -- evaluation and reporting ---------------------------------------------------------------
    def first_countable_step(self) -> int:
        if self.phases is None:
            raise RuntimeError("first_countable_step() needs on_train_begin(model, total_steps) first")
        return self.phases.prune_end

    def _sizes(self) -> torch.Tensor:
        """Parameters of one component of each module: d_in + d_out + 1."""
        return torch.tensor([layer.in_features + layer.out_features + 1 for layer in self.layers])

    def paper_trainable_params(self, model: nn.Module, target: AdaptTarget) -> int:
        """Kept components x (d_in + d_out + 1), head excluded: the paper's count (at the end).

        Exact once the final mask is fixed; before that (a dry run, or at set-up) the nominal
        final count ``bT · Σ_modules (d_in + d_out + 1)``: the real one moves with where the
        components stay (an FFN component costs 3,841 parameters, an attention one 1,537).
        """
        kept = self.mask.sum(1).cpu() if self.mask_final else torch.full((len(self.layers),), self.config.final_budget)
        return int((kept * self._sizes()).sum())

    def report(self, model: nn.Module) -> dict[str, Any]:
        """Ranks (after training: the final mask; before: b0 everywhere), the budget actually kept
        at each pruning step, parameter counts and a compact score history (per pruning step:
        the highest pruned Ŝ and the kept components per module type)."""
        ranks = {n: int(k) for n, k in zip(self.names, self.mask.sum(1).tolist())}
        columns = [col for col in COLUMN_ORDER if any(module_position(n)[1] == col for n in self.names)]
        column_of = [columns.index(module_position(n)[1]) for n in self.names]
        history = {"columns": columns, "steps": [], "threshold": [], "kept_by_type": []}
        for entry in self.history:
            kept = [0] * len(columns)
            for col, k in zip(column_of, entry["mask"].sum(1).tolist()):
                kept[col] += k
            pruned_scores = entry["ema"][~entry["mask"]]
            history["steps"].append(entry["step"])
            history["threshold"].append(float(f"{pruned_scores.max().item():.6g}") if entry["pruned"] else None)
            history["kept_by_type"].append(kept)
        return {
            "rank_allocation": ranks,
            "rank_allocation_grid": allocation_grid(ranks),
            "budget_schedule": [{"step": e["step"], "kept": e["kept"]} for e in self.history],
            "initial_trainable_params": int((self.config.init_budget * self._sizes()).sum()),
            "final_trainable_params": self.paper_trainable_params(model, self.target),
            "init_budget": self.config.init_budget,
            "final_budget": self.config.final_budget,
            "score_history": history,
        }

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        """``adapter/``: a peft LoRA adapter holding only the kept components (per-module rank,
        c and s folded into B so peft's scaling is 1; rank-0 modules left out); ``merged/`` with
        ``export_merged``; ``dora_scores.pt``: Ŝ and the mask at every pruning step."""
        run_dir = Path(run_dir)
        factors = {
            name: layer.delta_factors(keep)
            for name, layer, keep in zip(self.names, self.layers, self.mask.unbind(0))
            if keep.any()
        }
        export_peft_adapter(model, factors, self.target, run_dir / "adapter")
        artifacts = {"adapter": "adapter"}
        if self.config.export_merged:
            merged_copy(model, self.names, run_dir / "adapter").save_pretrained(str(run_dir / "merged"))
            artifacts["merged"] = "merged"
        torch.save(
            {
                "modules": self.names,
                "steps": [e["step"] for e in self.history],
                "kept": [e["kept"] for e in self.history],
                "scores": torch.stack([e["ema"] for e in self.history]).cpu() if self.history else None,
                "masks": torch.stack([e["mask"] for e in self.history]).cpu() if self.history else None,
                "final_scores": self.ema.cpu(),
                "final_mask": self.mask.cpu(),
            },
            run_dir / "dora_scores.pt",
        )
        artifacts["scores"] = "dora_scores.pt"
        return artifacts

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Scores, mask and history as CPU copies (the live tensors keep changing in place)."""

        def cpu(value: object) -> object:
            return value.to("cpu", copy=True) if torch.is_tensor(value) else value

        return {
            "ema": cpu(self.ema),
            "mask": cpu(self.mask),
            "mask_final": self.mask_final,
            "total_steps": self.phases.total if self.phases else None,
            "history": [{k: cpu(v) for k, v in e.items()} for e in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["ema"].shape) != tuple(self.ema.shape):
            raise ValueError(
                f"DoRA state for scores of shape {tuple(state['ema'].shape)} does not fit this "
                f"model's {tuple(self.ema.shape)}: resume with the same backbone and budget"
            )
        self.ema, self.mask, self.mask_final = state["ema"].clone(), state["mask"].clone(), state["mask_final"]
        if state["total_steps"] is not None:
            self.phases = training_phases(state["total_steps"], self.config.warmup_ratio, self.config.final_ratio)
        self._follow_device()
        self.history = [
            {k: v.to(self.ema.device) if torch.is_tensor(v) else v for k, v in e.items()} for e in state["history"]
        ]


register_method("dora", DoRA)
