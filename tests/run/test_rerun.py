"""``dora-bench-rerun``: a record's own config trains the same run again; a number that does not come
back is named; the rerun never writes over the record."""

from __future__ import annotations

import json

from dora_bench import records
from dora_bench.run.rerun import main as rerun
from dora_bench.run.train import train
from support import TINY, compose

SHORT = ["task.train_size=320", "task.dev_size=64", "trainer.epochs=3", "trainer.lr=5e-3", "trainer.log_every=5"]


def edit(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_rerun_from_a_record_s_own_config_reproduces_it_and_names_what_does_not(tmp_path, capsys):
    train(compose([*TINY, *SHORT, "method=dora", f"results_dir={tmp_path / 'first'}"]))
    path = records.run_dir(tmp_path / "first", task="demo", backbone="tiny", method="dora", variant=None, budget=2,
                           seed=0) / records.RECORD_NAME  # fmt: skip
    # as a record from before these keys existed: the defaults that kept the old behaviour fill them in
    edit(path, lambda r: [r["config"]["trainer"].pop("grad_accum"), r["config"]["method"].pop("allocation")])
    capsys.readouterr()
    assert rerun([str(path), "--results-dir", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    out = out[out.index("[dora-bench] rerun") :]
    assert out.startswith("[dora-bench] rerun reproduces the record") and "training losses compared: 12" in out
    again = json.loads(next((tmp_path / "again").rglob(records.RECORD_NAME)).read_text())
    assert again["extras"]["rank_allocation"] == json.loads(path.read_text())["extras"]["rank_allocation"]

    # a record whose numbers are not what its config trains: each place is named
    def tamper(record):
        record["best"]["metrics"]["accuracy"] += 0.01
        record["trainable_params"]["paper"] += 1
        first = sorted(record["extras"]["rank_allocation"])[0]
        record["extras"]["rank_allocation"][first] += 1

    edit(path, tamper)
    log = path.parent / "metrics.jsonl"
    lines = log.read_text().splitlines()
    third = json.loads(lines[2])
    log.write_text("\n".join([*lines[:2], json.dumps({**third, "loss": third["loss"] + 1e-6}), *lines[3:]]) + "\n")
    assert rerun([str(path), "--results-dir", str(tmp_path / "third")]) == 1
    out = capsys.readouterr().out
    out = out[out.index("[dora-bench] rerun") :]
    assert out.startswith("[dora-bench] rerun differs from the record in 4 place(s)")
    assert "  final rank allocation (1 of " in out
    assert "  best: recorded" in out and "  parameters: recorded" in out
    assert f"  training loss at step {third['step']}: recorded" in out
    # within a tolerance the same numbers agree
    assert rerun([str(path), "--results-dir", str(tmp_path / "fourth"), "--tolerance", "0.02",
                  "--set", "trainer.log_every=5"]) == 1  # fmt: skip
    assert "differs from the record in 2 place(s)" in capsys.readouterr().out  # the count and the ranks: exact


def test_a_rerun_refuses_the_record_s_own_folder_and_an_unfinished_record(tmp_path, capsys):
    train(compose([*TINY, *SHORT, "method=lora", "trainer.epochs=1", f"results_dir={tmp_path / 'first'}"]))
    capsys.readouterr()
    (path,) = (tmp_path / "first").rglob(records.RECORD_NAME)
    assert rerun([str(path), "--results-dir", str(tmp_path / "first")]) == 2
    assert "would rerun into the record's own folder" in capsys.readouterr().err
    edit(path, lambda r: r.update(status="running"))
    assert rerun([str(path), "--results-dir", str(tmp_path / "b")]) == 2
    assert "has status 'running': only a complete record" in capsys.readouterr().err
    assert rerun([str(tmp_path / "none.json"), "--results-dir", str(tmp_path / "b")]) == 2
    assert "no readable record" in capsys.readouterr().err
