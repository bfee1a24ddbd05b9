"""Data parallel on the CPU: two gloo processes train tiny-llama with DoRA exactly as one process does.

The two processes run the real ``train(cfg)`` (the code path torchrun starts), each with half of every
global batch of 8. Both must end with the same mask and bitwise the same adapter, and match one
process that sees the whole batch: up to the order in which floating-point sums are taken (gloo sums
two half-batch gradients, one process sums the batch at once), measured at a relative 4e-6 after
12 steps, asserted below 1e-4. DoRA's dropout is off: each process draws its own masks, so with it
the runs would differ by design, not by error.
"""

from __future__ import annotations

import torch

from dora_bench.run import train as train_module
from support import TINY_LLM, as_launched, compose, start_two

OVERRIDES = [
    *TINY_LLM,
    "method=dora",
    "method.dropout=0",
    "trainer.max_steps=12",  # DoRA: warm-up to step 1, pruning at steps 2, 4, 6, the mask fixed from step 6
    "trainer.batch_size=8",
    "task.pruning_interval=2",
    "trainer.checkpoint=false",
]


def _run(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    """One process of the run: ``train(cfg)`` as torchrun would start it; its final state saved for the test."""
    keep = train_module.finish

    def finish(run):
        trained = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
        torch.save({"mask": run.method.mask.clone(), "params": trained}, f"{out}/rank{rank}-of-{world}.pt")
        return keep(run)

    train_module.finish = finish
    try:
        with as_launched(rank, world, port):
            train_module.train(compose([*overrides, f"results_dir={out}/world{world}"]))
    finally:
        train_module.finish = keep


def test_two_gloo_processes_prune_alike_and_match_one_process(tmp_path):
    overrides = [*OVERRIDES, f"cache_dir={tmp_path / 'cache'}"]
    _run(0, 1, 0, overrides, str(tmp_path))  # WORLD_SIZE=1: no process group, the single-process reference
    start_two(_run, overrides, str(tmp_path))

    first, second, single = (torch.load(tmp_path / f"{name}.pt") for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1"))
    assert torch.equal(first["mask"], second["mask"])
    assert not first["mask"].all()  # pruning happened: the equality is about a real decision
    assert torch.equal(first["mask"], single["mask"])
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
        torch.testing.assert_close(value, single["params"][name], rtol=1e-4, atol=1e-6)

    records = {world: next((tmp_path / f"world{world}").rglob("record.json")) for world in (1, 2)}
    assert not list((tmp_path / "world2").rglob("traceback.txt"))
    import json

    one, two = (json.loads(records[w].read_text()) for w in (1, 2))
    assert two["status"] == "complete" and two["extras"]["world_size"] == 2 and "world_size" not in one["extras"]
    assert two["extras"]["rank_allocation"] == one["extras"]["rank_allocation"]
    # only rank 0 wrote: one record, one metrics log, one adapter in the run's folder
    assert sorted(p.name for p in records[2].parent.iterdir()) == sorted(p.name for p in records[1].parent.iterdir())


def test_two_processes_accumulating_two_micro_batches_each_match_one_process(tmp_path):
    # Each process's half of the global batch of 8 goes in as 2 micro-batches of 2: DDP syncs only the
    # second backward (no_sync), and each micro-batch's loss is weighted by its tokens over all four.
    overrides = [*OVERRIDES, f"cache_dir={tmp_path / 'cache'}"]
    _run(0, 1, 0, overrides, str(tmp_path))
    start_two(_run, [*overrides, "trainer.grad_accum=2"], str(tmp_path))

    first, second, single = (torch.load(tmp_path / f"{name}.pt") for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1"))
    assert not first["mask"].all() and torch.equal(first["mask"], second["mask"])
    assert torch.equal(first["mask"], single["mask"])
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
        torch.testing.assert_close(value, single["params"][name], rtol=1e-4, atol=1e-6)
    import json

    record = json.loads(next((tmp_path / "world2").rglob("record.json")).read_text())
    assert record["extras"]["memory_estimate"]["batch"] == 2  # 8 over 2 processes x 2 micro-batches


# -- the helpers by value, two processes simulated in one (the run above exercises them only in its children) --


def _as_rank_of_two(monkeypatch, others: list[float]) -> None:
    """This process as one of 2, the other holding ``others``: all_reduce_sum_ adds them in place."""
    from dora_bench import distributed

    def add_the_other(tensor: torch.Tensor) -> torch.Tensor:
        tensor += torch.tensor(others, dtype=tensor.dtype)
        return tensor

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_sum_", add_the_other)


def test_loss_terms_count_label_tokens_shifted_for_a_causal_lm_and_examples_otherwise():
    from dora_bench.run.data_parallel import loss_terms

    ids = torch.zeros(2, 4, dtype=torch.long)
    labels = torch.tensor([[5, 1, 2, -100], [-100, -100, 3, 4]])  # 5 label tokens, 4 after the first position
    assert loss_terms({"input_ids": ids, "labels": labels}, causal=True) == 4
    assert loss_terms({"input_ids": ids, "labels": labels}, causal=False) == 5
    assert loss_terms({"input_ids": torch.zeros(3, 4), "labels": torch.tensor([0, 1, 1])}, causal=False) == 3
    assert loss_terms({"input_ids": torch.zeros(3, 4)}, causal=True) == 3  # no labels: the examples


def test_loss_shares_weight_each_process_mean_into_the_global_mean(monkeypatch):
    from dora_bench.run.data_parallel import loss_shares

    # process 0 holds 1 example, process 1 holds 3; W = 2, N = 4; per-example losses 4 | 1, 2, 3
    cpu = torch.device("cpu")
    _as_rank_of_two(monkeypatch, [3.0])
    (share0,) = loss_shares([{"input_ids": torch.zeros(1, 4), "labels": torch.tensor([1])}], False, cpu)
    _as_rank_of_two(monkeypatch, [1.0])
    (share1,) = loss_shares([{"input_ids": torch.zeros(3, 4), "labels": torch.tensor([1, 0, 1])}], False, cpu)
    assert (share0, share1) == (0.5, 1.5)  # n_r W / N
    # DDP averages the processes' weighted losses: that is the mean over the whole global batch
    assert (4.0 * share0 + (1.0 + 2.0 + 3.0) / 3 * share1) / 2 == (4.0 + 1.0 + 2.0 + 3.0) / 4


def test_loss_share_of_a_process_with_every_term_is_the_world_size(monkeypatch):
    from dora_bench.run.data_parallel import loss_shares

    labels = torch.tensor([[-100, 7]])  # one response token (after the shift); the other process has none
    _as_rank_of_two(monkeypatch, [0.0])
    assert loss_shares([{"labels": labels}], causal=True, device=torch.device("cpu")) == [2.0]  # 1 * 2 / max(1, 1)


def test_micro_batch_shares_are_each_one_s_terms_over_every_process_s(monkeypatch):
    from dora_bench.run.data_parallel import loss_shares

    # this process: micro-batches of 1 and 3 examples; the other process: 4; W = 2, N = 8
    _as_rank_of_two(monkeypatch, [4.0])
    micro = [{"labels": torch.tensor([1])}, {"labels": torch.tensor([0, 1, 1])}]
    assert loss_shares(micro, causal=False, device=torch.device("cpu")) == [0.25, 0.75]


def test_mean_over_processes_is_the_mean_and_leaves_its_input_alone(monkeypatch):
    from dora_bench.run.data_parallel import mean_over_processes

    _as_rank_of_two(monkeypatch, [3.0, 6.0])
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(mean_over_processes(values), torch.tensor([2.0, 4.0]))
    assert torch.equal(values, torch.tensor([1.0, 2.0]))


def test_check_batch_refuses_a_global_batch_that_does_not_split(monkeypatch):
    import pytest

    from dora_bench import distributed
    from dora_bench.errors import ConfigError
    from dora_bench.run.data_parallel import check_batch

    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    check_batch(8)
    with pytest.raises(ConfigError, match="must split over 4 processes: set it to a multiple of 4"):
        check_batch(6)
    check_batch(16, grad_accum=4)
    with pytest.raises(ConfigError, match="over 4 processes x trainer.grad_accum=4 micro-batches: .* multiple of 16"):
        check_batch(8, grad_accum=4)
