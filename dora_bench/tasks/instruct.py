"""Instruction tuning on your own data: any json/jsonl/csv/parquet file with a prompt and a response per row.

    dora-bench task=instruct task.train_file=train.jsonl task.dev_file=dev.jsonl backbone=llama method=dora
    dora-bench task=instruct ... task.prompt_field=instruction task.response_field=output task.exact_match=true

The prompt is shown through ``task.template`` (``{prompt}`` stands for the field); the loss counts the
response tokens only. Dev metrics, teacher-forced on the dev responses: ``loss`` (mean negative
log-likelihood per response token), ``perplexity`` and ``token_accuracy`` (the share of response
tokens the model ranks first); with ``task.exact_match=true`` also ``exact_match``, greedy generations
equal to the reference once surrounding whitespace is stripped and inner runs of it are made one space.
The best epoch is chosen by ``task.main_metric``: ``token_accuracy`` or ``exact_match`` (higher is better).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
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


def load_instruct(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None) -> InstructTask:
    name = require(cfg, "name")
    hint = "a json/jsonl/csv/parquet file with one prompt and one response per row"
    files = {split: Path(require(cfg, f"{split}_file", hint)).expanduser() for split in ("train", "dev")}
    prompt_field, response_field = require(cfg, "prompt_field"), require(cfg, "response_field")
    template = str(require(cfg, "template"))
    if "{prompt}" not in template:
        raise ConfigError(f"task.template={template!r} must contain {{prompt}}, where the prompt goes")
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
        "fields": [prompt_field, response_field],
        "template": template,
    }

    def examples(split: str) -> list[Example]:
        rows = read_table(files[split])
        if not rows:
            raise DataError(f"{files[split]} holds no rows: task.{split}_file needs examples")
        out = []
        for row in rows:
            response = row.text(response_field)
            out.append(Example(template.replace("{prompt}", row.text(prompt_field)), response, response))
        return out

    def encode(split: str) -> dict:
        def build() -> dict:
            rows = examples(split)
            encoded, cut = encode_examples(tokenizer, rows, max_length)
            report_cut(name, split, cut, len(rows))
            if split == "dev":
                encoded["prompts"] = encode_prompts(tokenizer, [e.prompt for e in rows], max_length)["input_ids"]
                encoded["references"] = [e.answer for e in rows]
            return encoded

        identity = cache.file_identity(files[split])
        return cache.cached(cache_dir, f"{name}-{split}", {**settings, "split": split, "data": identity}, build)

    def dataset(state: dict) -> EncodedDataset:
        return EncodedDataset({key: Ragged.from_dict(state[key]) for key in ("input_ids", "labels")})

    train, dev = encode("train"), encode("dev")
    prompts = EncodedDataset({"input_ids": Ragged.from_dict(dev["prompts"])}) if with_em else None
    return InstructTask(
        name,
        dataset(train),
        dataset(dev),
        prompts,
        dev["references"],
        tokenizer,
        main_metric=main_metric,
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
    )


register_family("instruct", load_instruct, model_kind=InstructTask.model_kind)
