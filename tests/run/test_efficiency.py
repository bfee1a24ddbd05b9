"""Table 9's line: the adapter's size on disk, and a peak memory that is each run's own."""

from __future__ import annotations

import sys

import pytest
import torch

from dora_bench.run import efficiency


def test_adapter_size_counts_every_file_of_a_folder_or_the_file(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "a.bin").write_bytes(b"x" * 2**20)
    (tmp_path / "adapter" / "b.json").write_bytes(b"x" * 2**19)
    (tmp_path / "one.safetensors").write_bytes(b"x" * 2**18)
    assert efficiency.artifact_mib(tmp_path, "adapter") == 1.5
    assert efficiency.artifact_mib(tmp_path, "one.safetensors") == 0.25
    assert efficiency.artifact_mib(tmp_path, None) is None  # Full FT exports nothing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_the_peak_resident_memory_restarts_with_each_run():
    big = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, touched
    big.add_(1)
    before = efficiency.peak_rss_mib()
    del big
    efficiency.reset_peak_rss()
    assert efficiency.peak_rss_mib() < before - 32  # the freed 64 MiB no longer count
    measured = efficiency.measure([{"seconds": 30.0}, {"seconds": 90.0}], 60, torch.device("cpu"), 0.0)
    assert measured["train_minutes"] == 2.0 and measured["seconds_per_step"] == 2.0
    assert measured["peak_gpu_mib"] is None and measured["peak_rss_mib"] > 0


def test_a_gpu_runs_peak_is_kept_to_a_tenth_of_a_mib_and_no_steps_divide_by_one():
    # the device only says whether there is a GPU figure: no GPU is touched
    measured = efficiency.measure([{"seconds": 7.25}], 0, torch.device("cuda"), 1234.56)
    assert measured["peak_gpu_mib"] == 1234.6
    assert measured["seconds_per_step"] == 7.25 and measured["train_minutes"] == 0.121  # 7.25 / 60, 3 places
