"""Dropout on an adapter's input, at a third of nn.Dropout's cost on a CPU.

A low-rank adapter computes ``dropout(x) @ Aᵀ`` with ``x`` as wide as the model, once per adapted
module (36 times a step on MiniLM, 72 on roberta-base): drawing those masks was the largest
single cost of a LoRA or DoRA step on a CPU (``torch.bernoulli_``, measured in
``scripts/bench_methods.py --profile``). Here the mask is ``U >= p`` with ``U ~ Uniform[0, 1)``
from ``torch.rand`` (the same Bernoulli(1 - p) keep-probability, drawn at the cost of one uniform),
and the ``1 / (1 - p)`` rescaling is returned to the caller, who folds it into the adapter's scalar
on the rank-``r`` side instead of multiplying a model-wide tensor. The mathematics is nn.Dropout's;
only the stream of random numbers differs.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_input(x: torch.Tensor, p: float, training: bool) -> tuple[torch.Tensor, float]:
    """``(x ⊙ m, 1 / (1 - p))`` with ``m ~ Bernoulli(1 - p)`` elementwise; ``(x, 1.0)`` in eval or for p = 0.

    ``dropout(x) = x ⊙ m / (1 - p)``: the caller multiplies the returned factor in where it is cheapest.
    The uniforms are float32 whatever ``x``'s dtype (bf16 has 8 bits of mantissa: p would be rounded).
    """
    if not training or p == 0.0:
        return x, 1.0
    keep = torch.rand(x.shape, device=x.device).ge_(p).to(x.dtype)  # 1.0 kept, 0.0 dropped, in place
    return x * keep, 1.0 / (1.0 - p)


class InputDropout(nn.Module):
    """``drop_input`` as a drop-in ``nn.Dropout`` (for layers we don't own, e.g. peft's AdaLoRA)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped, factor = drop_input(x, self.p, self.training)
        return dropped if factor == 1.0 else dropped * factor

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_cheap_dropout(model: nn.Module, p: float) -> None:
    """Swap peft's adapter-input ``nn.Dropout`` modules (``lora_dropout``) for ``InputDropout``: the
    same mathematics, a cheaper mask. With p = 0 peft holds an ``nn.Identity`` there, which stays."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for key, layer in dropouts.items():
                if isinstance(layer, nn.Dropout):
                    dropouts[key] = InputDropout(p)
