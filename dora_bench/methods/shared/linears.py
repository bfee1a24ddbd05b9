"""The layers a low-rank adapter can wrap: ``nn.Linear``, and GPT-2's ``Conv1D`` seen as one.

transformers' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``) computes ``x @ W + b`` with
``W`` stored as (d_in, d_out), the transpose of ``nn.Linear``'s (d_out, d_in); it is a linear map
all the same. An adapter beside it only needs ``d_in``, ``d_out`` and the frozen layer's output,
never the weight's layout, so our LoRA, DoRA and adapter layers take either through
``features``. Only merging ``ΔW`` into the stored weight must transpose: peft does that when its
config says ``fan_in_fan_out=True``, which ``fan_in_fan_out`` tells the exporters to set.
"""

from __future__ import annotations

from torch import nn


def _conv1d() -> type[nn.Module]:
    from transformers.pytorch_utils import Conv1D  # imported late: transformers is heavy

    return Conv1D


def is_linear(module: nn.Module) -> bool:
    """True for ``nn.Linear`` and for GPT-2's ``Conv1D``."""
    return isinstance(module, (nn.Linear, _conv1d()))


def features(module: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a linear layer, whichever way its weight is stored."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, _conv1d()):
        return module.nx, module.nf  # weight (nx, nf): nx inputs, nf outputs
    raise TypeError(f"{type(module).__name__} is not a linear layer (nn.Linear or transformers' Conv1D)")


def fan_in_fan_out(modules: list[nn.Module]) -> bool:
    """peft's ``fan_in_fan_out`` for these layers: True when they are ``Conv1D`` (weight stored (d_in, d_out)).

    peft takes one value per adapter, so a model mixing both kinds is refused in one line."""
    kinds = {isinstance(m, _conv1d()) for m in modules}
    if len(kinds) > 1:
        raise ValueError("the target modules mix nn.Linear and Conv1D layers: peft can't export them in one adapter")
    return kinds == {True}
