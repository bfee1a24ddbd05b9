"""A researcher's own classification or regression task, from a train file and a dev file.

``family: files`` (see conf/task/custom.yaml): csv / tsv / json / jsonl / parquet by
extension, one or two text columns, one label column. Labels are integer ids
``0..num_labels-1``, or the strings of ``label_names`` (in id order), or numbers when
``num_labels: 1`` (regression).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError
from dora_bench.tasks import cache
from dora_bench.tasks.base import register_family, require
from dora_bench.tasks.classification import (
    LabelSpec,
    SequenceClassificationTask,
    SplitSource,
    build_classification_task,
    rows_to_split,
)
from dora_bench.tasks.readers import FILE_FORMATS, read_table

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def load_files(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> SequenceClassificationTask:
    labels = LabelSpec.from_cfg(cfg)
    text_fields = list(require(cfg, "text_fields"))
    label_field = require(cfg, "label_field")

    def source(key: str, name: str) -> SplitSource:
        given = require(cfg, key, f"pass task.{key}=<path to a csv/tsv/json/jsonl/parquet file>")
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"task.{key}={given} does not exist: pass the path of a csv/tsv/json/jsonl/parquet file")
        if path.suffix.lower().lstrip(".") not in FILE_FORMATS:
            raise ConfigError(f"{path}: unknown file type {path.suffix!r}: use one of .{', .'.join(FILE_FORMATS)}")
        return SplitSource(
            name, cache.file_identity(path), lambda: rows_to_split(read_table(path), text_fields, label_field, labels)
        )

    return build_classification_task(
        cfg, tokenizer, cache_dir, train=source("train_file", "train"), dev=[source("dev_file", "dev")]
    )


register_family("files", load_files, model_kind=SequenceClassificationTask.model_kind)
