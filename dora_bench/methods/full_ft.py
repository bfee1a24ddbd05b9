"""Full fine-tuning: every weight of the backbone and the head trains.

The paper counts every parameter for this row (124.65M on roberta-base with a
2-label head: 124,647,170), so ``paper_trainable_params`` includes the head here.
"""

from __future__ import annotations

from torch import nn

from dora_bench.methods.base import AdaptTarget, Method, UnsizedConfig, register_method


class FullFT(Method):
    Config = UnsizedConfig
    uses_budget = False
    shard_trainable = True

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def paper_trainable_params(self, model: nn.Module, target: AdaptTarget) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


register_method("full_ft", FullFT)
