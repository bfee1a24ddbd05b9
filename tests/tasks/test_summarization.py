"""XSum-style summarisation on local jsonl files with the tiny BART: batches, loss, generation, ROUGE."""

import contextlib
import json

import pytest
import torch

from dora_bench.errors import ConfigError
from dora_bench.tasks import load_task

CPU = torch.device("cpu")

ARTICLES = [
    {"document": "The council voted on Monday to close the old bridge for repairs.", "summary": "Old bridge to close."},
    {"document": "A local bakery won the national bread prize this year.", "summary": "Bakery wins bread prize."},
    {"document": "Heavy rain flooded several streets in the town centre overnight.", "summary": "Rain floods town."},
]


@pytest.fixture
def xsum_cfg(tmp_path, task_cfg):
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in ARTICLES))
    # the tiny BART has 256 positions; short generations keep the test fast
    return task_cfg("xsum", train_file=str(path), dev_file=str(path), max_length=128, max_new_tokens=8)


def test_batches_carry_summary_labels(xsum_cfg, byte_tokenizer, tiny_model):
    task = load_task(xsum_cfg, byte_tokenizer)
    assert (task.model_kind, task.main_metric, task.eval_examples) == ("seq2seq_lm", "rougeL", 3)
    batch = next(iter(task.train_loader(3, seed=0)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    lengths = (batch["labels"] != -100).sum(-1)
    # summaries are bytes + </s>; shorter ones are padded with -100 (ignored by the loss)
    assert sorted(lengths.tolist()) == sorted(len(a["summary"].encode()) + 1 for a in ARTICLES)
    model = tiny_model("tiny-bart", "seq2seq_lm")
    assert model(**batch).loss.isfinite()


def test_generation_and_rouge_with_a_peft_wrapped_model(xsum_cfg, byte_tokenizer, tiny_model, run_eval):
    from peft import LoraConfig, get_peft_model

    task = load_task(xsum_cfg, byte_tokenizer)
    model = get_peft_model(tiny_model("tiny-bart", "seq2seq_lm"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.train()
    scores = run_eval(task, model, batch_size=2)  # beam search through peft's generate
    assert set(scores) == {"rouge1", "rouge2", "rougeL"} and all(0.0 <= v <= 1.0 for v in scores.values())
    assert model.training


class ScriptedSummarizer(torch.nn.Module):
    """A seq2seq model whose ``generate`` writes a fixed summary for each document, found by the
    start of the (possibly truncated) input; it keeps what ``generate`` was asked for."""

    def __init__(self, tokenizer, summaries: dict[str, str]):
        super().__init__()
        self.tokenizer, self.summaries, self.calls = tokenizer, summaries, []

    def generate(self, input_ids, attention_mask, **kwargs):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        self.calls.append({"lengths": [len(r) for r in rows], **kwargs})
        texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
        outputs = [next(s for doc, s in self.summaries.items() if doc.startswith(t)) for t in texts]
        encoded = self.tokenizer(outputs, padding=True, return_tensors="pt")["input_ids"]
        return encoded


# Dev documents of rising length: evaluation batches them longest first, so a summary put back
# in the wrong place meets another document's reference.
STORIES = [
    {"document": "Rain fell all night.", "summary": "Rain floods town."},
    {"document": "The council voted to close the old bridge.", "summary": "Old bridge to close."},
    {"document": "A local bakery won the national bread prize this year, its third.", "summary": "Bakery wins."},
]


def test_each_summary_is_scored_against_its_own_reference(tmp_path, task_cfg, byte_tokenizer, run_eval):
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in STORIES))
    cfg = task_cfg("xsum", train_file=str(path), dev_file=str(path), max_length=128, num_beams=2, max_new_tokens=7)
    written = {
        STORIES[0]["document"]: "Rain floods the town centre",
        STORIES[1]["document"]: "Old bridge to close.",  # its reference, word for word: 1, 1, 1
        STORIES[2]["document"]: "Bakery wins.",  # the same
    }
    # the first against "Rain floods town." (lowercased, punctuation dropped, no stemming):
    # unigrams: 3 of 5 predicted, 3 of 3 reference: P 3/5, R 1, F = 2 (3/5) / (8/5) = 3/4
    # bigrams: "rain floods" of 4 predicted and 2 reference: P 1/4, R 1/2, F = 2 (1/8) / (3/4) = 1/3
    # longest common subsequence "rain floods town", 3 tokens: as unigrams, 3/4
    task = load_task(cfg, byte_tokenizer)
    model = ScriptedSummarizer(byte_tokenizer, written)
    scores = run_eval(task, model, batch_size=2)
    assert scores == pytest.approx(
        {"rouge1": (3 / 4 + 1 + 1) / 3, "rouge2": (1 / 3 + 1 + 1) / 3, "rougeL": (3 / 4 + 1 + 1) / 3}
    )
    assert task.generate(model, batch_size=2, device=CPU, autocast=contextlib.nullcontext) == list(written.values())
    # batches of 2, longest first (bytes + </s>): documents 3 and 2, then 1; the beam width and length cap
    # reach generate on every batch
    assert [c["lengths"] for c in model.calls[:2]] == [[66, 43], [21]]
    assert [(c["num_beams"], c["max_new_tokens"]) for c in model.calls] == [(2, 7)] * 4


def test_documents_and_summaries_are_cut_to_the_task_lengths(xsum_cfg, byte_tokenizer, run_eval):
    task = load_task({**xsum_cfg, "max_length": 16, "max_target_length": 6}, byte_tokenizer)
    documents = [a["document"] for a in ARTICLES]
    model = ScriptedSummarizer(byte_tokenizer, {d: "x" for d in documents})
    run_eval(task, model, batch_size=3)
    # 15 bytes of every document and </s>: what the encoder would see
    assert model.calls[0]["lengths"] == [16, 16, 16]
    # training labels: 5 bytes of every summary and </s>
    batch = next(iter(task.train_loader(3, seed=0)))
    assert (batch["labels"] != -100).sum(-1).tolist() == [6, 6, 6]
    assert sorted(byte_tokenizer.decode(row[:5]) for row in batch["labels"]) == sorted(
        a["summary"][:5] for a in ARTICLES
    )


def test_train_and_dev_files_go_together(xsum_cfg, byte_tokenizer):
    with pytest.raises(ConfigError, match="both task.train_file and task.dev_file"):
        load_task({**xsum_cfg, "dev_file": None}, byte_tokenizer)


def test_data_fingerprint_sees_a_changed_reference(xsum_cfg, byte_tokenizer, tmp_path):
    # labels keep 6 tokens of a summary; ROUGE reads the whole reference, so a change past them counts
    cfg = {**xsum_cfg, "max_target_length": 6}
    before = load_task(cfg, byte_tokenizer)
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({**a, "summary": a["summary"] + " Later."}) + "\n" for a in ARTICLES))
    after = load_task({**cfg, "dev_file": str(dev)}, byte_tokenizer)
    assert torch.equal(after.dev.columns["labels"].values, before.dev.columns["labels"].values)
    assert after.data_fingerprint() != before.data_fingerprint()


def test_rouge_stemmer_stems_the_summaries_it_scores(tmp_path, task_cfg, byte_tokenizer, run_eval):
    """``task.rouge_stemmer=true`` reaches the scorer: "Rain flooded town" against "Rain floods town."
    is 2 of 3 unigrams unstemmed (F 2/3) and 3 of 3 stemmed ("flood" both); the other two match."""
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in STORIES))
    written = {STORIES[0]["document"]: "Rain flooded town", **{s["document"]: s["summary"] for s in STORIES[1:]}}
    for stem, rouge1 in ((False, (2 / 3 + 1 + 1) / 3), (True, 1.0)):
        cfg = task_cfg("xsum", train_file=str(path), dev_file=str(path), max_length=128, rouge_stemmer=stem)
        scores = run_eval(load_task(cfg, byte_tokenizer), ScriptedSummarizer(byte_tokenizer, written), batch_size=2)
        assert scores["rouge1"] == pytest.approx(rouge1), stem
