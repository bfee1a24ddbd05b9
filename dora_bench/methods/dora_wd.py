"""Weight-decomposed LoRA (Liu et al., ICML 2024) through peft's ``LoraConfig(use_dora=True)``.

NOT the paper's DoRA. This benchmark reproduces *Dynamic* Low-Rank Adaptation (Mao et al.,
ACL 2024), registered as ``method=dora``; this module is the other method that is also
called "DoRA", offered as a further baseline under a name that can't be confused (SPEC,
"Name clash"). It is not in the paper's tables.

Each adapted layer's weight is split into a magnitude and a direction, and LoRA updates
the direction:

    W' = m · (W0 + s·B A) / ||W0 + s·B A||_c,    s = alpha / r

with ``||·||_c`` the norm of each output row (peft's convention for ``nn.Linear``), ``m``
(``d_out``) initialised to ``||W0||_c`` so that ``W' = W0`` at start, ``A`` (``r x d_in``)
Kaiming-uniform and ``B`` (``d_out x r``) zero, as in our LoRA. peft treats the norm as a
constant in the backward pass (Liu et al. §4.3 suggest this to save memory). What trains: ``A``, ``B``, ``m``
on the six module types of SPEC §1, and the task head. Rank ``r = budget``; the magnitudes add
``Σ d_out`` to LoRA's count: 82,944 on roberta-base (414,720 / 1,410,048 at budgets 2 / 8).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.lora import LoRAConfig


class WeightDecomposedLoRA(Method):
    Config = LoRAConfig  # the same three knobs as LoRA: r, alpha, dropout

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=int(self.config.r),
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            use_dora=True,
            target_modules=list(target.target_modules),
            modules_to_save=list(target.head_modules) or None,
        )
        return get_peft_model(model, config)

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        model.save_pretrained(str(run_dir / "adapter"))
        return {"adapter": "adapter"}


register_method("dora_wd", WeightDecomposedLoRA)
