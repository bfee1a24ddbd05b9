"""BitFit (Ben Zaken et al., 2022): train only the bias terms, plus the task head.

On roberta-base that is 102,144 biases (every linear and LayerNorm bias of the
encoder and embeddings), the paper's 0.10M; the head is left out of that count.
Llama has no bias terms at all (Qwen2 has them on q/k/v, GPT-2 everywhere): BitFit refuses it.
"""

from __future__ import annotations

from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, UnsizedConfig, register_method


class BitFit(Method):
    Config = UnsizedConfig
    uses_budget = False

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        if not any(name.endswith(".bias") for name, _ in model.named_parameters()):
            raise ConfigError(
                f"method=bitfit: this {target.architecture} backbone has no bias terms, so nothing would train: "
                f"pick another method"
            )
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias") or target.is_head(name))
        return model


register_method("bitfit", BitFit)
