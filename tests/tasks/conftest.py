"""Fixtures for the task tests: the byte tokenizer, the tiny backbones, task configs from conf/task."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import yaml

from support import CONF_DIR, GLUE_DATA, ROBERTA_BPE  # noqa: F401  (the task tests import them from here)

TASK_CONF = CONF_DIR / "task"
BACKBONE_CONF = CONF_DIR / "backbone"
CPU = torch.device("cpu")


def _task_cfg(name: str, **overrides) -> dict:
    """conf/task/<name>.yaml as the loop passes it (a plain dict), with overrides."""
    return {**yaml.safe_load((TASK_CONF / f"{name}.yaml").read_text()), **overrides}


def _tiny_model(backbone: str, model_kind: str, num_labels: int = 2, seed: int = 0):
    """A random-init tiny backbone (conf/backbone/<backbone>.yaml) with the head of ``model_kind``."""
    from dora_bench.backbones import BackboneConfig, load_model

    torch.manual_seed(seed)
    cfg = BackboneConfig.from_dict(yaml.safe_load((BACKBONE_CONF / f"{backbone}.yaml").read_text()))
    return load_model(cfg, model_kind, num_labels=num_labels)


def _evaluate(task, model, batch_size: int = 8) -> dict[str, float]:
    return task.evaluate(model, batch_size=batch_size, device=CPU, autocast=contextlib.nullcontext)


def _write(path: Path, text: str) -> Path:
    """Write ``text`` byte for byte (no newline added or translated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def task_cfg():
    return _task_cfg


@pytest.fixture
def tiny_model():
    return _tiny_model


@pytest.fixture
def run_eval():
    return _evaluate


@pytest.fixture
def write():
    return _write


@pytest.fixture(scope="session")
def byte_tokenizer():
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer(extra_ids=0)


@pytest.fixture(scope="session")
def roberta_tokenizer():
    if not (ROBERTA_BPE / "vocab.json").is_file():
        pytest.skip(f"no RoBERTa BPE files at {ROBERTA_BPE}")
    from transformers import RobertaTokenizer

    return RobertaTokenizer.from_pretrained(str(ROBERTA_BPE))
