"""``dora-bench-rerun``: train a recorded run again from the config its record holds, and say whether
its numbers came back.

    dora-bench-rerun results/minilm/runs/stsb/minilm/dora/b8/seed0/record.json --results-dir /tmp/rerun
    dora-bench-rerun RECORD --results-dir DIR --data-dir ../shared/data/glue_data   # the data moved
    dora-bench-rerun RECORD --results-dir DIR --set trainer.progress=true            # any other key

A record keeps its whole resolved config, so the run needs no command line: the config is the
shipped defaults for its task, backbone and method (keys added since the record was written keep
the defaults that reproduce the old behaviour) with the record's own values over them. The rerun
goes to its own ``--results-dir``, never over the record. Compared: the best and last evaluations,
the parameter counts, a dynamic-rank method's final allocation, and every logged training loss
(``metrics.jsonl``). Exit status 0 when all agree within ``--tolerance`` (default: exactly), 1 when
something differs (each difference is listed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dora_bench import records
from dora_bench.errors import UserError
from dora_bench.run.metrics_log import METRICS_NAME

#: What a rerun is compared on: where each lives in a record.
COMPARED = (("best", ("best", "metrics")), ("last", ("last", "metrics")), ("parameters", ("trainable_params",)))


@dataclass(frozen=True)
class Difference:
    what: str
    recorded: Any
    rerun: Any


def read_complete_record(path: Path) -> dict[str, Any]:
    record = records.read_record(path)
    if record is None:
        raise UserError(f"no readable record at {path}: pass a run's record.json")
    if record.get("status") != "complete":
        raise UserError(f"{path} has status {record.get('status')!r}: only a complete record has numbers to reproduce")
    if not isinstance(record.get("config"), dict):
        raise UserError(f"{path} keeps no config: it was not written by dora-bench's train")
    return record


def composed_defaults(config: dict[str, Any]) -> DictConfig | None:
    """The shipped config for the record's task, backbone and method; None where one of them is no
    shipped config (a user's own ``--config-dir`` file: then the record's config is taken alone)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from dora_bench.configs import conf_dir
    from dora_bench.run.launch import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()  # this process's own composition, whatever came before
    choices = [f"{group}={(config.get(group) or {}).get('name')}" for group in ("task", "backbone", "method")]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=choices)
        except HydraException:
            return None


def rerun_config(record: dict[str, Any], results_dir: Path, data_dir: str | None, sets: list[str]) -> DictConfig:
    """The record's config over today's defaults, sent to ``results_dir`` (with ``data_dir`` and ``sets``)."""
    own = OmegaConf.create(record["config"])
    base = composed_defaults(record["config"])
    if base is None:
        cfg = own
    else:
        OmegaConf.set_struct(base, False)  # a key the defaults no longer have stays the record's
        cfg = OmegaConf.merge(base, own)
    # what the record's run decided by itself (lr from its picks, ...) is in the config already; a rerun
    # must not skip itself as "complete" where the record lies, nor write there
    changes = [f"results_dir={results_dir}", "overwrite=false"]
    if data_dir is not None:
        changes.append(f"task.data_dir={data_dir}")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(changes + list(sets)))
    except Exception as err:  # a malformed --set
        raise UserError(f"can't apply {sets}: {err}; write each as key=value") from None
    return cfg


def loss_lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "loss" in line and "step" in line]


def dig(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        record = (record or {}).get(key)
    return record


def close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return a == b


def differences(
    recorded: dict[str, Any],
    rerun: dict[str, Any],
    recorded_log: list[dict[str, Any]],
    rerun_log: list[dict[str, Any]],
    tolerance: float = 0.0,
) -> list[Difference]:
    """Where the rerun's numbers are not the record's (within ``tolerance``, absolute)."""
    found = [
        Difference(name, dig(recorded, keys), dig(rerun, keys))
        for name, keys in COMPARED
        if not close(dig(recorded, keys), dig(rerun, keys), tolerance)
    ]
    old_ranks, new_ranks = dig(recorded, ("extras", "rank_allocation")), dig(rerun, ("extras", "rank_allocation"))
    if old_ranks is not None and old_ranks != new_ranks:
        moved = sorted(k for k in set(old_ranks) | set(new_ranks or {}) if old_ranks.get(k) != (new_ranks or {}).get(k))
        first = moved[0]
        found.append(
            Difference(
                f"final rank allocation ({len(moved)} of {len(old_ranks)} modules; e.g. {first})",
                old_ranks.get(first),
                (new_ranks or {}).get(first),
            )
        )
    if len(recorded_log) != len(rerun_log):
        found.append(Difference("logged training steps", len(recorded_log), len(rerun_log)))
    for old, new in zip(recorded_log, rerun_log, strict=False):
        if old.get("step") != new.get("step") or not close(old.get("loss"), new.get("loss"), tolerance):
            found.append(Difference(f"training loss at step {old.get('step')}", old.get("loss"), new.get("loss")))
            break  # the first step where they part says enough
    return found


def summary(record: dict[str, Any], rerun: dict[str, Any], found: list[Difference], steps: int) -> list[str]:
    main = record["main_metric"]
    lines = [
        f"  {main} (best): recorded {dig(record, ('best', 'metrics', main))!r}, "
        f"rerun {dig(rerun, ('best', 'metrics', main))!r}",
        f"  training losses compared: {steps} logged steps",
        f"  recorded at commit {record.get('git_commit')}, rerun at {rerun.get('git_commit')}",
    ]
    if not found:
        return ["[dora-bench] rerun reproduces the record", *lines]
    return [
        f"[dora-bench] rerun differs from the record in {len(found)} place(s)",
        *lines,
        *(f"  {d.what}: recorded {d.recorded!r}, rerun {d.rerun!r}" for d in found),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dora-bench-rerun", description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="a complete run's record.json")
    parser.add_argument("--results-dir", type=Path, required=True, help="where the rerun writes (not the record's)")
    parser.add_argument("--data-dir", help="the task's data folder, where it is not the recorded task.data_dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other key (repeatable)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="absolute; default 0: the same numbers")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        record = read_complete_record(args.record)
        cfg = rerun_config(record, args.results_dir, args.data_dir, args.set)
        from dora_bench.methods import method_class
        from dora_bench.run.train import train

        budget = int(cfg.budget) if method_class(cfg.method.name).uses_budget else None
        out_dir = records.run_dir_of(cfg, budget)
        if out_dir.resolve() == args.record.parent.resolve():
            raise UserError(f"--results-dir {args.results_dir} would rerun into the record's own folder: pick another")
        rerun = train(cfg)
    except UserError as err:
        print(f"dora-bench-rerun: error: {err}", file=sys.stderr)
        return err.exit_code
    recorded_log, rerun_log = loss_lines(args.record.parent), loss_lines(out_dir)
    found = differences(record, rerun, recorded_log, rerun_log, args.tolerance)
    print("\n".join(summary(record, rerun, found, min(len(recorded_log), len(rerun_log)))))
    print(f"  rerun's record: {out_dir / records.RECORD_NAME}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
