"""Shared fixtures: the real Hydra config, composed and shrunk to run on a CPU in seconds."""

from __future__ import annotations

import os

import pytest
import torch

from support import TINY, compose

# Tiny models on a shared 2-core machine: a second thread only adds spin-wait overhead.
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_cfg(tmp_path):
    """A factory: the tiny CPU config with extra overrides, writing under tmp_path."""

    def make(*overrides: str):
        return compose([*TINY, f"results_dir={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}", *overrides])

    return make
