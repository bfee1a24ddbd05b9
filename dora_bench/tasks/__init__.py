"""Tasks: read the data, tokenise it once (cached), serve batches, score the dev split(s).

    task = load_task(cfg.task, tokenizer, cache_dir=Path("results/cache"))
    for batch in task.train_loader(16, seed=0):
        loss = model(**batch).loss
    metrics = task.evaluate(model, batch_size=64, device=device, autocast=autocast)

``task.family`` in conf/task/<name>.yaml picks the loader: ``glue`` (Hub or the GLUE
download script's TSVs), ``files`` (a researcher's own csv/tsv/json/jsonl/parquet),
``demo`` (generated, no files), ``squad`` (span QA), ``summarization`` (XSum); for decoder
LLMs ``commonsense`` (eight multiple-choice sets), ``gsm8k`` (maths word problems) and
``instruct`` (your own prompt/response files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError
from dora_bench.tasks.base import Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _loaders() -> dict[str, Callable[..., Task]]:
    # imported here: a family's modules (datasets, rouge-score...) load only when used
    from dora_bench.tasks.commonsense import load_commonsense
    from dora_bench.tasks.demo import load_demo
    from dora_bench.tasks.files import load_files
    from dora_bench.tasks.glue import load_glue
    from dora_bench.tasks.gsm8k import load_gsm8k
    from dora_bench.tasks.instruct import load_instruct
    from dora_bench.tasks.squad import load_squad
    from dora_bench.tasks.summarization import load_summarization

    return {
        "glue": load_glue,
        "files": load_files,
        "demo": load_demo,
        "squad": load_squad,
        "summarization": load_summarization,
        "commonsense": load_commonsense,
        "gsm8k": load_gsm8k,
        "instruct": load_instruct,
    }


#: The head each family needs: the backbone is built (and a dry run counts it) before any data is read.
MODEL_KINDS = {
    "glue": "sequence_classification",
    "files": "sequence_classification",
    "demo": "sequence_classification",
    "squad": "question_answering",
    "summarization": "seq2seq_lm",
    "commonsense": "causal_lm",
    "gsm8k": "causal_lm",
    "instruct": "causal_lm",
}


def task_model_kind(task_cfg: Mapping[str, Any]) -> str:
    """``sequence_classification`` | ``question_answering`` | ``seq2seq_lm`` | ``causal_lm`` for a task config."""
    family = task_cfg.get("family")
    if family not in MODEL_KINDS:
        raise ConfigError(f"task.family={family!r} is not known: use one of {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[family]


def load_task(
    task_cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, *, cache_dir: Path | None = None
) -> Task:
    """The task described by ``task_cfg`` (the resolved ``cfg.task`` as a plain dict),
    tokenised with ``tokenizer``; encodings are cached under ``cache_dir`` (None: no cache)."""
    if not isinstance(task_cfg, Mapping):
        raise ConfigError(f"task config must be a mapping, got {type(task_cfg).__name__}")
    loaders = _loaders()
    family = task_cfg.get("family")
    if family not in loaders:
        raise ConfigError(f"task.family={family!r} is not known: use one of {', '.join(loaders)}")
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no pad token: batches can't be padded")
    return loaders[family](task_cfg, tokenizer, Path(cache_dir) if cache_dir is not None else None)


def task_names() -> list[str]:
    """The tasks shipped as conf/task/<name>.yaml."""
    from dora_bench.configs import conf_dir

    return sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


__all__ = ["Task", "load_task", "task_names"]
