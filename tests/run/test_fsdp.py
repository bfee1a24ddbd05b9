"""FSDP on the CPU: two gloo processes train tiny-llama with its weights sharded, as one process does.

``trainer.fsdp=true`` shards every layer's frozen weights (and Full FT's trainable ones) over the
processes. The two processes run the real ``train(cfg)``; the test checks that the weights really are
split (each process holds half of a frozen matrix), that DoRA prunes the same components on both and
ends with bitwise-equal whole adapters, that both methods match one process with the same global
batch up to float summation order (as in test_data_parallel.py: gloo sums two half-batch gradients),
and that a Full FT checkpoint gathered from the shards and loaded back restores every shard.
Dropout is off for the same reason as there: each process draws its own masks.
"""

from __future__ import annotations

import json

import pytest
import torch

from dora_bench.run import sharding
from dora_bench.run import train as train_module
from dora_bench.run.checkpoints import load_checkpoint, restore_training_state, save_checkpoint
from support import TINY_LLM, as_launched, compose, start_two

COMMON = [
    *TINY_LLM,
    "trainer.max_steps=12",
    "trainer.batch_size=8",
    "trainer.checkpoint=false",
    # 13 dev rows in batches of 6: shares of 7 and 6 rows, 2 generate batches against 1, so evaluation
    # must pad the short share to stay in lockstep (causal_lm.my_share), or the processes hang
    "task.synthetic.eval=13",
    "trainer.eval_batch_size=6",
]
METHODS = {
    # DoRA: warm-up to step 1, pruning at steps 2, 4, 6, the mask fixed from step 6
    "dora": ["method=dora", "method.dropout=0", "task.pruning_interval=2"],
    "full_ft": ["method=full_ft", "method.lr=1e-3"],
}


