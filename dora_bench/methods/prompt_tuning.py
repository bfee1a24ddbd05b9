"""Prompt tuning (Lester et al., 2021) through peft: a trained soft prompt before the input.

What trains: the prompt + the head.

``n`` virtual-token embeddings ``P`` (``n x d``) are prepended to the embedded input,
``[P; E(x)]``, and the attention mask gets ``n`` ones in front (peft's
``PeftModelForSequenceClassification`` does both); the backbone stays frozen and the
classification head trains fully. Not in the paper's tables: a further baseline.

Initialisation: embeddings of tokens sampled uniformly from the vocabulary (peft's
``SAMPLE_VOCAB``). Lester et al. found sampled-vocabulary init better than random and
class-label init best; class labels need the task's verbalisers, which a classification
head does not have. ``init=random`` switches to peft's random init.

Size: ``n = tokens_per_budget · budget`` (10 per budget unit: 20 tokens, 15,360 parameters
at budget 2 and 80 tokens, 61,440 parameters at budget 8 on roberta-base). Matching LoRA's
331,776 / 1,327,104 would take 432 / 1,728 tokens, more positions than roberta-base has
(512) once a 128-token input is added; the prompt lengths Lester et al. studied are 1 to 150.
The prompt also lengthens every sequence by ``n``: ``n`` + the task's ``max_length`` must fit
the backbone's position table.

Classification and decoder LLMs (peft's ``CAUSAL_LM`` wrapper: the prompt goes before the
input and the labels get ``n`` ignored positions in front). Which wrapper a backbone gets is read
from transformers' own tables of causal-LM and sequence-classification classes, so GPT-2's
``GPT2LMHeadModel`` is a decoder like ``LlamaForCausalLM``. Not span QA: peft's extractive-QA wrapper
would score answer spans on the virtual positions too; seq2seq prompt tuning is out of this
benchmark's scope.

Generation on decoders does not go through peft's ``generate``: with the KV cache it continued from
wrong positions, and it drops position ids, so one pad token in front of a prompt changed the answer.
``generate`` here builds ``[P; E(pad...); E(x)]`` with the attention mask ``[1...; 0...; 1...]`` and
hands these embeddings to the backbone's own ``generate``, which numbers positions from the mask
(pads skipped, ``P`` at 0..n-1, the prompt after it) and caches as for any input: cached, uncached
and unpadded greedy outputs agree (tests/methods/test_prompt_tuning_generation.py).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method

INITS = {"sample_vocab": "SAMPLE_VOCAB", "random": "RANDOM"}


def peft_task_type(model: nn.Module) -> str | None:
    """peft's task type for a backbone class, from transformers' model tables (``GPT2LMHeadModel`` is
    a causal LM there); None for a head prompt tuning does not support here (span QA, seq2seq)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    name = type(model).__name__
    if name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        return "CAUSAL_LM"
    if name in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values():
        return "SEQ_CLS"
    return None


def generate_with_prompt(peft_model: nn.Module, **kwargs: Any) -> torch.Tensor:
    """Greedy or beam generation after the soft prompt, with correct positions and cache; returns
    ``[input_ids, new tokens]`` as ``generate`` does (see the module docstring)."""
    input_ids = kwargs.pop("input_ids")
    mask = kwargs.pop("attention_mask", None)
    if mask is None:
        mask = torch.ones_like(input_ids)
    base = peft_model.get_base_model()
    embeds = base.get_input_embeddings()(input_ids)
    prompt = peft_model.get_prompt(batch_size=input_ids.shape[0]).to(device=embeds.device, dtype=embeds.dtype)
    ones = torch.ones(mask.shape[0], prompt.shape[1], dtype=mask.dtype, device=mask.device)
    new = base.generate(
        inputs_embeds=torch.cat([prompt, embeds], 1), attention_mask=torch.cat([ones, mask], 1), **kwargs
    )
    return torch.cat([input_ids, new.to(input_ids.device)], 1)  # from embeddings alone generate returns new tokens


@dataclass
class PromptTuningConfig:
    budget: int  # the CLI's budget; the prompt has tokens_per_budget * budget virtual tokens
    tokens_per_budget: int = 10  # 20 / 80 tokens at budgets 2 / 8
    init: str = "sample_vocab"  # sample_vocab | random

    def __post_init__(self) -> None:
        if int(self.budget) < 1 or int(self.tokens_per_budget) < 1:
            raise ValueError(f"budget={self.budget} and tokens_per_budget={self.tokens_per_budget} must be >= 1")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not known: use one of {', '.join(INITS)}")

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.tokens_per_budget) * int(self.budget)


class PromptTuning(Method):
    Config = PromptTuningConfig

    def apply(self, model: nn.Module, target: AdaptTarget) -> nn.Module:
        from peft import PromptTuningConfig as PeftPromptTuningConfig
        from peft import get_peft_model

        kind = peft_task_type(model)
        if kind is None:
            raise ConfigError(
                f"method=prompt_tuning supports sequence classification and decoder LLMs, not "
                f"{type(model).__name__}: pick a GLUE task, a decoder task, or another method"
            )
        n = self.config.num_virtual_tokens
        peft_config = PeftPromptTuningConfig(
            task_type=kind,
            num_virtual_tokens=n,
            prompt_tuning_init=INITS[self.config.init],
            modules_to_save=list(target.head_modules) or None,
        )
        adapted = get_peft_model(model, peft_config)
        if kind == "CAUSAL_LM":  # this instance's generate only: peft's class stays as it is
            adapted.generate = types.MethodType(generate_with_prompt, adapted)
        return adapted

    def extra_input_positions(self) -> int:
        return self.config.num_virtual_tokens  # the loop checks prompt + max_length against the backbone

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        model.save_pretrained(str(run_dir / "adapter"))
        return {"adapter": "adapter"}


register_method("prompt_tuning", PromptTuning)
