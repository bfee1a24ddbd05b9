"""Bottleneck adapters: Houlsby et al. (2019) and Pfeiffer et al. (2021). What trains: the adapters + the task head.

An adapter is a small residual MLP inserted after a frozen sub-layer's output projection:

    adapter(h) = h + W_up · act(W_down · h + b_down) + b_up,   W_down: m x d,  W_up: d x m

with ``d`` the model width and ``m`` the bottleneck width. ``W_up`` and ``b_up`` start at
zero, so every adapter is the identity at initialisation and the adapted model computes
exactly what the backbone computes (Houlsby's near-identity init); ``W_down`` is drawn
from a normal with std 1e-2 truncated at two std, as Houlsby et al. describe.

The two methods differ only in where the adapters sit:

- ``houlsby``: after every attention sub-layer and after every feed-forward sub-layer
  (roberta-base: 2 per layer, 24 adapters);
- ``pfeiffer``: after the feed-forward sub-layer only (roberta-base: 12 adapters).

Exact insertion point. RoBERTa's ``RobertaSelfOutput`` and ``RobertaOutput`` both compute
``LayerNorm(dropout(dense(h)) + residual)``; we wrap ``attention.output.dense`` and the
FFN's ``output.dense`` so the adapter acts on the projection's output, before dropout,
the residual sum and the LayerNorm. BART's layers compute the same thing around
``self_attn.out_proj`` / ``encoder_attn.out_proj`` and ``fc2``. In the BART decoder
Houlsby also gets an adapter after cross-attention (``encoder_attn.out_proj``): the rule
is "one adapter after each sub-layer", and cross-attention is a sub-layer. Pfeiffer's
AdapterHub configuration also changes where the residual and LayerNorm sit around the
adapter; we keep one insertion rule for both so that only placement and width differ.

Size from the one ``budget`` knob (SPEC §2): Houlsby's width is ``4 · budget`` and
Pfeiffer's ``8 · budget``, close to LoRA's count at the same budget. Each adapter
holds ``2·d·m + m + d`` parameters; on roberta-base (d = 768) that is 313,536 / 1,198,848
(Houlsby) and 304,320 / 1,189,632 (Pfeiffer) at budgets 2 / 8, the paper's 0.31M / 1.20M
and 0.30M / 1.19M. The nonlinearity is ReLU, AdapterHub's default for Pfeiffer adapters,
kept for both so the two methods differ only in placement (``activation=gelu`` switches).
Houlsby et al. also trained the LayerNorms; we train adapters + head only, so the count
above is everything that trains besides the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from dora_bench.methods.base import AdaptTarget, Method, register_method

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}

#: Output projections an adapter follows, by architecture and sub-layer kind. The RoBERTa FFN
#: pattern needs the layer index right before ``output`` so that it skips ``attention.output.dense``.
SITES: dict[str, dict[str, str]] = {
    "roberta": {"attention": r"attention\.output\.dense$", "ffn": r"layer\.\d+\.output\.dense$"},
    "bart": {"attention": r"(self_attn|encoder_attn)\.out_proj$", "ffn": r"\bfc2$"},
}


@dataclass
class AdapterConfig:
    budget: int  # bT, the CLI's budget; the bottleneck width is width_per_budget * budget
    width_per_budget: int  # Houlsby 4, Pfeiffer 8: either lands near LoRA's count at the same budget
    activation: str = "relu"  # relu | gelu
    init_std: float = 1e-2  # std of the down-projection's truncated normal init (Houlsby et al.)

    def __post_init__(self):
        if int(self.budget) < 1 or int(self.width_per_budget) < 1:
            raise ValueError(f"budget={self.budget} and width_per_budget={self.width_per_budget} must be >= 1: set budget=2")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not known: use one of {', '.join(ACTIVATIONS)}")

    @property
    def width(self) -> int:
        return int(self.width_per_budget) * int(self.budget)


@dataclass
class HoulsbyConfig(AdapterConfig):
    width_per_budget: int = 4


@dataclass
class PfeifferConfig(AdapterConfig):
    width_per_budget: int = 8


class Bottleneck(nn.Module):
    """``h + up(act(down(h)))`` on the last dimension; shapes ``(..., d) -> (..., d)``."""

    def __init__(self, dim: int, width: int, activation: str = "relu", init_std: float = 1e-2):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(width, dim)
        nn.init.trunc_normal_(self.down.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # identity at init: the backbone's output is unchanged
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdaptedProjection(nn.Module):
    """A frozen output projection followed by its adapter: ``adapter(projection(x))``."""

    def __init__(self, projection: nn.Linear, adapter: Bottleneck):
        super().__init__()
        self.projection = projection
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.projection(x))


class BottleneckAdapters(Method):
    """Shared by Houlsby and Pfeiffer; a subclass names the sub-layers that get an adapter."""

    sites: ClassVar[tuple[str, ...]] = ()

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        for name, p in model.named_parameters():
            p.requires_grad_(target.is_head(name))
        pattern = re.compile("|".join(f"(?:{SITES[target.architecture][s]})" for s in self.sites))
        places = [(name, m) for name, m in model.named_modules() if pattern.search(name) and isinstance(m, nn.Linear)]
        cfg = self.config
        for name, projection in places:
            adapter = Bottleneck(projection.out_features, cfg.width, cfg.activation, cfg.init_std)
            adapter.to(device=projection.weight.device, dtype=projection.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, AdaptedProjection(projection, adapter))
        self.sites_found = len(places)
        return model

    def report(self, model: nn.Module) -> dict[str, int]:
        return {"adapters": self.sites_found, "adapter_width": self.config.width}

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        from safetensors.torch import save_file

        trained = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, str(run_dir / "adapters.safetensors"))
        return {"adapter": "adapters.safetensors"}


class Houlsby(BottleneckAdapters):
    Config = HoulsbyConfig
    sites = ("attention", "ffn")


class Pfeiffer(BottleneckAdapters):
    Config = PfeifferConfig
    sites = ("ffn",)


register_method("houlsby", Houlsby)
register_method("pfeiffer", Pfeiffer)
