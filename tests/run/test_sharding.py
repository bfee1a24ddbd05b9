"""FSDP's helpers by value in one process: a gradient average over two processes simulated, and a full
tensor laid out as a sharded parameter on a one-process gloo group (the two-process runs of
test_fsdp.py exercise them only in their children, where no test sees a slip)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from dora_bench import distributed
from dora_bench.run.sharding import average_gradients, like


def test_whole_gradients_are_averaged_over_the_processes_in_place(monkeypatch):
    def add_the_other(tensor):  # the other process's gradients, concatenated: [3, 4] and [[5]]
        tensor += torch.tensor([3.0, 4.0, 5.0])
        return tensor

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_sum_", add_the_other)
    first, second, frozen = torch.zeros(2), torch.zeros(1, 1), torch.zeros(3)
    first.grad, second.grad = torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])
    average_gradients([first, frozen, second])  # a parameter without a gradient is left out
    assert torch.equal(first.grad, torch.tensor([2.0, 3.0])) and torch.equal(second.grad, torch.tensor([[4.0]]))
    assert frozen.grad is None


def test_one_process_leaves_its_gradients_alone():
    param = torch.zeros(2)
    param.grad = torch.tensor([1.0, 2.0])
    average_gradients([param])
    assert torch.equal(param.grad, torch.tensor([1.0, 2.0]))


@pytest.fixture
def one_process_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_full_tensor_is_laid_out_as_the_sharded_parameter(one_process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    param = distribute_tensor(torch.zeros(4, 2), mesh, [Shard(0)])
    full = torch.arange(8, dtype=torch.float64).view(4, 2)
    out = like(full, param)
    assert isinstance(out, DTensor) and out.placements == (Shard(0),) and out.dtype == torch.float32
    assert torch.equal(out.full_tensor(), full.float())
    plain = torch.zeros(4, 2)
    assert like(full, plain) is full  # a parameter FSDP left whole takes the full tensor itself
