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
