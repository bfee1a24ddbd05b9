"""Sequence classification and regression: GLUE, the demo, and tasks read from a researcher's files.

The families differ only in where the texts come from (``SplitSource``); tokenising,
batching and scoring are shared here. One or two text fields per example (a pair is
joined by the tokenizer's own template, e.g. ``<s> A </s></s> B </s>`` for RoBERTa),
truncated to ``max_length`` tokens. ``num_labels == 1`` is regression (STS-B): float
labels, the model's single logit is the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import Task, evaluating, positive_int, require, to_device
from dora_bench.tasks.batching import EncodedDataset, Ragged, eval_batches
from dora_bench.tasks.metrics import CLASSIFICATION_METRICS
from dora_bench.tasks.readers import Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class TextSplit:
    """One split before tokenisation: one list of strings per text field, and the labels."""

    texts: list[list[str]]
    labels: list[int] | list[float]


@dataclass
class SplitSource:
    """How to read a split, and what identifies its content for the cache."""

    name: str  # "train", "dev", "dev_mm": part of the cache file name
    identity: dict[str, Any]  # file stats or Hub id/config/split
    read: Callable[[], TextSplit]
    suffix: str = ""  # appended to this dev set's metric names (MNLI mismatched: "_mm")


@dataclass(frozen=True)
class LabelSpec:
    """How raw labels become ids: class names in id order, and/or integer ids; floats for regression."""

    num_labels: int
    names: tuple[str, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> LabelSpec:
        num_labels = positive_int(cfg, "num_labels")
        names = tuple(str(n) for n in cfg.get("label_names") or ())
        if names and len(names) != num_labels:
            raise ConfigError(
                f"task.label_names has {len(names)} names but task.num_labels={num_labels}: make them agree"
            )
        if names and num_labels == 1:
            raise ConfigError("task.label_names must be null for regression (num_labels=1)")
        return cls(num_labels, names)

    def parse(self, raw: Any, where: str) -> int | float:
        if self.num_labels == 1:
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {raw!r} is not a number (regression task)") from None
        if isinstance(raw, str) and raw.strip() in self.names:
            return self.names.index(raw.strip())
        try:
            as_int = int(raw.strip()) if isinstance(raw, str) else raw
        except ValueError:
            as_int = None
        if isinstance(as_int, int) and 0 <= as_int < self.num_labels and not isinstance(raw, float):
            return int(as_int)
        allowed = ", ".join([*self.names, *map(str, range(self.num_labels))])
        raise DataError(f"{where}: label {raw!r} is not one of {allowed}: fix the row or task.label_names/num_labels")


def rows_to_split(rows: Sequence[Row], text_fields: Sequence[str], label_field: str, labels: LabelSpec) -> TextSplit:
    texts = [[row.text(f) for row in rows] for f in text_fields]
    return TextSplit(texts, [labels.parse(row.get(label_field), row.where) for row in rows])


class SequenceClassificationTask(Task):
    model_kind = "sequence_classification"

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev_sets: list[tuple[str, EncodedDataset]],
        *,
        num_labels: int,
        metrics: Sequence[str],
        main_metric: str,
        pad_token_id: int,
    ) -> None:
        super().__init__(name, train, pad_token_id)
        self.dev_sets = dev_sets
        self.num_labels = num_labels
        self.metrics = tuple(metrics)
        self.main_metric = main_metric
        self.eval_examples = sum(len(d) for _, d in dev_sets)

    def data_parts(self) -> list:
        return [self.train_set, *(part for suffix, dataset in self.dev_sets for part in (suffix, dataset))]

    def predict(
        self,
        model: nn.Module,
        dataset: EncodedDataset,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> torch.Tensor:
        """Class ids (or regression values) for every row of ``dataset``, in row order."""
        out = torch.empty(len(dataset), dtype=torch.float32 if self.num_labels == 1 else torch.long)
        with evaluating(model):
            for indices, batch in eval_batches(dataset, self.collate, batch_size):
                batch.pop("labels")
                with autocast():
                    logits = model(**to_device(batch, device)).logits.float()
                out[indices] = (logits.squeeze(-1) if self.num_labels == 1 else logits.argmax(-1)).cpu()
        return out

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        scores = {}
        for suffix, dataset in self.dev_sets:
            predictions = self.predict(model, dataset, batch_size=batch_size, device=device, autocast=autocast)
            labels = dataset.columns["labels"]
            for metric in self.metrics:
                scores[metric + suffix] = CLASSIFICATION_METRICS[metric](predictions.tolist(), labels.tolist())
        return scores


def build_classification_task(
    cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: Path | None,
    *,
    train: SplitSource,
    dev: Sequence[SplitSource],
) -> SequenceClassificationTask:
    """Tokenise (or read from the cache) every split and wrap them in a task."""
    name = require(cfg, "name")
    labels = LabelSpec.from_cfg(cfg)
    metrics = list(require(cfg, "metrics"))
    unknown = [m for m in metrics if m not in CLASSIFICATION_METRICS]
    if unknown:
        raise ConfigError(
            f"task.metrics: unknown {', '.join(unknown)}: choose from {', '.join(CLASSIFICATION_METRICS)}"
        )
    main_metric = require(cfg, "main_metric")
    produced = [m + source.suffix for source in dev for m in metrics]
    if main_metric not in produced:
        raise ConfigError(f"task.main_metric={main_metric!r} is not computed: choose one of {', '.join(produced)}")
    text_fields = list(require(cfg, "text_fields"))
    if not 1 <= len(text_fields) <= 2:
        raise ConfigError(f"task.text_fields={text_fields}: give one field or a pair")
    settings = {
        "task": name,
        "fields": text_fields,
        "labels": [labels.num_labels, *labels.names],
        "max_length": positive_int(cfg, "max_length"),
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "segments": uses_segments(tokenizer),
    }

    def load(source: SplitSource) -> EncodedDataset:
        def build() -> dict:
            split = source.read()
            return encode_split(tokenizer, split, settings["max_length"], regression=labels.num_labels == 1)

        state = cache.cached(cache_dir, f"{name}-{source.name}", {**settings, "data": source.identity}, build)
        columns = {key: Ragged.from_dict(state[key]) for key in ("input_ids", "token_type_ids") if key in state}
        return EncodedDataset({**columns, "labels": state["labels"]})

    return SequenceClassificationTask(
        name,
        load(train),
        [(s.suffix, load(s)) for s in dev],
        num_labels=labels.num_labels,
        metrics=metrics,
        main_metric=main_metric,
        pad_token_id=tokenizer.pad_token_id,
    )


def uses_segments(tokenizer: PreTrainedTokenizerBase) -> bool:
    """BERT-family models read which sentence of a pair a token belongs to (``token_type_ids``);
    RoBERTa and BART don't, and their tokenizers don't return them."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def encode_split(
    tokenizer: PreTrainedTokenizerBase, split: TextSplit, max_length: int, *, regression: bool, chunk: int = 4096
) -> dict:
    """Token ids (truncated, special tokens added, unpadded), segment ids where the model
    reads them, and a label tensor."""
    if not split.labels:
        raise DataError("a split has no examples: check the data files")
    segments = uses_segments(tokenizer)
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for start in range(0, len(split.labels), chunk):
        columns = [col[start : start + chunk] for col in split.texts]
        enc = tokenizer(
            *columns,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=segments,
        )
        ids.extend(enc["input_ids"])
        if segments:
            types.extend(enc["token_type_ids"])
    out = {
        "input_ids": Ragged.from_rows(ids).to_dict(),
        "labels": torch.tensor(split.labels, dtype=torch.float32 if regression else torch.long),
    }
    if segments:
        out["token_type_ids"] = Ragged.from_rows(types).to_dict()
    return out
