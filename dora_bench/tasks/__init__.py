"""Tasks: read the data, tokenise it once (cached), serve batches, score the dev split(s).

    task = load_task(cfg.task, tokenizer, cache_dir=Path("results/cache"))
    for batch in task.train_loader(16, seed=0):
        loss = model(**batch).loss
    metrics = task.evaluate(model, batch_size=64, device=device, autocast=autocast)

``task.family`` in conf/task/<name>.yaml picks the loader, registered by its module
(``register_family``): ``glue`` (Hub or the GLUE download script's TSVs), ``files``
(``classification_files.py``: a researcher's own csv/tsv/json/jsonl/parquet),
``demo`` (generated, no files), ``squad`` (span QA), ``summarization`` (XSum); for decoder
LLMs ``commonsense`` (eight multiple-choice sets), ``gsm8k`` (maths word problems) and
``instruct`` (your own prompt/response files).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError

# Each family module registers itself (``base.register_family``) when imported; adding a family is
# one line here. Their heavy dependencies (datasets, rouge-score...) load only when a task is read.
from dora_bench.tasks import (
    classification_files,  # noqa: F401  (registers "files")
    commonsense,  # noqa: F401  (registers "commonsense")
    demo,  # noqa: F401  (registers "demo")
    glue,  # noqa: F401  (registers "glue")
    gsm8k,  # noqa: F401  (registers "gsm8k")
    instruct,  # noqa: F401  (registers "instruct")
    squad,  # noqa: F401  (registers "squad")
    summarization,  # noqa: F401  (registers "summarization")
)
from dora_bench.tasks.base import Task, TaskFamily, family_names, register_family, task_family

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def task_model_kind(task_cfg: Mapping[str, Any]) -> str:
    """The head the task's family needs (one of ``backbones.MODEL_KINDS``), before any data is read."""
    return task_family(task_cfg.get("family")).model_kind


def load_task(
    task_cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, *, cache_dir: Path | None = None
) -> Task:
    """The task described by ``task_cfg`` (the resolved ``cfg.task`` as a plain dict),
    tokenised with ``tokenizer``; encodings are cached under ``cache_dir`` (None: no cache)."""
    if not isinstance(task_cfg, Mapping):
        raise ConfigError(f"task config must be a mapping, got {type(task_cfg).__name__}")
    family = task_family(task_cfg.get("family"))
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no pad token: batches can't be padded")
    return family.load(task_cfg, tokenizer, Path(cache_dir) if cache_dir is not None else None)


def task_names() -> list[str]:
    """The tasks shipped as conf/task/<name>.yaml."""
    from dora_bench.configs import conf_dir

    return sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


__all__ = [
    "Task",
    "TaskFamily",
    "family_names",
    "load_task",
    "register_family",
    "task_family",
    "task_model_kind",
    "task_names",
]
