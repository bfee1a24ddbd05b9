"""Helpers the tests import (conftest.py files are not importable by name: there are several)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The one place the tests derive paths from.
REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"
SHARED = REPO.parent / "shared"  # the developers' reference files; absent in a user's clone
GLUE_DATA = SHARED / "data" / "glue_data"
ROBERTA_BPE = SHARED / "data" / "tokenizers" / "roberta-base"

# Small enough that a whole run takes a few seconds on one CPU core.
TINY = ["task=demo", "backbone=tiny", "trainer.progress=false", "trainer.eval_batch_size=128", "trainer.cpu_threads=1"]
# The decoder-LLM path at the same scale: generated addition problems on a 2-layer, 64-wide Llama.
TINY_LLM = [
    "task=gsm8k-synthetic",
    "backbone=tiny-llama",
    "trainer.progress=false",
    "trainer.eval_batch_size=64",
    "trainer.cpu_threads=1",
]


def compose(overrides: list[str]):
    """The config the CLI would build for these overrides (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dora_bench.run.launch import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test where that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (developer reference data, not part of a clone)")
    return path


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (its parent package may be absent too)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# The sweep launchers are the `launchers` extra (`make setup` installs it; `pip install -e .[test]`
# does not): their tests skip without it rather than fail.
needs_joblib = pytest.mark.skipif(
    not installed("hydra_plugins.hydra_joblib_launcher"),
    reason="hydra-joblib-launcher is not installed: pip install -e '.[launchers]'",
)
needs_submitit = pytest.mark.skipif(
    not installed("hydra_plugins.hydra_submitit_launcher"),
    reason="hydra-submitit-launcher is not installed: pip install -e '.[launchers]'",
)


# -- several processes on the CPU (gloo), as torchrun would start them ------------------------------

_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def as_launched(rank: int, world: int, port: int) -> Iterator[None]:
    """This process as rank ``rank`` of ``world`` (torchrun's variables, one CPU thread); afterwards the
    process group the run joined is left and the variables are as they were (world 1: a single process)."""
    import torch

    before = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_two(process: Callable[..., None], *args: object) -> None:
    """``process(rank, 2, port, *args)`` in two forked processes (fork: the children inherit the imported
    modules instead of spending seconds importing them again); raises if either fails."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(process, args=(2, port, *args), nprocs=2, start_method="fork")
