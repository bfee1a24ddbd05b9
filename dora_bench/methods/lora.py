"""LoRA (Hu et al., 2022) through peft: ``y = W0 x + (alpha / r) * B A dropout(x)``.

``A`` (r x d_in) and ``B`` (d_out x r) train on the six module types of SPEC §1,
``B = 0`` at start; the task head trains fully (peft ``modules_to_save``). Rank
``r = budget``: 331,776 parameters at r = 2 and 1,327,104 at r = 8 on roberta-base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import nn

from dora_bench.methods.base import AdaptTarget, Method, register_method


@dataclass
class LoRAConfig:
    r: int  # rank of every adapted module; the CLI's budget
    alpha: float = 8.0  # scaling alpha / r (SPEC §1, as in the paper's code)
    dropout: float = 0.1  # on the adapter's input only

    def __post_init__(self):
        if int(self.r) < 1:
            raise ValueError(f"rank r={self.r} must be >= 1: set budget=1 or more")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")


class LoRA(Method):
    Config = LoRAConfig
    use_dora: ClassVar[bool] = False  # peft's weight decomposition (dora_wd.py), not the paper's DoRA

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=int(self.config.r),
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            use_dora=self.use_dora,
            target_modules=list(target.target_modules),
            modules_to_save=list(target.head_modules) or None,
        )
        return get_peft_model(model, config)

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        model.save_pretrained(str(run_dir / "adapter"))
        return {"adapter": "adapter"}


register_method("lora", LoRA)
