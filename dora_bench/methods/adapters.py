"""Bottleneck adapters: Houlsby et al. (2019) and Pfeiffer et al. (2021). What trains: the adapters + the task head.

An adapter is a small MLP ``f(h) = W_up · act(W_down · h + b_down) + b_up`` (``W_down``: m x d,
``W_up``: d x m, width ``m``) placed inside a frozen Transformer layer. Each follows its own
reference implementation, inside a post-LN block ``LayerNorm(dropout(dense(h)) + x)``:

- ``houlsby`` (google-research/adapter-bert, ``feedforward_adapter``), after the attention
  sub-layer and after the FFN: ``LayerNorm(a + f(a) + x)`` with ``a = dropout(dense(h))``;
  GELU; both projections truncated-normal with std 1e-3 (near identity), biases zero.
- ``pfeiffer`` (AdapterHub's Pfeiffer / ``SeqBnConfig``: ``original_ln_before``,
  ``residual_before_ln``, ``original_ln_after``), after the FFN only:
  ``LayerNorm(f(LayerNorm(a + x)) + a + x)``, the block's own LayerNorm applied twice;
  ReLU; both projections N(0, 0.02) (AdapterHub's "bert" init), biases zero.

On BART, whose layers apply dropout, residual and LayerNorm inline, the adapter follows the
output projection (``out_proj``, ``fc2``) as ``a + f(a)`` before them: an approximation of both
arrangements, noted in docs/methods.md. The decoder LLMs (Llama, Qwen2, GPT-2) are pre-LN: each
sub-layer ends in an output projection (``o_proj``, ``down_proj``; GPT-2's ``attn.c_proj``,
``mlp.c_proj``) whose result joins the residual stream, and the adapter sits there the same way,
``a + f(a)``: Houlsby's place in a pre-LN block, and Pfeiffer's without the second LayerNorm these
blocks lack. Houlsby et al. also train the LayerNorms; we don't, so that the counts stay the
paper's (every LayerNorm of roberta-base would add 38,400, +12% at budget 2).

Size from the one ``budget`` knob (SPEC §2): Houlsby's width is ``4 · budget`` and Pfeiffer's
``8 · budget``. Each adapter holds ``2·d·m + m + d``: on roberta-base 313,536 / 1,198,848
(Houlsby, 24 adapters) and 304,320 / 1,189,632 (Pfeiffer, 12) at budgets 2 / 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method
from dora_bench.methods.shared.linears import features, is_linear

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
INITS = ("truncated_normal", "normal")

#: The sub-layer blocks an adapter joins, by architecture. RoBERTa/BERT: the output block that
#: holds ``dense``, ``dropout`` and ``LayerNorm`` (the FFN pattern needs the layer index right before
#: ``output`` so that it skips ``attention.output``). BART and the decoder LLMs: the output projection itself.
SITES: dict[str, dict[str, str]] = {
    "roberta": {"attention": r"attention\.output$", "ffn": r"layer\.\d+\.output$"},
    "bert": {"attention": r"attention\.output$", "ffn": r"layer\.\d+\.output$"},
    "bart": {"attention": r"(self_attn|encoder_attn)\.out_proj$", "ffn": r"\bfc2$"},
    "llama": {"attention": r"self_attn\.o_proj$", "ffn": r"mlp\.down_proj$"},
    "qwen2": {"attention": r"self_attn\.o_proj$", "ffn": r"mlp\.down_proj$"},
    "gpt2": {"attention": r"attn\.c_proj$", "ffn": r"mlp\.c_proj$"},
}


@dataclass
class AdapterConfig:
    budget: int  # bT, the CLI's budget; the bottleneck width is width_per_budget * budget
    width_per_budget: int  # Houlsby 4, Pfeiffer 8: either lands near LoRA's count at the same budget
    activation: str  # relu | gelu
    init: str  # truncated_normal (adapter-bert) | normal (AdapterHub)
    init_std: float  # std of both projections' init

    def __post_init__(self) -> None:
        if int(self.budget) < 1 or int(self.width_per_budget) < 1:
            raise ValueError(
                f"budget={self.budget} and width_per_budget={self.width_per_budget} must be >= 1: set budget=2"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not known: use one of {', '.join(ACTIVATIONS)}")
        if self.init not in INITS or not self.init_std > 0:
            raise ValueError(
                f"init={self.init!r}, init_std={self.init_std}: use one of {', '.join(INITS)} with init_std > 0"
            )

    @property
    def width(self) -> int:
        return int(self.width_per_budget) * int(self.budget)


@dataclass
class HoulsbyConfig(AdapterConfig):
    width_per_budget: int = 4
    activation: str = "gelu"
    init: str = "truncated_normal"
    init_std: float = 1e-3


@dataclass
class PfeifferConfig(AdapterConfig):
    width_per_budget: int = 8
    activation: str = "relu"
    init: str = "normal"
    init_std: float = 0.02


class Bottleneck(nn.Module):
    """``f(h) = up(act(down(h)))`` on the last dimension, (..., d) -> (..., d); no residual inside."""

    def __init__(self, dim: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.down, self.act, self.up = (
            nn.Linear(dim, cfg.width),
            ACTIVATIONS[cfg.activation](),
            nn.Linear(cfg.width, dim),
        )
        for proj in (self.down, self.up):
            if cfg.init == "truncated_normal":  # TensorFlow's truncated_normal_initializer: cut at 2 std
                nn.init.trunc_normal_(proj.weight, std=cfg.init_std, a=-2 * cfg.init_std, b=2 * cfg.init_std)
            else:
                nn.init.normal_(proj.weight, std=cfg.init_std)
            nn.init.zeros_(proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class HoulsbyOutput(nn.Module):
    """A frozen post-LN output block with Houlsby's adapter: ``LN(a + f(a) + x)``, ``a = dropout(dense(h))``."""

    def __init__(self, block: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        a = self.block.dropout(self.block.dense(hidden_states))
        return self.block.LayerNorm(a + self.adapter(a) + input_tensor)


class PfeifferOutput(nn.Module):
    """A frozen post-LN output block with Pfeiffer's adapter: ``LN(f(LN(a + x)) + a + x)``."""

    def __init__(self, block: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.block, self.adapter = block, adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        summed = self.block.dropout(self.block.dense(hidden_states)) + input_tensor
        return self.block.LayerNorm(self.adapter(self.block.LayerNorm(summed)) + summed)


class AdaptedProjection(nn.Module):
    """BART, decoder LLMs: a frozen output projection and its adapter, ``a + f(a)`` with ``a = projection(x)``."""

    def __init__(self, projection: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.projection, self.adapter = projection, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.projection(x)
        return a + self.adapter(a)


class BottleneckAdapters(Method):
    """Shared by Houlsby and Pfeiffer; a subclass names the sub-layers and the block arrangement."""

    sites: ClassVar[tuple[str, ...]] = ()
    block: ClassVar[type[nn.Module]] = nn.Module

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        for name, p in model.named_parameters():
            p.requires_grad_(target.is_head(name))
        if target.architecture not in SITES:
            raise ConfigError(
                f"method={self.name} has no adapter sites for {target.architecture} backbones: pick another method"
            )
        pattern = re.compile("|".join(f"(?:{SITES[target.architecture][s]})" for s in self.sites))
        places = [(name, m) for name, m in model.named_modules() if pattern.search(name)]
        for name, module in places:
            inline = is_linear(module)  # BART, decoder LLMs: the projection, not a block
            weight = module.weight if inline else module.dense.weight
            width = features(module)[1] if inline else weight.shape[0]  # the residual stream's width
            with torch.device(weight.device):  # meta (make params): no init work at all
                adapter = Bottleneck(width, self.config).to(dtype=weight.dtype)
            parent_name, _, child = name.rpartition(".")
            wrapped = AdaptedProjection(module, adapter) if inline else self.block(module, adapter)
            setattr(model.get_submodule(parent_name), child, wrapped)
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
    block = HoulsbyOutput


class Pfeiffer(BottleneckAdapters):
    Config = PfeifferConfig
    sites = ("ffn",)
    block = PfeifferOutput


register_method("houlsby", Houlsby)
register_method("pfeiffer", Pfeiffer)
