"""Before a run, one line estimating its memory; after it, the measured peak beside it.

    weights     = Σ numel · element size of every parameter, in the dtype it is held in
    trainable   = 12 B per trainable parameter: its fp32 gradient and AdamW's two fp32 moments
                  (the trainable weights themselves are in ``weights``)
    activations = B · L · layers · (34 h + 5 a L) · e / 2       kept for the backward pass
                  (+ B · L · V · 8 for a language model's fp32 logits and their gradient:
                  causal LMs and BART's summaries)
                  with gradient checkpointing: B · L · layers · h · e  (each layer's input)
                                                + B · L · (34 h + 5 a L) · e / 2  (one layer recomputed)
    total       = weights + trainable + activations

``B``: the micro-batch one process holds (``trainer.batch_size / (processes · grad_accum)``),
``L``: ``task.max_length`` plus a soft prompt's tokens (the longest batch), ``layers``: BART's
encoder and decoder together, ``h``: hidden size, ``a``: attention heads, ``V``: vocabulary,
``e``: bytes per activation (2 under bf16 autocast, else 4).
``34 h + 5 a L`` is the bytes per token a 16-bit transformer layer keeps for its backward pass
(an FFN 4 h wide, dropout masks, the attention matrix): ``sbh(34 + 5as/h)`` per layer in Korthikanti
et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", §4.1.

What it ignores: FFN widths other than 4 h and gated FFNs (Llama's keeps one more FFN-wide tensor),
fused attention kernels that never hold the L x L matrix (SDPA: the 5 a L term is then an
overestimate), the method's own buffers (DoRA's scores, a few MB), evaluation (generation's
key/value cache, ``eval_batch_size``), the data, the CUDA context and the allocator's caching
and fragmentation, temporaries of the backward pass, and FSDP's sharding (per process, whole).
It is an order of magnitude to plan a run by, not a bound.

The measured peak is ``torch.cuda.max_memory_allocated`` on a GPU (training only, as Table 9's
line), else the process's peak resident memory (which also holds Python, the libraries and the data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

GIB = 2**30
ADAMW_BYTES = 12  # fp32 gradient + exp_avg + exp_avg_sq per trainable parameter


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gib: float
    trainable_optimizer_gib: float
    activations_gib: float
    total_gib: float
    batch: int
    length: int


def estimate(
    model: torch.nn.Module,
    *,
    batch: int,
    length: int,
    activation_bytes: int,
    lm_head: bool,
    recompute: bool,
) -> MemoryEstimate:
    """The estimate of the module docstring for ``model`` as it will train."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = ADAMW_BYTES * sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = activation_bytes_of(model.config, batch, length, activation_bytes, lm_head, recompute)
    total = weights + trainable + activations
    return MemoryEstimate(weights / GIB, trainable / GIB, activations / GIB, total / GIB, batch, length)


def activation_bytes_of(config: Any, batch: int, length: int, element: int, lm_head: bool, recompute: bool) -> int:
    """Activations kept for the backward pass (module docstring), from the model's config."""
    hidden, heads, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    if getattr(config, "is_encoder_decoder", False):  # BART: num_hidden_layers names the encoder's
        layers += config.decoder_layers
    one_layer = batch * length * (34 * hidden + 5 * heads * length) * element // 2
    kept = batch * length * layers * hidden * element + one_layer if recompute else layers * one_layer
    logits = batch * length * config.vocab_size * 8 if lm_head else 0
    return kept + logits


def line(estimate: MemoryEstimate) -> str:
    e = estimate
    return (
        f"[dora-bench] memory estimate: weights {gib(e.weights_gib)} GiB, trainable+optimizer "
        f"{gib(e.trainable_optimizer_gib)} GiB, activations ~{gib(e.activations_gib)} GiB at batch {e.batch} "
        f"× length {e.length} → ~{gib(e.total_gib)} GiB"
    )


def measured_line(estimate: dict[str, Any], peak_gib: float, source: str) -> str:
    estimated = gib(estimate["total_gib"])
    return f"[dora-bench] memory: estimated ~{estimated} GiB, measured peak {gib(peak_gib)} GiB ({source})"


def as_record(estimate: MemoryEstimate) -> dict[str, Any]:
    return asdict(estimate)


def gib(value: float) -> str:
    """Three significant figures: 19.9, 2.34, 0.000412 (a tiny CPU model's estimate is not zero)."""
    return f"{value:.3g}"
