"""Weight-decomposed LoRA (Liu et al., ICML 2024) through peft's ``LoraConfig(use_dora=True)``.

NOT the paper's DoRA. This benchmark reproduces *Dynamic* Low-Rank Adaptation (Mao et al.,
ACL 2024), registered as ``method=dora``; this module is the other method that is also
called "DoRA", offered as a further baseline under a name that can't be confused (SPEC,
"Name clash"). It is not in the paper's tables.

    W' = m · (W0 + s·B A) / ||W0 + s·B A||_c,    s = alpha / r

``||·||_c`` is the norm of each output row (peft's convention for ``nn.Linear``); ``m`` (``d_out``)
starts at ``||W0||_c`` so that ``W' = W0`` at start; ``A`` Kaiming-uniform, ``B`` zero. peft treats
the norm as a constant in the backward pass (Liu et al. §4.3). What trains: ``A``, ``B``, ``m`` on
the six module types of SPEC §1, and the task head: LoRA's count plus ``Σ d_out`` (414,720 /
1,410,048 on roberta-base at budgets 2 / 8).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.lora import LoRAConfig, target_linears
from dora_bench.methods.shared.dropout import use_cheap_dropout
from dora_bench.methods.shared.linears import fan_in_fan_out


class WeightDecomposedLoRA(Method):
    Config = LoRAConfig  # the same three knobs as LoRA: r, alpha, dropout

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        config = LoraConfig(
            r=int(cfg.r),
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            use_dora=True,
            fan_in_fan_out=fan_in_fan_out([m for _, m in target_linears(model, target)]),  # GPT-2's Conv1D
            target_modules=list(target.target_modules),
            modules_to_save=list(target.head_modules) or None,
        )
        model = get_peft_model(model, config)
        use_cheap_dropout(model, cfg.dropout)
        return model

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        model.save_pretrained(str(run_dir / "adapter"))
        return {"adapter": "adapter"}


register_method("dora_wd", WeightDecomposedLoRA)
