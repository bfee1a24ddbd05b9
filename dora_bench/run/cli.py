"""``dora-bench``: the Hydra command line around ``train(cfg)``.

    dora-bench task=cola method=dora budget=2 seed=0
    dora-bench -m seed=0,1,2,3,4 task=cola,rte method=lora,full_ft
    dora-bench task=demo backbone=tiny method=lora        # offline, CPU, seconds

Before Hydra starts, the command line is read with Hydra's own parser and the overrides are
composed once more in a checked way, so that a mistake (an unknown task, a misspelt key, a
launcher whose plugin is not installed) costs one line and exit status 2, not a traceback,
and costs it before any model is built.

Your own configs: a folder laid out like ``conf/`` (``my_conf/task/mytask.yaml``,
``my_conf/method/...``) joins the shipped ones with ``--config-dir my_conf`` (or
``hydra.searchpath=[file:///abs/my_conf]``); its files are then chosen by name, ``task=mytask``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from dora_bench.configs import conf_dir
from dora_bench.errors import first_line

if TYPE_CHECKING:
    from omegaconf import DictConfig

GROUPS = ("task", "backbone", "method", "debug", "experiment")
#: Launchers that need a plugin from the ``launchers`` extra: hydra/launcher choice -> the plugin's module.
LAUNCHER_PLUGINS = {
    "local_gpus": "hydra_plugins.hydra_joblib_launcher",
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}


def main() -> None:
    # Library deprecation chatter (transformers v5 renames) says nothing about the run.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        conf_dir()
    except FileNotFoundError as err:
        _fail(str(err))
    from dora_bench.run.launch import register_resolvers

    register_resolvers()
    # `experiment` sits in the defaults list (so debug=smoke can shrink it), which makes
    # Hydra refuse the `+experiment=` spelling that experiment configs are usually run with.
    sys.argv = [arg[1:] if arg.startswith("+experiment=") else arg for arg in sys.argv]
    args = hydra_args(sys.argv[1:])
    overrides = args.overrides
    first_job = check_overrides(overrides, _user_config_dirs(args.config_dir, overrides))
    if args.cfg and args.multirun:
        # Hydra refuses --cfg with -m; show the sweep's first job instead (its launcher and
        # sweep settings are the whole sweep's).
        print("dora-bench: --cfg with -m: the config of the sweep's first job", file=sys.stderr)
        sys.argv = [a for a in sys.argv if a not in ("-m", "--multirun") and a not in overrides] + first_job
    _hydra_main()
    if _FAILED_JOBS:
        _fail(
            f"{len(_FAILED_JOBS)} run(s) of the sweep stopped on an error: {', '.join(_FAILED_JOBS)}; "
            f"their records say why (status failed)"
        )


def check_overrides(overrides: list[str], user_dirs: tuple[Path, ...] = ()) -> list[str]:
    """Compose the config as Hydra will (first value of each sweep) and exit 2 on any error;
    returns the overrides of the sweep's first job. ``user_dirs``: the user's config folders."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dora_bench.errors import ConfigError
    from dora_bench.run.checks import check_results_dir

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        _fail(f"can't parse the overrides ({first_line(err)}): write them as key=value")
    singles = []
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        if key in GROUPS:
            for value in values:
                _check_group_choice(key, value, user_dirs)
        if key == "hydra/launcher":
            _check_launcher_plugin(values[0])
        if override.is_sweep_override():
            singles.append(f"{override.get_key_element()}={values[0]}")
        else:
            singles.append(override.input_line)
    if user_dirs and not any(s.startswith("hydra.searchpath=") for s in singles):
        singles.append(f"hydra.searchpath=[{','.join(f'file://{d}' for d in user_dirs)}]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=singles, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        _fail(f"{first_line(err)}: check the key (dora-bench --cfg job lists them) or add it with +key=value")
    finally:
        GlobalHydra.instance().clear()
    try:  # Hydra makes its run folder under results_dir first thing, with a traceback if it can't
        check_results_dir(cfg.results_dir)
    except ConfigError as err:
        _fail(str(err))
    return singles


def _check_group_choice(group: str, value: str, user_dirs: tuple[Path, ...] = ()) -> None:
    if value in ("null", "None") and group in ("debug", "experiment"):
        return
    folders = [conf_dir() / group, *(d / group for d in user_dirs)]
    if not any((folder / f"{value}.yaml").is_file() for folder in folders):
        known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
        where = " or ".join(f"{f}/" for f in folders)
        _fail(
            f"unknown {group} {value!r}: choose one of {', '.join(known)} (files in {where}), "
            f"or add your own folder with --config-dir"
        )


def _check_launcher_plugin(value: str) -> None:
    plugin = LAUNCHER_PLUGINS.get(value)
    if plugin is not None and not _installed(plugin):
        name = plugin.rpartition(".")[2].replace("_", "-")
        _fail(f"hydra/launcher={value} needs Hydra's {name} plugin: pip install 'dora-bench[launchers]'")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _user_config_dirs(config_dir: str | None, overrides: list[str]) -> tuple[Path, ...]:
    """Folders of the user's own configs: ``--config-dir``/``-cd`` and ``hydra.searchpath`` entries."""
    dirs = [Path(config_dir)] if config_dir else []
    for override in overrides:
        if override.startswith("hydra.searchpath="):
            entries = override.split("=", 1)[1].strip("[]").split(",")
            dirs += [Path(e.strip().strip("'\"").removeprefix("file://")) for e in entries if e.strip()]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        _fail(f"config folder {missing[0]} does not exist: pass an existing folder to --config-dir")
    return tuple(d.resolve() for d in dirs)


def hydra_args(argv: list[str]) -> argparse.Namespace:
    """The command line as Hydra will read it, by Hydra's own parser (its flags, their values,
    ``overrides``); a command line it refuses is one line and exit status 2 here."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.error = lambda message: _fail(f"{message}: dora-bench --help lists the flags")  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _fail(message: str) -> None:
    print(f"dora-bench: error: {message}", file=sys.stderr)
    sys.exit(2)


_FAILED_JOBS: list[str] = []  # runs of this process's sweep that stopped on a user error


def _run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dora_bench.errors import RunSkipped, UserError
    from dora_bench.run.train import train

    try:
        train(cfg)
    except RunSkipped as err:  # a re-run sweep skips finished runs, a parallel one runs each once
        print(f"dora-bench: {err}")
    except UserError as err:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            _fail(str(err))
        # In a sweep one bad run (a missing file, a run too short for DoRA's phases) must not
        # stop the others: say so, keep going, and exit non-zero at the end.
        print(f"dora-bench: error: job {HydraConfig.get().job.num}: {err}", file=sys.stderr)
        _FAILED_JOBS.append(f"#{HydraConfig.get().job.num} ({HydraConfig.get().job.override_dirname})")


def _hydra_main() -> None:
    import hydra

    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(_run)()


if __name__ == "__main__":
    main()
