"""Abstractive summarisation (XSum): a seq2seq model writes a one-sentence summary of a news article.

Training: ``model(input_ids, attention_mask, labels)`` with the summary as ``labels``
(padded with -100; BART shifts them right to make its decoder inputs). Evaluation:
beam search (``num_beams``, at most ``max_new_tokens`` new tokens) on every dev
document, ROUGE-1/2/L F-measure against the reference summary. Documents are truncated
to ``max_length`` tokens and summaries to ``max_target_length``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import Task, evaluating, lockstep_decoding, positive_int, register_family, require, to_device
from dora_bench.tasks.batching import EncodedDataset, Ragged, eval_batches
from dora_bench.tasks.metrics import rouge
from dora_bench.tasks.readers import load_hub_split, read_table

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


class SummarizationTask(Task):
    model_kind = "seq2seq_lm"
    num_labels = 0  # a language-model head: no classes

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev: EncodedDataset,
        references: list[str],
        *,
        pad_token_id: int,
        main_metric: str,
        num_beams: int,
        max_new_tokens: int,
        decode: Callable,
        rouge_stemmer: bool = False,
    ) -> None:
        super().__init__(name, train, pad_token_id)
        self.dev, self.references = dev, references
        self.main_metric, self.num_beams, self.max_new_tokens = main_metric, num_beams, max_new_tokens
        self.decode, self.rouge_stemmer = decode, rouge_stemmer
        self.eval_examples = len(references)

    def data_parts(self) -> list:
        return [self.train_set, self.dev, self.references]

    def generate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> list[str]:
        """The model's summary of every dev document, in dev order."""
        summaries = [""] * len(self.dev)
        with evaluating(model):
            for indices, batch in eval_batches(self.dev, self.collate, batch_size):
                inputs = to_device({k: batch[k] for k in ("input_ids", "attention_mask")}, device)
                with autocast():
                    # keyword arguments only: a peft-wrapped model's generate() takes no positional inputs
                    out = model.generate(
                        **inputs,
                        num_beams=self.num_beams,
                        max_new_tokens=self.max_new_tokens,
                        **lockstep_decoding(),  # several processes: each decodes until all are done (FSDP)
                    )
                for i, text in zip(indices, self.decode(out.cpu())):
                    summaries[i] = text.strip()
        return summaries

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        return rouge(
            self.generate(model, batch_size=batch_size, device=device, autocast=autocast),
            self.references,
            stemmer=self.rouge_stemmer,
        )


def load_summarization(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> SummarizationTask:
    name = require(cfg, "name")
    document_field, summary_field = cfg.get("document_field") or "document", cfg.get("summary_field") or "summary"
    settings = {
        "task": name,
        "fields": [document_field, summary_field],
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": positive_int(cfg, "max_length"),
        "max_target_length": positive_int(cfg, "max_target_length"),
    }
    main_metric = cfg.get("main_metric") or "rougeL"
    if main_metric not in ROUGE_KEYS:
        raise ConfigError(f"task.main_metric={main_metric!r}: choose one of {', '.join(ROUGE_KEYS)}")
    if bool(cfg.get("train_file")) != bool(cfg.get("dev_file")):
        raise ConfigError("give both task.train_file and task.dev_file (local files) or neither (the Hub)")
    train, dev = (encoded_split(cfg, split, tokenizer, settings, cache_dir) for split in ("train", "dev"))
    return SummarizationTask(
        name,
        _dataset(train),
        _dataset(dev),
        dev["references"],
        pad_token_id=tokenizer.pad_token_id,
        main_metric=main_metric,
        num_beams=positive_int(cfg, "num_beams"),
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
        decode=lambda ids: tokenizer.batch_decode(ids, skip_special_tokens=True),
        rouge_stemmer=bool(cfg.get("rouge_stemmer", False)),
    )


def encoded_split(
    cfg: Mapping[str, Any], split: str, tokenizer: PreTrainedTokenizerBase, settings: dict, cache_dir: Path | None
) -> dict:
    """One split tokenised (``_encode``), from the cache when its data and settings were seen before."""
    identity, rows = split_source(cfg, split, settings["fields"])
    build = functools.partial(_encode, rows, split, tokenizer, settings)
    return cache.cached(cache_dir, f"{settings['task']}-{split}", {**settings, "split": split, "data": identity}, build)


def split_source(
    cfg: Mapping[str, Any], split: str, fields: list[str]
) -> tuple[dict, Callable[[], tuple[list[str], list[str]]]]:
    """Where a split's (documents, summaries) come from, ``task.<split>_file`` or the Hub: its
    identity for the cache key and its reader."""
    if cfg.get("train_file"):
        given = cfg[f"{split}_file"]
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"task.{split}_file={given} does not exist: pass a jsonl/json/csv/tsv/parquet file")
        return cache.file_identity(path), functools.partial(_file_rows, path, fields)
    hub_id, revision = require(cfg, "hub_id"), cfg.get("hub_revision")
    hub_split = {"train": "train", "dev": "validation"}[split]
    hint = "task.train_file=<train.jsonl> task.dev_file=<validation.jsonl> (columns document, summary)"
    read = functools.partial(_hub_rows, hub_id, cfg.get("hub_config"), hub_split, revision, hint, fields)
    return {"hub_id": hub_id, "split": hub_split, "revision": revision}, read


def _file_rows(path: Path, fields: list[str]) -> tuple[list[str], list[str]]:
    table = read_table(path)
    document, summary = fields
    return [r.text(document) for r in table], [r.text(summary) for r in table]


def _hub_rows(
    hub_id: str, hub_config: str | None, split: str, revision: str | None, hint: str, fields: list[str]
) -> tuple[list[str], list[str]]:
    ds = load_hub_split(hub_id, hub_config, split, revision=revision, hint=hint)
    document, summary = fields
    return list(ds[document]), list(ds[summary])


def _encode(
    rows: Callable[[], tuple[list[str], list[str]]], split: str, tokenizer: PreTrainedTokenizerBase, settings: dict
) -> dict:
    """Documents and summaries as token ids (truncated); the dev split keeps its reference summaries."""
    documents, summaries = rows()
    if not documents:
        raise DataError(f"task {settings['task']!r}: the {split} split has no documents")
    inputs = tokenizer(documents, truncation=True, max_length=settings["max_length"], return_attention_mask=False)[
        "input_ids"
    ]
    labels = tokenizer(
        summaries, truncation=True, max_length=settings["max_target_length"], return_attention_mask=False
    )["input_ids"]
    out = {"input_ids": Ragged.from_rows(inputs).to_dict(), "labels": Ragged.from_rows(labels).to_dict()}
    if split == "dev":
        out["references"] = summaries
    return out


def _dataset(state: dict) -> EncodedDataset:
    return EncodedDataset(
        {"input_ids": Ragged.from_dict(state["input_ids"]), "labels": Ragged.from_dict(state["labels"])}
    )


register_family("summarization", load_summarization, model_kind=SummarizationTask.model_kind)
