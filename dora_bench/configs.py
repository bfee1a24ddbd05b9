"""Where the shipped Hydra configs live: ``conf/`` at the top of a source checkout, which the wheel
ships as the package ``dora_bench.conf`` (``pyproject.toml`` maps one onto the other: one copy)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.lru_cache(maxsize=1)
def conf_dir() -> Path:
    """The folder holding ``config.yaml`` and the groups (task/, backbone/, method/, ...).

    A source checkout's own ``conf/`` (beside this package) wins, so that a second checkout on
    PYTHONPATH never reads the configs of the one installed in editable mode; an installed wheel
    has no such folder and finds ``dora_bench.conf``, a namespace package (yaml only, no
    ``__init__.py``) whose one search location is its folder."""
    found = Path(__file__).resolve().parent.parent / "conf"
    if not (found / "config.yaml").is_file():
        spec = importlib.util.find_spec("dora_bench.conf")
        if spec is not None and spec.submodule_search_locations:
            found = Path(next(iter(spec.submodule_search_locations)))
    if not (found / "config.yaml").is_file():
        raise FileNotFoundError(f"dora-bench's configs are missing at {found}: reinstall dora-bench")
    return found
