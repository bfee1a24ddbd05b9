"""Dynamic padding, length-grouped shuffling, and evaluation order on the demo task."""

import pytest
import torch

from dora_bench.tasks import load_task
from dora_bench.tasks.batching import EncodedDataset, PadCollator, Ragged, ShuffledBatches


@pytest.fixture
def demo(byte_tokenizer, task_cfg):
    return load_task(task_cfg("demo", train_size=200, dev_size=40), byte_tokenizer)


def test_batches_pad_to_their_longest_row(demo, byte_tokenizer):
    lengths = demo.train_set.lengths()
    for batch in demo.train_loader(8, seed=0):
        mask = batch["attention_mask"]
        # the longest row fills the batch: no all-padding column
        assert mask.shape == batch["input_ids"].shape and mask[:, -1].any()
        row_lengths = mask.sum(-1)
        assert row_lengths.max() == mask.shape[1] <= lengths.max()
        # padding uses the tokenizer's pad id and nothing else does
        assert ((batch["input_ids"] == byte_tokenizer.pad_token_id) == (mask == 0)).all()
        assert batch["labels"].shape == (mask.shape[0],)
    assert lengths.min() < lengths.max()  # the check above is not vacuous


def test_collator_pads_labels_with_ignore_index():
    rows = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([1, 2])},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([3, 4, 9])},
    ]
    batch = PadCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, -100], [3, 4, 9]]


def epoch_orders(task, seed, group, epochs=2):
    loader = task.train_loader(8, seed=seed, group_by_length=group)
    return [[b["input_ids"].tolist() for b in loader] for _ in range(epochs)]


@pytest.mark.parametrize("group", [False, True])
def test_order_depends_only_on_seed_and_epoch(demo, group):
    first, again, other = epoch_orders(demo, 0, group), epoch_orders(demo, 0, group), epoch_orders(demo, 1, group)
    assert first == again
    assert first != other
    assert first[0] != first[1]  # a fresh order each epoch


def test_group_by_length_batches_similar_lengths():
    lengths = torch.randint(1, 200, (400,), generator=torch.Generator().manual_seed(0))

    def mean_spread(group):
        batches = list(ShuffledBatches(lengths, 10, seed=0, group_by_length=group, mega=50))
        assert sorted(i for b in batches for i in b) == list(range(400))  # every example once
        return sum((lengths[b].max() - lengths[b].min()).item() for b in batches) / len(batches)

    # random batches of 10 from U[1, 200) spread ~160; sorted chunks of 400 leave ~5 per batch
    assert mean_spread(True) < 20 < 100 < mean_spread(False)


def test_evaluate_matches_a_plain_forward_pass_and_restores_mode(demo, tiny_model, run_eval):
    model = tiny_model("tiny", "sequence_classification")
    model.train()
    scores = run_eval(demo, model, batch_size=7)  # sorted-by-length batches, results put back in place
    assert model.training
    dataset = demo.dev_sets[0][1]
    model.eval()
    with torch.no_grad():
        predictions = [
            model(input_ids=dataset[i]["input_ids"][None].long()).logits.argmax(-1).item() for i in range(len(dataset))
        ]
    labels = dataset.columns["labels"].tolist()
    assert scores["accuracy"] == pytest.approx(sum(p == y for p, y in zip(predictions, labels)) / len(labels))


def test_ragged_round_trip():
    rows = [[1, 2, 3], [], [4]]
    ragged = Ragged.from_dict(Ragged.from_rows(rows).to_dict())
    assert [ragged[i].tolist() for i in range(3)] == rows
    assert ragged.lengths().tolist() == [3, 0, 1]
    with pytest.raises(ValueError, match="different lengths"):
        EncodedDataset({"input_ids": ragged, "labels": torch.zeros(2)})
