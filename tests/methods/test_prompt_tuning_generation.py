"""Prompt tuning on decoders: greedy generation after the soft prompt agrees with and without the KV cache,
with and without left padding, and with a step-by-step decode by full forward passes; GPT-2 is a decoder."""

from __future__ import annotations

import pytest
import torch
from test_decoders import decoder

from dora_bench.backbones import adapt_target
from dora_bench.errors import ConfigError
from dora_bench.methods import build_method
from dora_bench.methods.prompt_tuning import peft_task_type

NEW = 4


def prompt_tuned(name: str):
    model, cfg = decoder(name)
    plugin = build_method({"name": "prompt_tuning", "budget": 1, "tokens_per_budget": 3})
    adapted = plugin.apply(model, adapt_target(cfg, "causal_lm")).eval()
    with torch.no_grad():  # a trained-looking prompt, not its init
        adapted.prompt_encoder["default"].embedding.weight.add_(
            torch.randn_like(adapted.prompt_encoder["default"].embedding.weight)
        )
    return adapted


def greedy(model, ids, mask, cache: bool) -> list[list[int]]:
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, use_cache=cache, pad_token_id=0
    )
    return out[:, ids.shape[1] :].tolist()


def stepwise(model, ids) -> list[list[int]]:
    """The reference: no cache, no padding, one full forward pass (soft prompt in front) per new token."""
    rows = []
    with torch.no_grad():
        for row in ids:
            seq = row[None]
            for _ in range(NEW):
                logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
                seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
            rows.append(seq[0, len(row) :].tolist())
    return rows


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_cached_uncached_and_left_padded_greedy_outputs_agree(name):
    model = prompt_tuned(name)
    torch.manual_seed(1)
    ids = torch.randint(3, 259, (5, 6))
    ones = torch.ones_like(ids)
    reference = stepwise(model, ids)
    assert greedy(model, ids, ones, cache=True) == reference
    assert greedy(model, ids, ones, cache=False) == reference
    # two pad tokens in front of every row, masked: the same continuations
    padded = torch.cat([torch.zeros(5, 2, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(5, 2, dtype=torch.long), ones], 1)
    assert greedy(model, padded, mask, cache=True) == reference
    assert greedy(model, padded, mask, cache=False) == reference
    # a batch of unequal prompts, left padded as the tasks batch them: each row as it is alone
    short = ids[1, 2:]
    batch = torch.stack([ids[0], torch.cat([torch.zeros(2, dtype=torch.long), short])])
    batch_mask = (torch.arange(6) >= torch.tensor([[0], [2]])).long()
    assert greedy(model, batch, batch_mask, cache=True) == [reference[0], stepwise(model, short[None])[0]]


def test_the_soft_prompt_changes_what_is_generated():
    """The agreement above is not the backbone's alone: without the prompt the continuation differs."""
    model = prompt_tuned("tiny-llama")
    torch.manual_seed(1)
    ids = torch.randint(3, 259, (5, 6))
    base = model.get_base_model()
    plain = base.generate(input_ids=ids, max_new_tokens=NEW, do_sample=False, pad_token_id=0)[:, 6:].tolist()
    assert greedy(model, ids, torch.ones_like(ids), cache=True) != plain


def test_the_wrapper_is_read_from_transformers_tables_and_gpt2_is_a_decoder():
    gpt2, _ = decoder("tiny-gpt2")
    llama, _ = decoder("tiny-llama")
    assert type(gpt2).__name__ == "GPT2LMHeadModel" and peft_task_type(gpt2) == "CAUSAL_LM"
    assert peft_task_type(llama) == "CAUSAL_LM"
    assert peft_task_type(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ConfigError, match="supports sequence classification and decoder LLMs, not Linear"):
        build_method({"name": "prompt_tuning", "budget": 1}).apply(torch.nn.Linear(2, 2), None)
