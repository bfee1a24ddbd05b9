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

from dora_bench.methods.base import register_method
from dora_bench.methods.lora import LoRA


class WeightDecomposedLoRA(LoRA):
    """LoRA's three knobs (r, alpha, dropout) and export, with peft's ``use_dora=True``."""

    use_dora = True


register_method("dora_wd", WeightDecomposedLoRA)
