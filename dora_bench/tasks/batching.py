"""Token sequences in memory, and batches made from them.

Sequences are kept unpadded in one flat tensor per column (``Ragged``): MNLI's 393k
examples take ~60 MB this way instead of ~1 GB as Python lists, and save/load as
tensors. Padding happens per batch, to the longest sequence in it (dynamic padding).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

#: Padding of columns that are not token ids: attention masks pad with 0, seq2seq
#: ``labels`` with -100 (ignored by the cross-entropy loss).
LABEL_PAD = -100


class Ragged:
    """Variable-length rows stored back to back: row ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``values`` is ``(total, *trailing)``; trailing dims hold e.g. (start, end) char offsets.
    """

    def __init__(self, values: torch.Tensor, offsets: torch.Tensor) -> None:
        self.values, self.offsets = values, offsets

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence], dtype: torch.dtype = torch.int32, trailing: tuple[int, ...] = ()
    ) -> Ragged:
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        flat = [x for row in rows for x in row]
        values = torch.tensor(flat, dtype=dtype) if flat else torch.zeros((0, *trailing), dtype=dtype)
        return cls(values.reshape(-1, *trailing), offsets)

    @classmethod
    def concat(cls, parts: Sequence[Ragged]) -> Ragged:
        """The rows of ``parts``, one after the other."""
        lengths = torch.cat([p.lengths() for p in parts])
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(torch.cat([p.values for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values, "offsets": self.offsets}

    @classmethod
    def from_dict(cls, state: Mapping[str, torch.Tensor]) -> Ragged:
        return cls(state["values"], state["offsets"])


class EncodedDataset(Dataset):
    """Rows of aligned columns: ``Ragged`` columns give one sequence per row, tensors one value."""

    def __init__(self, columns: Mapping[str, Ragged | torch.Tensor]) -> None:
        sizes = {name: len(col) for name, col in columns.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"columns of different lengths: {sizes}")
        self.columns = dict(columns)
        self.length_column = "input_ids"

    def __len__(self) -> int:
        return len(self.columns[self.length_column])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: col[i] for name, col in self.columns.items()}

    def lengths(self) -> torch.Tensor:
        return self.columns[self.length_column].lengths()


class PadCollator:
    """Stacks rows into a batch, padding sequences to the longest one in the batch.

    ``input_ids`` pad with the tokenizer's pad id and get an ``attention_mask``
    (1 = real token); ``labels`` sequences pad with -100; other sequences with 0.
    ``side="left"`` pads in front: a decoder generating from a batch of prompts needs every
    prompt to end in the last column, where the new tokens go.
    """

    def __init__(self, pad_token_id: int, side: str = "right") -> None:
        if side not in ("right", "left"):
            raise ValueError(f"side={side!r}: pad on the right or the left")
        self.pad_token_id, self.side = pad_token_id, side

    def __call__(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            if values[0].dim() == 0:
                batch[name] = torch.stack(values)
                continue
            pad = self.pad_token_id if name == "input_ids" else LABEL_PAD if name == "labels" else 0
            batch[name] = _pad(values, pad, self.side)
            if name == "input_ids":
                batch["attention_mask"] = _pad([torch.ones_like(v) for v in values], 0, self.side)
        return batch


def _pad(rows: Sequence[torch.Tensor], value: int, side: str = "right") -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if side == "right":
            out[i, : len(row)] = row
        else:
            out[i, width - len(row) :] = row
    return out


class ShuffledBatches(Sampler[list[int]]):
    """Shuffled batches of indices, a fresh order each epoch, determined by ``seed``.

    With ``group_by_length``, each chunk of ``batch_size * mega`` shuffled examples is
    sorted by length and cut into batches, and the batches are shuffled: batches hold
    examples of similar length (little padding) while the epoch stays random. Epoch ``e``
    uses the generator seeded with ``(seed, e)``, so a run's order never depends on how
    often anything else drew random numbers.

    Data parallel (``world_size`` processes): every process draws the same global batches and
    keeps its share, ``batch[rank::world_size]``. A batch with fewer examples than processes
    (a last, short one) is skipped by all of them, so no process ever gets an empty batch.
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        batch_size: int,
        seed: int,
        group_by_length: bool = False,
        mega: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group_by_length, self.mega = group_by_length, mega
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return sum(1 for size in self._batch_sizes() if size >= self.world_size)

    def _batch_sizes(self) -> list[int]:
        """Sizes of the global batches of an epoch (whatever their order)."""
        chunk = self.batch_size * self.mega if self.group_by_length else len(self.lengths)
        sizes = []
        for start in range(0, len(self.lengths), max(chunk, 1)):
            n = min(chunk, len(self.lengths) - start)
            sizes += [self.batch_size] * (n // self.batch_size) + ([n % self.batch_size] if n % self.batch_size else [])
        return sizes

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (0-based): a resumed run replays the order
        the interrupted one would have seen."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank :: self.world_size]

    def global_batches(self) -> Iterator[list[int]]:
        """The epoch's global batches that every process gets a share of (at least one example each)."""
        return (batch for batch in self._global_batches() if len(batch) >= self.world_size)

    def _global_batches(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=generator)
        if not self.group_by_length:
            yield from (chunk.tolist() for chunk in order.split(self.batch_size))
            return
        batches = []
        for chunk in order.split(self.batch_size * self.mega):
            # stable sort: equal lengths keep their shuffled order
            by_length = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches.extend(by_length.split(self.batch_size))
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[b].tolist()


def train_loader(
    dataset: EncodedDataset,
    collate: PadCollator,
    batch_size: int,
    *,
    seed: int,
    group_by_length: bool = False,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Batches of ``batch_size`` examples; with ``world_size`` > 1 this process's share of each."""
    sampler = ShuffledBatches(dataset.lengths(), batch_size, seed, group_by_length, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


class StepBatches(Sampler[list[list[int]]]):
    """Optimizer steps instead of batches: each of ``batches``' global batches as this process's
    share cut into ``micro`` micro-batches (gradient accumulation; ``micro=1``: the share whole).

    Every process cuts its share into the same number of parts (``min(micro, n // world_size)``
    for a global batch of ``n``: a short last batch gets fewer), so data-parallel processes
    always run the same number of forward passes per step. ``set_epoch(epoch, skip=k)`` starts
    the epoch at its step ``k``: a run resumed from a step checkpoint replays the rest of the epoch
    the interrupted one would have seen, without reading the steps it skips."""

    def __init__(self, batches: ShuffledBatches, micro: int = 1) -> None:
        if micro < 1:
            raise ValueError(f"micro={micro} must be >= 1")
        self.batches, self.micro, self.skip = batches, micro, 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.batches.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[list[list[int]]]:
        world, rank = self.batches.world_size, self.batches.rank
        for index, batch in enumerate(self.batches.global_batches()):
            if index >= self.skip:
                share = batch[rank::world]
                yield split_evenly(share, min(self.micro, len(batch) // world))


def split_evenly(rows: list[int], parts: int) -> list[list[int]]:
    """``rows`` in ``parts`` consecutive pieces whose sizes differ by at most one."""
    return [rows[k * len(rows) // parts : (k + 1) * len(rows) // parts] for k in range(parts)]


class StepDataset(Dataset):
    """Reads one optimizer step's micro-batches (a ``StepBatches`` item), each padded on its own."""

    def __init__(self, dataset: EncodedDataset, collate: PadCollator) -> None:
        self.dataset, self.collate = dataset, collate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, parts: list[list[int]]) -> list[dict[str, torch.Tensor]]:
        return [self.collate([self.dataset[i] for i in part]) for part in parts]


def step_loader(
    dataset: EncodedDataset,
    collate: PadCollator,
    batch_size: int,
    micro_batches: int,
    *,
    seed: int,
    group_by_length: bool = False,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """The training loop's loader: per optimizer step, the list of this process's micro-batches of one
    global batch of ``batch_size`` (the same batches, in the same order, as ``train_loader``)."""
    batches = ShuffledBatches(dataset.lengths(), batch_size, seed, group_by_length, rank=rank, world_size=world_size)
    steps = StepBatches(batches, micro_batches)
    return DataLoader(
        StepDataset(dataset, collate), sampler=steps, batch_size=None, collate_fn=_as_read, num_workers=num_workers
    )


def _as_read(step: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return step  # module-level, so loader workers can pickle it


def eval_batches(dataset: EncodedDataset, collate: PadCollator, batch_size: int) -> Iterator[tuple[list[int], dict]]:
    """(row indices, batch) in order of decreasing length: the least padding; callers
    put results back in place by the indices."""
    order = torch.sort(dataset.lengths(), descending=True, stable=True).indices
    for chunk in order.split(batch_size):
        indices = chunk.tolist()
        yield indices, collate([dataset[i] for i in indices])
