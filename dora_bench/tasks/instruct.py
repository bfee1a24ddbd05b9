"""Instruction tuning on your own data: any json/jsonl/csv/parquet file with a prompt and a response per row.

    dora-bench task=instruct task.train_file=train.jsonl task.dev_file=dev.jsonl backbone=llama method=dora
    dora-bench task=instruct ... task.prompt_field=instruction task.response_field=output task.exact_match=true

The prompt is shown through ``task.template`` (``{prompt}`` stands for the field); the loss counts the
response tokens only. Dev metrics, teacher-forced on the dev responses: ``loss`` (mean negative
log-likelihood per response token), ``perplexity`` and ``token_accuracy`` (the share of response
tokens the model ranks first); with ``task.exact_match=true`` also ``exact_match``, greedy generations
equal to the reference once surrounding whitespace is stripped and inner runs of it are made one space.
The best epoch is chosen by ``task.main_metric``: ``token_accuracy`` or ``exact_match`` (higher is better).
With ``task.chat_template=true`` the templated prompt is a user turn in the tokenizer's chat template,
followed by the assistant's header (instruct checkpoints, e.g. Llama-3.2-1B-Instruct); the response is
the assistant's reply, ended by the tokenizer's end token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import positive_int, register_family, require
from dora_bench.tasks.batching import EncodedDataset, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, report_cut
from dora_bench.tasks.readers import read_table

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase

MAIN_METRICS = ("token_accuracy", "exact_match")


def normalise(text: str) -> str:
    return " ".join(text.split())


def exact_match(generations: list[str], references: list[str]) -> float:
    if len(generations) != len(references) or not references:
        raise ValueError(f"{len(generations)} generations for {len(references)} references")
    return sum(normalise(g) == normalise(r) for g, r in zip(generations, references)) / len(references)


class InstructTask(CausalLMTask):
    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev: EncodedDataset,
        prompts: EncodedDataset | None,
        references: list[str],
        tokenizer: PreTrainedTokenizerBase,
        *,
        main_metric: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, train, tokenizer, **kwargs)
        self.dev, self.prompts, self.references = dev, prompts, references
        self.main_metric = main_metric
        self.eval_examples = len(dev)

    def data_parts(self) -> list:
        return [self.train_set, self.dev, self.references] + ([self.prompts] if self.prompts is not None else [])

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        metrics = self.response_loss(model, self.dev, batch_size=batch_size, device=device, autocast=autocast)
        if self.prompts is not None:
            texts = self.generate(
                model, self.prompts, batch_size=batch_size, device=device, autocast=autocast, desc="dev"
            )
            metrics["exact_match"] = exact_match(texts, self.references)
        return metrics


def shown_prompt(tokenizer: PreTrainedTokenizerBase, template: str, text: str, chat: bool) -> str:
    """The prompt as the model sees it: the template around the field, and with ``chat`` inside the
    tokenizer's chat template as a user turn followed by the assistant's header (an instruct checkpoint's
    format). The begin-of-text token the chat template writes is dropped: it is added as for any prompt."""
    shown = template.replace("{prompt}", text)
    if not chat:
        return shown
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": shown}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    return rendered[len(bos) :] if bos and rendered.startswith(bos) else rendered


def read_examples(path: Path, split: str, fields: tuple[str, str], show: Callable[[str], str]) -> list[Example]:
    rows = read_table(path)
    if not rows:
        raise DataError(f"{path} holds no rows: task.{split}_file needs examples")
    prompt_field, response_field = fields
    return [Example(show(row.text(prompt_field)), row.text(response_field), row.text(response_field)) for row in rows]


def build_split(
    tokenizer: PreTrainedTokenizerBase, examples: Callable[[], list[Example]], name: str, split: str, max_length: int
) -> dict:
    rows = examples()
    encoded, cut = encode_examples(tokenizer, rows, max_length)
    report_cut(name, split, cut, len(rows))
    if split == "dev":
        encoded["prompts"] = encode_prompts(tokenizer, [e.prompt for e in rows], max_length)["input_ids"]
        encoded["references"] = [e.answer for e in rows]
    return encoded


def training_pairs(state: dict) -> EncodedDataset:
    return EncodedDataset({key: Ragged.from_dict(state[key]) for key in ("input_ids", "labels")})


def load_instruct(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None) -> InstructTask:
    name = require(cfg, "name")
    hint = "a json/jsonl/csv/parquet file with one prompt and one response per row"
    files = {split: Path(require(cfg, f"{split}_file", hint)).expanduser() for split in ("train", "dev")}
    fields = (require(cfg, "prompt_field"), require(cfg, "response_field"))
    template = str(require(cfg, "template"))
    if "{prompt}" not in template:
        raise ConfigError(f"task.template={template!r} must contain {{prompt}}, where the prompt goes")
    chat = bool(cfg.get("chat_template", False))
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"task.chat_template=true but tokenizer {type(tokenizer).__name__} has no chat template: "
            f"use an instruct checkpoint's tokenizer or set task.chat_template=false"
        )
    with_em = bool(cfg.get("exact_match", False))
    main_metric = require(cfg, "main_metric")
    if main_metric not in MAIN_METRICS or (main_metric == "exact_match" and not with_em):
        raise ConfigError(
            f"task.main_metric={main_metric!r}: use token_accuracy, or exact_match with task.exact_match=true"
        )
    max_length = positive_int(cfg, "max_length")
    settings = {
        "task": name,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": max_length,
        "fields": list(fields),
        "template": template,
        "chat_template": tokenizer.chat_template if chat else None,
    }
    show = partial(shown_prompt, tokenizer, template, chat=chat)
    state = {}
    for split in ("train", "dev"):
        examples = partial(read_examples, files[split], split, fields, show)
        key = {**settings, "split": split, "data": cache.file_identity(files[split])}
        build = partial(build_split, tokenizer, examples, name, split, max_length)
        state[split] = cache.cached(cache_dir, f"{name}-{split}", key, build)
    dev = state["dev"]
    prompts = EncodedDataset({"input_ids": Ragged.from_dict(dev["prompts"])}) if with_em else None
    chunk = cfg.get("loss_chunk_rows")
    return InstructTask(
        name,
        training_pairs(state["train"]),
        training_pairs(dev),
        prompts,
        dev["references"],
        tokenizer,
        main_metric=main_metric,
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
        loss_chunk_rows=None if chunk is None else positive_int(cfg, "loss_chunk_rows"),
    )


register_family("instruct", load_instruct, model_kind=InstructTask.model_kind)
