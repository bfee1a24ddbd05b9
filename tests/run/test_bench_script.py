"""`make bench` (scripts/bench_methods.py): a decoder benches as a causal LM, one method at a time when
asked, and its table's ratios are the medians' ratios."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch

from support import REPO


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_methods", REPO / "scripts" / "bench_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_divides_each_median_by_full_ft_s_and_lora_s():
    bench = bench_module()
    times = {"full_ft": [4.0, 2.0, 3.0], "lora": [1.0, 1.5, 2.0], "dora": [3.0, 2.5, 2.0]}
    lines = bench.step_table(times, {"full_ft": 9.5, "lora": 2.25, "dora": 2.5}).splitlines()
    assert lines[0] == "| method | s / step (median) | min | max | / Full FT | / LoRA | peak GiB |"
    assert lines[2] == "| full_ft | 3.000 | 2.000 | 4.000 | 1.00 | 2.00 | 9.50 |"
    assert lines[4] == "| dora | 2.500 | 2.000 | 3.000 | 0.83 | 1.67 | 2.50 |"
    # without Full FT or a memory measurement, those columns go
    lines = bench.step_table({"lora": [1.0], "dora": [1.5]}, {}).splitlines()
    assert lines[0] == "| method | s / step (median) | min | max | / LoRA |" and lines[3].endswith("| 1.50 |")


@pytest.mark.parametrize("sequential", [False, True])
def test_a_decoder_benches_as_a_causal_lm_every_method_stepping(capsys, sequential):
    bench = bench_module()
    args = "--backbone tiny-llama --methods lora,dora --device cpu --steps 2 --warmup 1 --batch-size 2 --seq-len 16"
    args = args.split() + ["--threads", "1"] + (["--sequential"] if sequential else [])
    bench.main(args)
    out = capsys.readouterr().out
    assert ("one method at a time" in out) == sequential and "tiny-llama, budget 8, batch 2 x 16" in out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) == {"method", "lora", "dora"} and rows["lora"].endswith("| 1.00 |")
    options = argparse.Namespace(backbone="tiny-llama", random_init=False, budget=8, batch_size=2, seq_len=16)
    runner = bench.Runner("dora", options, torch.device("cpu"))
    assert runner.kind == "causal_lm" and runner.step() > 0
