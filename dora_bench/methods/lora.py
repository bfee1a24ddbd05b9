"""LoRA (Hu et al., 2022): ``y = W0 x + b + (α / r) · B A dropout(x)``.

``A`` (r x d_in) and ``B`` (d_out x r) train on the six module types of SPEC §1; the backbone is
frozen and the task head trains fully. Rank ``r = budget``: 331,776 parameters at r = 2 and
1,327,104 at r = 8 on roberta-base. The layer is ours (loralib's shape), numerically peft's
``LoraLayer`` (same init, same forward; ``tests/methods/test_lora.py`` compares them) but with the
scaling and dropout's ``1/(1-p)`` folded into the rank-r side and dropout's mask drawn by
``dropout.drop_input``: the cheaper step on a CPU. ``export`` writes an ordinary peft adapter.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.shared.dropout import drop_input
from dora_bench.methods.shared.linears import fan_in_fan_out, features, is_linear


@dataclass
class LoRAConfig:
    r: int  # rank of every adapted module; the CLI's budget
    alpha: float = 8.0  # scaling alpha / r (SPEC §1, as in the paper's code)
    dropout: float = 0.1  # on the adapter's input only

    def __post_init__(self) -> None:
        if int(self.r) < 1:
            raise ValueError(f"rank r={self.r} must be >= 1: set budget=1 or more")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")


class LoRALinear(nn.Module):
    """A frozen linear layer plus ``B A``: ``y = base(x) + s · (dropout(x) Aᵀ) Bᵀ``, ``s = α / r``.

    ``base``: ``nn.Linear`` or GPT-2's ``Conv1D`` (``linears.py``). ``lora_A``: (r, d_in), Kaiming-uniform
    with a = sqrt(5) (nn.Linear's and peft's init); ``lora_B``: (d_out, r), zero, so the layer starts
    equal to the base. x: (..., d_in) -> (..., d_out).
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = features(base)
        kwargs = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kwargs))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kwargs))
        self.scaling, self.dropout = alpha / rank, float(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped, factor = drop_input(x, self.dropout, self.training)
        # s and 1/(1-p) scale the r-wide activations, not the (..., d_out) output
        return self.base(x) + F.linear(F.linear(dropped, self.lora_A) * (self.scaling * factor), self.lora_B)


def replace_linears(model: nn.Module, target: AdaptTarget, make: Callable[[nn.Module], nn.Module]) -> list[str]:
    """Swap every targeted linear layer (``nn.Linear`` or ``Conv1D``) outside the head for
    ``make(linear)``; freeze the rest of the backbone, unfreeze the head. Returns the swapped
    modules' names, in model order."""
    model.requires_grad_(False)
    names = [name for name, _ in target_linears(model, target)]
    if not names:
        raise ConfigError(
            f"no linear layer in the model matches {target.target_modules}: check backbone.target_modules"
        )
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent)
        setattr(holder, child, make(getattr(holder, child)))
    for name, param in model.named_parameters():
        if target.is_head(name):
            param.requires_grad_(True)
    return names


def target_linears(model: nn.Module, target: AdaptTarget) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every linear layer (``nn.Linear`` or ``Conv1D``) the target names, head excluded."""
    return [(n, m) for n, m in model.named_modules() if is_linear(m) and target.is_target(n) and not target.is_head(n)]


def export_peft_adapter(
    model: nn.Module,
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    target: AdaptTarget,
    out_dir: Path,
) -> None:
    """Save ``{module: (A, B)}`` (``ΔW = B A``, any scaling folded in) as a peft LoRA adapter that
    plain ``PeftModel.from_pretrained`` loads onto the base model, the task head with it.
    Per-module ranks go in ``rank_pattern`` with ``alpha = rank``, so peft's scaling is 1.

    The two files are written directly in peft's layout (its config; tensors named
    ``base_model.model.<module>.lora_A.weight``), not through a peft copy of the model: copying an
    8B backbone to save a few MB doubles its memory, and a backbone sharded by FSDP can't be copied."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    ranks = {name: int(a.shape[0]) for name, (a, _) in factors.items()}
    top = max(ranks.values())
    config = LoraConfig(
        r=top,
        lora_alpha=top,
        lora_dropout=0.0,
        fan_in_fan_out=fan_in_fan_out([model.get_submodule(name).base for name in ranks]),  # GPT-2's Conv1D
        target_modules=list(ranks),
        rank_pattern=ranks,
        alpha_pattern=ranks,
        modules_to_save=list(target.head_modules) or None,
        base_model_name_or_path=getattr(model.config, "name_or_path", None) or None,
    )
    tensors = {}
    for name, (a, b) in factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    for name, param in model.named_parameters():
        if target.is_head(name):
            tensors[f"base_model.model.{name}"] = param
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(out_dir / "adapter_model.safetensors")
    )


def merged_copy(model: nn.Module, names: list[str], adapter_dir: Path) -> nn.Module:
    """A copy of the base model with the adapter saved in ``adapter_dir`` merged into its weights."""
    from peft import PeftModel

    plain = copy.deepcopy(model)
    for name in names:  # the adapted layers back to their frozen base linears
        parent, _, child = name.rpartition(".")
        holder = plain.get_submodule(parent)
        setattr(holder, child, getattr(holder, child).base)
    return PeftModel.from_pretrained(plain, str(adapter_dir)).merge_and_unload()


class LoRA(Method):
    Config = LoRAConfig

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        cfg = self.config
        self.target = target
        self.names = replace_linears(model, target, lambda base: LoRALinear(base, int(cfg.r), cfg.alpha, cfg.dropout))
        return model

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        factors = {}
        for name in self.names:
            layer = model.get_submodule(name)
            factors[name] = (layer.lora_A.detach(), layer.lora_B.detach() * layer.scaling)
        export_peft_adapter(model, factors, self.target, Path(run_dir) / "adapter")
        return {"adapter": "adapter"}


register_method("lora", LoRA)
