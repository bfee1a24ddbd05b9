"""`pip install` from a built wheel works anywhere: the configs ship inside the package and the
command line runs from a folder with no source tree in sight."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile

from support import REPO


def test_wheel_ships_the_configs_and_runs_from_a_fresh_venv(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("dora_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "dora_bench/conf/config.yaml",
        "dora_bench/conf/task/rte.yaml",
        "dora_bench/conf/method/dora.yaml",
        "dora_bench/report/paper/table2_glue.csv",
        "dora_bench/backbone_configs/tiny-roberta.json",
    } <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # PYTHONPATH cleared: with a source tree on it, pip would find its dora_bench.egg-info (left by the
    # wheel build) and take the package as installed already
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    # The fresh venv takes its dependencies (torch, transformers, ...) from this one's site-packages,
    # added after its own: a path added by a .pth file runs no .pth files of its own, so this
    # checkout's editable install stays out of sight.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (venv / site.removeprefix(str(venv) + "/")).joinpath("deps.pth").write_text(sysconfig.get_paths()["purelib"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    where = subprocess.run(
        [str(python), "-c", "import dora_bench; print(dora_bench.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the source tree

    shown = subprocess.run(
        [str(venv / "bin" / "dora-bench"), "--cfg", "job", "task=cola"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: cola" in shown.stdout and "lr_picks: null" in shown.stdout

    ran = subprocess.run(
        [
            str(venv / "bin" / "dora-bench"),
            "debug=tiny",
            "method=lora",
            "trainer.max_steps=4",
            "trainer.progress=false",
            "results_dir=out",
            f"cache_dir={tmp_path / 'cache'}",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (elsewhere / "out" / "runs" / "demo" / "tiny" / "lora" / "b2" / "seed0" / "record.json").is_file()


def test_a_folder_of_the_users_own_configs_joins_the_shipped_ones(tmp_path):
    """`--config-dir my_conf` adds my_conf/task/*.yaml (and any group) to the choices."""
    mine = tmp_path / "my_conf" / "task"
    mine.mkdir(parents=True)
    demo = (REPO / "conf" / "task" / "demo.yaml").read_text()
    (mine / "mydemo.yaml").write_text(demo.replace("name: demo", "name: mydemo"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "dora_bench.run.cli"]
    shown = subprocess.run(
        [*base, "--config-dir", str(tmp_path / "my_conf"), "--cfg", "job", "task=mydemo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "name: mydemo" in shown.stdout
    refused = subprocess.run(
        [*base, "--cfg", "job", "task=mydemo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and "unknown task 'mydemo'" in refused.stderr and "--config-dir" in refused.stderr
