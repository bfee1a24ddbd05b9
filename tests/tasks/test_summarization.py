"""XSum-style summarisation on local jsonl files with the tiny BART: batches, loss, generation, ROUGE."""

import json

import pytest
import torch

from dora_bench.errors import ConfigError
from dora_bench.tasks import load_task

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
