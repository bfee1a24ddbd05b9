import json
import os

import pytest

from dora_bench import records


def test_run_dir_names_every_setting(tmp_path):
    path = records.run_dir(
        tmp_path, task="cola", backbone="roberta-base", method="dora", variant="nodem", budget=8, seed=3
    )
    assert path == tmp_path / "runs" / "cola" / "roberta-base" / "dora-nodem" / "b8" / "seed3"
    no_budget = records.run_dir(
        tmp_path, task="rte", backbone="tiny", method="full_ft", variant=None, budget=None, seed=0
    )
    assert no_budget.parts[-2:] == ("b-", "seed0") and no_budget.parts[-3] == "full_ft"


def test_new_record_has_every_schema_key_and_refuses_unknown_ones():
    record = records.new_record(task="rte", seed=1)
    assert set(record) == set(records.RECORD_KEYS)
    assert record["schema_version"] == records.SCHEMA_VERSION and record["status"] == "running"
    with pytest.raises(KeyError):
        records.new_record(tsak="rte")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "record.json"
    records.write_json_atomic(path, {"status": "running", "big": list(range(1000))})
    records.write_json_atomic(path, {"status": "complete"})
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert os.listdir(path.parent) == ["record.json"]
    assert records.is_complete(path)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "record.json"
    records.write_json_atomic(path, {"status": "complete"})
    with pytest.raises(TypeError):
        records.write_json_atomic(path, {"status": object()})
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert os.listdir(tmp_path) == ["record.json"]


def test_unreadable_or_missing_record_is_not_complete(tmp_path):
    assert not records.is_complete(tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert records.read_record(broken) is None and not records.is_complete(broken)


def test_claim_is_exclusive_and_released(tmp_path):
    from dora_bench.errors import RunInProgressError

    with records.claim(tmp_path / "run") as path:
        assert path.is_file()
        with pytest.raises(RunInProgressError, match="being trained by"):
            with records.claim(tmp_path / "run"):
                pass
    assert not path.exists()
    with records.claim(tmp_path / "run"):  # free again
        pass


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / records.CLAIM_NAME).write_text(f"{socket.gethostname()}:{dead.stdout.strip()}")
    with records.claim(folder):
        pass


LINUX_PROC = pytest.mark.skipif(records.process_start(1) is None, reason="needs Linux /proc")


def claimed_by(folder, holder: str):
    folder.mkdir(exist_ok=True)
    (folder / records.CLAIM_NAME).write_text(holder)
    return folder


@LINUX_PROC
def test_a_reused_pid_does_not_keep_holding_a_claim(tmp_path):
    import socket

    from dora_bench.errors import RunInProgressError

    host, pid = socket.gethostname(), os.getpid()
    boot, namespace, ticks = records.process_start(pid).split("/")
    # pid 1 is alive, but it is not the process that wrote this claim (another start time)
    with records.claim(claimed_by(tmp_path / "reused", f"{host}:1:{boot}/{namespace}/{int(ticks) + 1}")):
        pass
    # written before the machine last started: whatever runs under that pid now is someone else
    with records.claim(claimed_by(tmp_path / "rebooted", f"{host}:{pid}:another-boot/{namespace}/{ticks}")):
        pass
    # the live claimant itself, and one from another pid namespace (its pid can't be checked here), hold
    for name, holder in (
        ("live", f"{host}:{pid}:{boot}/{namespace}/{ticks}"),
        ("namespace", f"{host}:1:{boot}/1234/{ticks}"),
        ("old format", f"{host}:1"),
    ):
        with pytest.raises(RunInProgressError, match="being trained by"):
            with records.claim(claimed_by(tmp_path / name, holder)):
                pass


def test_clear_run_dir_keeps_only_the_claim(tmp_path):
    folder = tmp_path / "seed0"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_text("x")
    (folder / "traceback.txt").write_text("old failure")
    with records.claim(folder):
        records.clear_run_dir(folder)
        assert [p.name for p in folder.iterdir()] == [records.CLAIM_NAME]


def test_clear_run_dir_keeps_what_a_resumed_attempt_continues_from(tmp_path):
    folder = tmp_path / "seed0"
    folder.mkdir()
    for name in (records.CHECKPOINT_NAME, "metrics.jsonl", "traceback.txt", "record.json"):
        (folder / name).write_text("x")
    with records.claim(folder):
        records.clear_run_dir(folder, keep=(records.CHECKPOINT_NAME, "metrics.jsonl"))
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [records.CLAIM_NAME, records.CHECKPOINT_NAME, "metrics.jsonl"]
        )


def test_atomic_torch_save_replaces_whole_file_and_leaves_no_temp(tmp_path):
    import torch

    path = tmp_path / records.CHECKPOINT_NAME
    records.save_torch_atomic(path, {"step": 20, "weights": torch.arange(4.0)})
    with pytest.raises(TypeError, match="pickle"):  # fails mid-write: the old checkpoint must survive
        records.save_torch_atomic(path, {"step": 40, "unpicklable": (x for x in ())})
    kept = torch.load(path, weights_only=True)
    assert kept["step"] == 20 and torch.equal(kept["weights"], torch.arange(4.0))
    assert os.listdir(tmp_path) == [records.CHECKPOINT_NAME]


def test_the_commit_is_dirty_only_when_code_or_configs_changed(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for path in ("dora_bench/train.py", "conf/config.yaml", "results/runs/record.json", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    records.git_commit.cache_clear()
    clean = records.git_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "results" / "runs" / "record.json").unlink()  # results moved away (a study's symlink)
    (tmp_path / "README.md").write_text("v2\n")
    records.git_commit.cache_clear()
    assert records.git_commit(tmp_path) == clean
    (tmp_path / "conf" / "config.yaml").write_text("v2\n")
    assert records.git_commit(tmp_path) == clean  # asked once per process: the code already loaded
    records.git_commit.cache_clear()
    assert records.git_commit(tmp_path) == clean + "-dirty"
