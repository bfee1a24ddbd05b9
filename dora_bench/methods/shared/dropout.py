"""Dropout on an adapter's input, at a fraction of nn.Dropout's cost on a CPU.

A low-rank adapter computes ``dropout(x) @ Aᵀ`` with ``x`` as wide as the model, once per adapted
module (36 times a step on MiniLM, 72 on roberta-base): drawing those masks was the largest
single cost of a LoRA or DoRA step on a CPU (``torch.bernoulli_``, measured in
``scripts/bench_methods.py --profile``). Two savings, neither of which changes the mathematics:

- the ``1 / (1 - p)`` rescaling is returned to the caller, who folds it into the adapter's scalar
  on the rank-``r`` side instead of multiplying a model-wide tensor;
- on a CPU, where random numbers are costly (the generator is called once per float), the mask
  comes from 16-bit slices of random 64-bit integers: four keep/drop decisions per draw, kept when
  the slice is at or above ``round(p · 2¹⁶)``. So ``p`` is used rounded to a multiple of 2⁻¹⁶
  (0.1 becomes 0.100006) and the rescaling is that rounded value's. A mask costs 2.3x less
  than ``torch.rand(...) >= p`` and 4x less than ``bernoulli_`` there. On a GPU it is ``torch.rand``.
"""

from __future__ import annotations

import torch
from torch import nn

from dora_bench.errors import ConfigError


def drop_input(x: torch.Tensor, p: float, training: bool) -> tuple[torch.Tensor, float]:
    """``(x ⊙ m, 1 / (1 - p))`` with ``m ~ Bernoulli(1 - p)`` elementwise; ``(x, 1.0)`` in eval or for p = 0.

    ``dropout(x) = x ⊙ m / (1 - p)``: the caller multiplies the returned factor in where it is cheapest.
    """
    if not training or p == 0.0:
        return x, 1.0
    if x.device.type == "cpu":
        keep, p = _cpu_mask(x.shape, p)
    else:  # float32 uniforms whatever x's dtype (bf16's 8-bit mantissa would round p)
        keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep, 1.0 / (1.0 - p)


_LEVELS = 1 << 16  # the resolution of p in the CPU mask


def _cpu_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean keep-mask of ``shape`` from 16-bit slices of random int64s, and the p it realises."""
    dropped = round(p * _LEVELS)  # slices below this (of 2^16 equally likely values) are dropped
    if not 0 < dropped < _LEVELS:
        raise ConfigError(f"dropout p={p} rounds to {dropped}/{_LEVELS} on a CPU: use 0, or 2^-16 <= p <= 1 - 2^-16")
    count = shape.numel()
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, ((count + 3) // 4,), dtype=torch.int64)
    # int16 slices are uniform on [-2^15, 2^15); shift the threshold by 2^15 into that range
    keep = bits.view(torch.int16)[:count].view(shape) >= dropped - (1 << 15)
    return keep, dropped / _LEVELS


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