def _run(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    """One process of the run: ``train(cfg)`` as torchrun would start it; its final state saved for the test."""
    keep = train_module.finish

    def finish(run):
        # whole tensors (a collective under FSDP: every process gathers), and how much this process holds
        params = {n: sharding.whole(p.detach()).clone() for n, p in run.model.named_parameters() if p.requires_grad}
        frozen = run.model.get_submodule("model.layers.0.mlp.down_proj")
        weight = getattr(frozen, "base", frozen).weight
        held = (weight.to_local() if sharding.is_sharded(weight) else weight).numel()
        state = {"params": params, "held": held, "whole": weight.numel(), "replicated": len(run.replicated)}
        if hasattr(run.method, "mask"):
            state["mask"] = run.method.mask.clone()
        if world > 1 and run.cfg.method.name == "full_ft":
            state["restored"] = _checkpoint_round_trip(run, f"{out}/ckpt.pt")
        torch.save(state, f"{out}/rank{rank}-of-{world}.pt")
        return keep(run)

    train_module.finish = finish
    try:
        with as_launched(rank, world, port):
            train_module.train(compose([*overrides, f"results_dir={out}/world{world}"]))
    finally:
        train_module.finish = keep


def _checkpoint_round_trip(run, path: str) -> bool:
    """Save a checkpoint (gathered from the shards), spoil every shard and the AdamW moments, load it back:
    True if every weight and moment is as it was."""
    from pathlib import Path

    def snapshot():
        weights = {n: sharding.whole(p.detach()).clone() for n, p in run.model.named_parameters()}
        moments = [sharding.whole(s[k]).clone() for s in run.optimizer.state.values() for k in sorted(s)]
        return weights, moments

    before = snapshot()
    kwargs = dict(record=run.record, epoch=1, step=run.step, total_steps=run.total_steps)
    save_checkpoint(
        Path(path), model=run.model, method=run.method, optimizer=run.optimizer, scheduler=run.scheduler, **kwargs
    )
    torch.distributed.barrier()  # rank 0 has written it
    with torch.no_grad():
        for p in run.model.parameters():
            if p.requires_grad:
                p.zero_()
        for s in run.optimizer.state.values():
            for value in s.values():  # both moments and the step count
                value.zero_()
    checkpoint = load_checkpoint(Path(path), run.record["config"])
    restore_training_state(checkpoint, Path(path), run.total_steps, run.model, run.method, run.optimizer, run.scheduler)
    after = snapshot()
    return all(torch.equal(before[0][n], after[0][n]) for n in before[0]) and all(
        torch.equal(a, b) for a, b in zip(before[1], after[1])
    )


@pytest.mark.parametrize("accum", [1, 2])  # 2: each process's half batch as 2 micro-batches, reduced after each
@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_sharded_processes_match_one_process(tmp_path, method, accum):
    overrides = [*COMMON, *METHODS[method], f"cache_dir={tmp_path / 'cache'}"]
    _run(0, 1, 0, overrides, str(tmp_path))  # WORLD_SIZE=1: no process group, the single-process reference
    sharded = [*overrides, "trainer.fsdp=true", f"trainer.grad_accum={accum}"]
    start_two(_run, sharded, str(tmp_path))

    first, second, single = (torch.load(tmp_path / f"{name}.pt") for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1"))
    # the frozen (DoRA) or trained (Full FT) matrix is split in two; one process holds it whole
    assert first["held"] == second["held"] == first["whole"] // 2 and single["held"] == single["whole"]
    # a PEFT method's parameters stay whole on every process; Full FT's are sharded with the rest
    assert (first["replicated"] > 0) == (method == "dora")
    if method == "dora":
        assert torch.equal(first["mask"], second["mask"]) and torch.equal(first["mask"], single["mask"])
        assert not first["mask"].all()  # pruning happened: the equality is about a real decision
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
        torch.testing.assert_close(value, single["params"][name], rtol=1e-4, atol=1e-5)
    if method == "full_ft":
        assert first["restored"] and second["restored"]

    record = json.loads(next((tmp_path / "world2").rglob("record.json")).read_text())
    reference = json.loads(next((tmp_path / "world1").rglob("record.json")).read_text())
    assert record["status"] == "complete" and record["extras"]["parallel"] == "fsdp"
    assert record["trainable_params"] == reference["trainable_params"]  # counts see the whole tensors
    # evaluation ran in lockstep (each forward gathers from both processes) and scored every row once
    assert record["eval_examples"] == reference["eval_examples"] == 13 + 16  # test rows + gsm8k's 16-row dev slice
    assert record["best"]["metrics"].keys() == reference["best"]["metrics"].keys()


def _run_each(rank: int, world: int, port: int, runs: dict[str, list[str]], out: str) -> None:
    """One process of several sharded runs in a row (one process group; cheaper than a start per run)."""
    with as_launched(rank, world, port):
        for name, overrides in runs.items():
            train_module.train(compose([*overrides, f"results_dir={out}/{name}"]))


def test_every_decoder_method_trains_sharded_and_exports(tmp_path):
    """The methods the comparison above leaves out, on two sharded processes: each completes, evaluates in
    lockstep and exports from rank 0 (a peft wrapper's generate reaches past FSDP's outer unit; LoRA's
    export can't copy a sharded model). The instruct task's teacher-forced dev loss runs on 13 rows too."""
    rows = [{"prompt": f"Add {a} and {b}.", "response": str(a + b)} for a in range(6) for b in range(6)]
    for split, part in (("train", rows[:23]), ("dev", rows[23:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    common = [*COMMON, "trainer.max_steps=8", "trainer.fsdp=true", f"cache_dir={tmp_path / 'cache'}"]
    instruct = [
        "task=instruct",
        f"task.train_file={tmp_path / 'train.jsonl'}",
        f"task.dev_file={tmp_path / 'dev.jsonl'}",
    ]
    runs = {m: [*common, f"method={m}"] for m in ("lora", "adalora", "dora_wd", "prompt_tuning", "houlsby", "pfeiffer")}
    runs["instruct"] = [*(o for o in common if not o.startswith("task.synthetic")), *instruct, "method=lora"]
    # an encoder: BERT-family models list their embeddings as a layer class; prompt tuning calls them directly
    encoder = ["task=demo", "backbone=tiny", "trainer.progress=false", "trainer.cpu_threads=1", "trainer.max_steps=8"]
    encoder += [
        "trainer.batch_size=8",
        "trainer.checkpoint=false",
        "trainer.fsdp=true",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    runs["encoder_prompt_tuning"] = [*encoder, "method=prompt_tuning"]
    runs["encoder_full_ft"] = [*encoder, "method=full_ft"]
    start_two(_run_each, runs, str(tmp_path))

    for name in runs:
        folder = next((tmp_path / name).rglob("record.json")).parent
        record = json.loads((folder / "record.json").read_text())
        assert record["status"] == "complete" and record["extras"]["parallel"] == "fsdp", name
        if not name.startswith("encoder"):  # 13 uneven rows (+ gsm8k-synthetic's 16-row dev slice)
            assert record["eval_examples"] == (13 if name == "instruct" else 13 + 16), name
        if name != "encoder_full_ft":  # Full FT exports nothing
            assert (folder / record["artifacts"]["adapter"]).exists(), name  # a folder, or one file (adapters)
    assert "loss" in json.loads(next((tmp_path / "instruct").rglob("record.json")).read_text())["best"]["metrics"]
