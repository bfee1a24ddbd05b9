"""A run's training log: ``metrics.jsonl`` beside its record, and the same lines to wandb when enabled.

with MetricsLog(out_dir / METRICS_NAME, wandb_run=start_wandb(cfg, record)) as log:
    log.write({"step": 10, "epoch": 1, "loss": 0.69, ...})
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dora_bench.errors import UserError

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL of training metrics (and the same lines to wandb when enabled);
    a context manager, so a crashed run still closes its wandb run.

    ``after_step``: resuming after that many steps; the lines up to it are kept and lines
    of later steps (logged before the crash, about to be redone) dropped."""

    def __init__(self, path: Path | None, wandb_run: Any = None, after_step: int | None = None) -> None:
        if path is None:  # a data-parallel process other than rank 0: rank 0 keeps the log
            path, after_step = Path(os.devnull), None
        path.parent.mkdir(parents=True, exist_ok=True)
        if after_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if _logged_step(line) <= after_step]
            path.write_text("".join(line + "\n" for line in kept))
        self.handle = path.open("w" if after_step is None else "a")
        self.wandb_run = wandb_run

    def write(self, line: dict[str, Any]) -> None:
        self.handle.write(json.dumps(line) + "\n")
        self.handle.flush()
        if self.wandb_run is not None:
            flat = {f"eval/{k}": v for k, v in line.get("eval", {}).items()} or {
                f"train/{k}": v for k, v in line.items() if k not in ("step", "epoch") and v is not None
            }
            self.wandb_run.log(flat, step=line["step"])

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if exc[0] else 0)


def _logged_step(line: str) -> float:
    """The step of a metrics line; a line cut short by a crash counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def start_wandb(cfg: DictConfig, record: dict[str, Any]) -> Any:
    """A wandb run when ``logger=wandb``: offline unless WANDB_MODE says otherwise."""
    if cfg.logger != "wandb":
        return None
    try:
        import wandb
    except ImportError:
        raise UserError("logger=wandb needs the wandb package: pip install 'dora-bench[wandb]'") from None
    os.environ.setdefault("WANDB_MODE", "offline")
    group = cfg.wandb_group or f"{cfg.task.name}-{cfg.method.name}-b{record['budget']}"
    name = f"{cfg.task.name}-{cfg.method.name}-b{record['budget']}-s{cfg.seed}"
    return wandb.init(project=cfg.wandb_project, group=group, name=name, config=record["config"])
