"""GLUE: the Hub's ``nyu-mll/glue`` by default, or the TSV files of the GLUE download script.

``task.data_dir=<dir>`` reads ``<dir>/<glue_dir>/{train,dev}.tsv`` as written by
``download_glue_data.py``. The yaml describes each task's file layout (``tsv_header``
for CoLA's header-less files, ``tsv_rename`` from the files' column names to the Hub's);
text and label values map to the Hub's schema, so both sources give the same ids:
labels spelled out in the files (``entailment``) become their index in ``label_names``,
which lists the Hub's ClassLabel names in id order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError
from dora_bench.tasks import cache
from dora_bench.tasks.base import register_family, require
from dora_bench.tasks.classification import (
    LabelSpec,
    SequenceClassificationTask,
    SplitSource,
    TextSplit,
    build_classification_task,
    rows_to_split,
)
from dora_bench.tasks.readers import load_hub_split, read_tsv

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


#: ``make(name, split, suffix)``: the source of one split, ``split`` being an entry of ``task.dev_sets``
#: (or ``DEFAULT_TRAIN``) that names its Hub split and its TSV file.
MakeSource = Callable[[str, Mapping[str, str], str], SplitSource]

#: The dev split of every GLUE task but MNLI, which lists its two in its yaml.
DEFAULT_DEV_SETS = [{"hub_split": "validation", "tsv_file": "dev.tsv", "suffix": ""}]
DEFAULT_TRAIN = {"hub_split": "train", "tsv_file": "train.tsv"}


def load_glue(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> SequenceClassificationTask:
    labels = LabelSpec.from_cfg(cfg)
    text_fields = list(require(cfg, "text_fields"))
    label_field = cfg.get("label_field") or "label"
    dev_sets = cfg.get("dev_sets") or DEFAULT_DEV_SETS
    if cfg.get("data_dir"):
        make = _tsv_source(cfg, text_fields, label_field, labels)
    else:
        make = _hub_source(cfg, text_fields, label_field, labels)
    train = make("train", DEFAULT_TRAIN, "")
    dev = [make("dev" + d.get("suffix", ""), d, d.get("suffix", "")) for d in dev_sets]
    return build_classification_task(cfg, tokenizer, cache_dir, train=train, dev=dev)


def _tsv_source(cfg: Mapping[str, Any], text_fields: Sequence[str], label_field: str, labels: LabelSpec) -> MakeSource:
    folder = Path(cfg["data_dir"]).expanduser() / require(cfg, "glue_dir")
    if not folder.is_dir():
        raise ConfigError(
            f"task.data_dir: {folder} is not a folder: give the directory that holds {cfg['glue_dir']}/ "
            f"(the GLUE download script's layout)"
        )
    malformed = cfg.get("malformed_rows", "error")
    if malformed not in ("error", "skip"):
        raise ConfigError(f"task.malformed_rows={malformed!r}: use error or skip")

    def make(name: str, split: Mapping[str, str], suffix: str) -> SplitSource:
        path = folder / split["tsv_file"]

        def read() -> TextSplit:
            rows = read_tsv(
                path, columns=cfg.get("tsv_header"), rename=cfg.get("tsv_rename"), skip_malformed=malformed == "skip"
            )
            return rows_to_split(rows, text_fields, label_field, labels)

        if not path.is_file():
            raise ConfigError(f"{path} does not exist: task.data_dir must hold {cfg['glue_dir']}/{split['tsv_file']}")
        identity = {
            **cache.file_identity(path),
            "header": cfg.get("tsv_header"),
            "rename": cfg.get("tsv_rename"),
            "malformed": malformed,
        }
        return SplitSource(name, identity, read, suffix)

    return make


def _hub_source(cfg: Mapping[str, Any], text_fields: Sequence[str], label_field: str, labels: LabelSpec) -> MakeSource:
    hub_id, hub_config, revision = require(cfg, "hub_id"), cfg.get("hub_config"), cfg.get("hub_revision")
    folder = cfg.get("glue_dir", "<TASK>")
    hint = f"task.data_dir=<dir holding {folder}/train.tsv and dev.tsv, the GLUE download script's layout>"

    def make(name: str, split: Mapping[str, str], suffix: str) -> SplitSource:
        def read() -> TextSplit:
            ds = load_hub_split(hub_id, hub_config, split["hub_split"], revision=revision, hint=hint)
            split_name = f"{hub_id}/{hub_config} {split['hub_split']}"
            missing = [f for f in [*text_fields, label_field] if f not in ds.column_names]
            if missing:
                raise ConfigError(
                    f"{split_name} has no column {', '.join(missing)} (it has {', '.join(ds.column_names)}): "
                    f"fix task.text_fields / task.label_field"
                )
            columns = {f: list(ds[f]) for f in [*text_fields, label_field]}
            return TextSplit(
                [columns[f] for f in text_fields],
                [labels.parse(v, f"{split_name} row {i + 1}") for i, v in enumerate(columns[label_field])],
            )

        identity = {"hub_id": hub_id, "config": hub_config, "split": split["hub_split"], "revision": revision}
        return SplitSource(name, identity, read, suffix)

    return make


register_family("glue", load_glue, model_kind=SequenceClassificationTask.model_kind)
