"""Where the shipped Hydra configs live: ``conf/`` at the top of a source checkout, which the wheel
ships as the package ``dora_bench.conf`` (``pyproject.toml`` maps one onto the other: one copy)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def conf_dir() -> Path:
    """The folder holding ``config.yaml`` and the groups (task/, backbone/, method/, ...)."""
    import importlib.util

    # dora_bench.conf holds only yaml (no __init__.py): a namespace package, whose folder is its one
    # search location; a source tree on PYTHONPATH that is not installed has none: conf/ beside it
    spec = importlib.util.find_spec("dora_bench.conf")
    if spec is not None and spec.submodule_search_locations:
        found = Path(next(iter(spec.submodule_search_locations)))
    else:
        found = Path(__file__).resolve().parent.parent / "conf"
    if not (found / "config.yaml").is_file():
        raise FileNotFoundError(f"dora-bench's configs are missing at {found}: reinstall dora-bench")
    return found
