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
input, the labels get ``n`` ignored positions in front, and ``generate`` keeps it). Not span QA:
peft's extractive-QA wrapper would score answer spans on the virtual positions too; seq2seq
prompt tuning is out of this benchmark's scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dora_bench.errors import ConfigError
from dora_bench.methods.base import AdaptTarget, Method, register_method

INITS = {"sample_vocab": "SAMPLE_VOCAB", "random": "RANDOM"}
#: peft's task type for the model classes prompt tuning supports here, by class-name suffix
TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM"}


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

        kind = [t for suffix, t in TASK_TYPES.items() if type(model).__name__.endswith(suffix)]
        if not kind:
            raise ConfigError(
                f"method=prompt_tuning supports classification and decoder LLMs, not {type(model).__name__}: "
                f"pick a GLUE task, a decoder, or another method"
            )
        n = self.config.num_virtual_tokens
        peft_config = PeftPromptTuningConfig(
            task_type=kind[0],
            num_virtual_tokens=n,
            prompt_tuning_init=INITS[self.config.init],
            modules_to_save=list(target.head_modules) or None,
        )
        return get_peft_model(model, peft_config)

    def extra_input_positions(self) -> int:
        return self.config.num_virtual_tokens  # the loop checks prompt + max_length against the backbone

    def export(self, model: nn.Module, run_dir: Path) -> dict[str, str]:
        model.save_pretrained(str(run_dir / "adapter"))
        return {"adapter": "adapter"}


register_method("prompt_tuning", PromptTuning)
