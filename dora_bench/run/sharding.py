"""FSDP (``trainer.fsdp=true`` under torchrun / accelerate launch): each process holds 1/W of the weights.

Data parallel keeps a whole copy of the model on every GPU. That is fine for PEFT on 1B-8B decoders in
bf16, but not for Full FT of 8B (fp32 weights, gradients and AdamW moments: ~128 GB) or for frozen
weights bigger than one GPU. Here every decoder/encoder layer (the classes the model names in
``_no_split_modules``) becomes one torch FSDP2 unit (``fully_shard``), then the model itself: a
unit's weights are gathered just before its forward and backward and dropped again after.

What is sharded and what is not:

* the frozen weights always;
* trainable parameters only when the method trains the model's own weights (``Method.shard_trainable``:
  Full FT). A PEFT method's parameters stay whole on every process (``ignored_params``), because its
  hooks read them between steps (DoRA scores every component from ``A``, ``B``, ``c`` and their
  gradients, AdaLoRA's allocator likewise) and its export writes them; they are a few MB. Their
  gradients are averaged over the processes by ``average_gradients`` after each backward, which is
  what DDP would do for them; FSDP averages the sharded ones in its reduce-scatter.

Every process must run the same forwards while the model is sharded (each forward gathers weights
from all of them): evaluation is in lockstep (``causal_lm.generate`` pads the shorter shares and
generates with ``synced_gpus``), and checkpoints gather sharded tensors on every process before rank 0
writes them (``whole``), and put them back in their layout on resume (``like``).
"""

from __future__ import annotations

import torch
from torch import nn

from dora_bench import distributed
from dora_bench.errors import ConfigError


def shard(model: nn.Module, *, shard_trainable: bool, backbone: str) -> list[nn.Parameter]:
    """Turn ``model`` (on its device, method applied) into FSDP units in place; return the parameters left
    whole on every process (trainable ones of a PEFT method), whose gradients ``average_gradients`` syncs."""
    from torch.distributed.fsdp import fully_shard

    layer_classes = _layer_classes(model)
    if not layer_classes:
        raise ConfigError(
            f"backbone {backbone!r} names no layer class to shard (_no_split_modules): set trainer.fsdp=false"
        )
    whole = [] if shard_trainable else [p for p in model.parameters() if p.requires_grad]
    ignored = set(whole)
    for layer in _outermost(model, layer_classes):  # each layer gathers only its own weights
        fully_shard(layer, ignored_params=ignored)
    fully_shard(model, ignored_params=ignored)  # the rest: embeddings, final norm, head
    return whole


def _outermost(model: nn.Module, classes: set[str]) -> list[nn.Module]:
    """The modules of those classes not inside another one (a unit inside a unit would be sharded twice)."""
    chosen: list[str] = []
    for name, module in model.named_modules():
        if type(module).__name__ in classes and not any(name.startswith(c + ".") for c in chosen):
            chosen.append(name)
    return [model.get_submodule(name) for name in chosen]


def _layer_classes(model: nn.Module) -> set[str]:
    """The transformer-block class names of the (possibly peft-wrapped) Hugging Face model.

    Embedding classes (BERT and RoBERTa list theirs) stay in the outer unit: prompt tuning calls the
    word embeddings directly, past any unit of their own, and a tied output head shares their weight."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return {name for name in names if not name.endswith("Embeddings")}
    return set()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of the whole (unsharded) trainable parameters over the processes, in one
    all-reduce of their concatenation."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or distributed.world_size() == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    distributed.all_reduce_sum_(flat)
    flat /= distributed.world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def is_sharded(tensor: object) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a sharded one (a collective: every process must call it), else ``tensor``."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``param`` is: this process's shard where ``param`` is sharded (every process
    must call it, each with the same ``full``), else ``full`` itself."""
    if not is_sharded(param):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements)


def whole_on_main(tensor: torch.Tensor) -> torch.Tensor | None:
    """A CPU copy of the whole of ``tensor`` on rank 0, None elsewhere (every process calls it).

    One tensor at a time, straight to the CPU: for Full FT of 8B the gathered AdamW moments alone
    would be 64 GB on every GPU if they were gathered first and copied after."""
    full = whole(tensor.detach())
    copy = full.to("cpu", copy=True) if distributed.is_main() else None
    del full
    return copy


def whole_optimizer_state(optimizer: torch.optim.Optimizer) -> dict | None:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole, on rank 0 (None
    elsewhere; every process calls it)."""
    state = optimizer.state_dict()
    for key in sorted(state["state"]):  # the same order on every process: the gathers pair up
        state["state"][key] = {
            name: whole_on_main(value) if torch.is_tensor(value) else value
            for name, value in state["state"][key].items()
        }
    return state if distributed.is_main() else None


def optimizer_state_like(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved whole optimizer state, each per-parameter tensor laid out as its parameter is."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for key in sorted(saved["state"]):
        param = params[int(key)]
        state[key] = {
            name: like(value, param) if torch.is_tensor(value) and value.shape == param.shape else value
            for name, value in saved["state"][key].items()
        }
    return {**saved, "state": state}
