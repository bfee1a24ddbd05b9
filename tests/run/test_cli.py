"""The command line: errors are one line with exit status 2; a run and a sweep work."""

import json
import subprocess
import sys

import pytest

from support import REPO, needs_joblib, needs_submitit


def dora_bench(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "dora_bench.run.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["method=nope"], "unknown method 'nope': choose one of"),
        (["task=glue9"], "unknown task 'glue9'"),
        (["-m", "task=demo", "method=lora,nope"], "unknown method 'nope'"),
        (["trainer.lrr=1"], "trainer.lrr"),
        (["task=demo", "backbone=tiny", "budget=0"], "budget=0 must be a whole number >= 1"),
        (["task=demo", "backbone=tiny", "trainer.lr=-1"], "trainer.lr=-1"),
        (["task=rte", "backbone=tiny", "task.data_dir=/no/such/glue"], "task.data_dir=/no/such/glue does not exist"),
    ],
)
def test_config_errors_are_one_line_exit_2(args, words, tmp_path):
    result = dora_bench(*args, f"results_dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("dora-bench: error: ") and words in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was built or written


@pytest.mark.parametrize("where", ["a file", "under a file", "procfs"])
def test_unusable_results_dir_is_one_line_before_anything_is_built(where, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    # /proc takes no new folders, not even from root (CI runs as root, so permission bits can't show it)
    results_dir = {"a file": taken, "under a file": taken / "results", "procfs": "/proc/dora-bench-results"}[where]
    result = dora_bench("task=demo", "backbone=tiny", f"results_dir={results_dir}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"dora-bench: error: results_dir={results_dir}") and "results_dir=<" in lines[0]
    assert taken.read_text() == "not a folder"


def test_multirun_sweep_writes_one_record_per_run(tmp_path):
    result = dora_bench(
        "-m",
        "task=demo",
        "backbone=tiny",
        "method=bitfit,lora",
        "seed=0,1",
        "trainer.max_steps=4",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("runs/**/record.json"))
    assert found == [
        "runs/demo/tiny/bitfit/b-/seed0/record.json",
        "runs/demo/tiny/bitfit/b-/seed1/record.json",
        "runs/demo/tiny/lora/b2/seed0/record.json",
        "runs/demo/tiny/lora/b2/seed1/record.json",
    ]
    assert all(json.loads((tmp_path / f).read_text())["status"] == "complete" for f in found)
    # Re-running the sweep keeps the records and says so.
    again = dora_bench(
        "-m",
        "task=demo",
        "backbone=tiny",
        "method=bitfit",
        "seed=0",
        "trainer.max_steps=4",
        "trainer.epochs=1",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert again.returncode == 0 and "kept; pass overwrite=true" in again.stdout


def test_one_bad_run_does_not_stop_a_sweep(tmp_path):
    # DoRA refuses a run too short for its three phases; the LoRA run of the same sweep still happens.
    result = dora_bench(
        "-m",
        "task=demo",
        "backbone=tiny",
        "method=dora,lora",
        "trainer.max_steps=3",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 2
    assert "1 run(s) of the sweep stopped on an error" in result.stderr
    failed = json.loads(next(tmp_path.glob("runs/demo/tiny/dora/*/seed0/record.json")).read_text())
    assert failed["status"] == "failed" and "optimizer steps" in failed["error"]
    done = json.loads(next(tmp_path.glob("runs/demo/tiny/lora/*/seed0/record.json")).read_text())
    assert done["status"] == "complete"


@pytest.mark.parametrize(
    "launcher, target",
    [
        pytest.param("joblib", "JoblibLauncher", marks=needs_joblib),
        pytest.param("local_gpus", "JoblibLauncher", marks=needs_joblib),
        pytest.param("slurm", "SlurmLauncher", marks=needs_submitit),
    ],
)
def test_sweep_launcher_configs_print_with_cfg(launcher, target):
    result = dora_bench(
        "-m",
        f"hydra/launcher={launcher}",
        "task=demo",
        "backbone=tiny",
        "method=lora,dora",
        "seed=0,1",
        "--cfg",
        "hydra",
    )
    assert result.returncode == 0, result.stderr
    assert f"{target}" in result.stdout and "sweep's first job" in result.stderr


# -- the command line is read by Hydra's own parser ----------------------------------------------


def hydra_flags():
    """Every (flag spelling, value it takes) of the Hydra installed: its own parser says."""
    from hydra._internal.utils import get_args_parser

    for action in get_args_parser()._actions:
        for flag in action.option_strings:
            if action.nargs == 0:
                yield flag, []
            elif action.choices:
                yield flag, [sorted(action.choices)[0]]
            else:
                yield flag, ["VALUE"]


@pytest.mark.parametrize("flag, value", list(hydra_flags()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_hydra_flag_leaves_the_overrides_to_be_checked(flag, value, tmp_path, monkeypatch, capsys):
    """Whatever flag stands before it (with or without a value), the override after it is the one
    checked: a Hydra upgrade that adds a flag or a value to one can't make us check the wrong words."""
    from dora_bench.run import cli

    value = [str(tmp_path)] if flag in ("--config-dir", "-cd") else value
    monkeypatch.setattr(sys, "argv", ["dora-bench", flag, *value, "method=nope", f"results_dir={tmp_path}"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    if flag == "--version":  # argparse's version action prints Hydra's version and stops, as in Hydra
        assert stopped.value.code == 0 and "Hydra" in capsys.readouterr().out
        return
    assert stopped.value.code == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_a_flag_hydra_does_not_know_is_one_line(monkeypatch, capsys):
    from dora_bench.run import cli

    monkeypatch.setattr(sys, "argv", ["dora-bench", "--no-such-flag", "task=demo"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stopped.value.code == 2 and len(err) == 1
    assert err[0].startswith("dora-bench: error: unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize("launcher", ["local_gpus", "slurm"])
def test_a_launcher_without_its_plugin_names_the_extra(launcher, monkeypatch, capsys):
    from dora_bench.run import cli

    monkeypatch.setattr(cli, "_installed", lambda module: False)
    with pytest.raises(SystemExit) as stopped:
        cli.check_overrides([f"hydra/launcher={launcher}", "task=demo"])
    assert stopped.value.code == 2
    assert "pip install 'dora-bench[launchers]'" in capsys.readouterr().err


def test_help_names_the_project_and_the_commands_used_most():
    result = dora_bench("--help")
    assert result.returncode == 0, result.stderr
    first, *_ = result.stdout.splitlines()
    assert first.startswith("dora-bench: ") and "powered by Hydra" not in result.stdout
    assert "Usage: dora-bench" in result.stdout
    for command in ("dora-bench task=demo", "dora-bench -m experiment=", "dora-bench-tables"):
        assert command in result.stdout
