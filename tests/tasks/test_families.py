"""Every task family builds the head its tasks train.

The loop builds the backbone from the model kind each family registers (``register_family``)
before any data is read (a dry run counts its parameters that way), so the registry must name,
family by family, the kind of model the loaded task feeds: a batch of each family's task goes
through a tiny model of that kind.
"""

import json

import pytest

from dora_bench.backbones import MODEL_KINDS
from dora_bench.tasks import family_names, load_task, task_family, task_model_kind


def glue(tmp_path, write, task_cfg):
    rows = "index\tsentence1\tsentence2\tlabel\n0\tA dog barks.\tAn animal barks.\tentailment\n"
    write(tmp_path / "RTE" / "train.tsv", rows)
    write(tmp_path / "RTE" / "dev.tsv", rows)
    return task_cfg("rte", data_dir=str(tmp_path))


def files(tmp_path, write, task_cfg):
    path = write(tmp_path / "reviews.jsonl", json.dumps({"text": "loved it", "label": 1}) + "\n")
    return task_cfg("custom", train_file=str(path), dev_file=str(path))


def demo(tmp_path, write, task_cfg):
    return task_cfg("demo", train_size=8, dev_size=4)


def squad(tmp_path, write, task_cfg):
    context = "Anna Brun owned the cafe."
    qa = {"id": "q1", "question": "Who owned it?", "answers": [{"text": "Anna Brun", "answer_start": 0}]}
    data = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}
    write(tmp_path / "train-v1.1.json", json.dumps(data))
    write(tmp_path / "dev-v1.1.json", json.dumps(data))
    return task_cfg("squad_v1", data_dir=str(tmp_path), max_length=64, doc_stride=16, max_query_length=16)


def summarization(tmp_path, write, task_cfg):
    path = write(tmp_path / "articles.jsonl", json.dumps({"document": "Rain fell.", "summary": "Rain."}) + "\n")
    return task_cfg("xsum", train_file=str(path), dev_file=str(path), max_length=64)


def commonsense(tmp_path, write, task_cfg):
    generated = {"synthetic": {"train": 1, "eval": 1}, "max_length": 512}  # as task=commonsense-synthetic
    return task_cfg("commonsense", **generated)


def gsm8k(tmp_path, write, task_cfg):
    return task_cfg("gsm8k", synthetic={"train": 3, "eval": 1}, max_length=128, dev_size=1)


def instruct(tmp_path, write, task_cfg):
    path = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "Say hi.", "response": "hi"}) + "\n")
    return task_cfg("instruct", train_file=str(path), dev_file=str(path), max_length=64)


FAMILIES = {
    "glue": glue,
    "files": files,
    "demo": demo,
    "squad": squad,
    "summarization": summarization,
    "commonsense": commonsense,
    "gsm8k": gsm8k,
    "instruct": instruct,
}
BACKBONE = {"seq2seq_lm": "tiny-bart", "causal_lm": "tiny-llama"}  # every other kind on the tiny RoBERTa


def test_every_family_has_a_case_here():
    assert set(FAMILIES) == set(family_names())
    assert {task_family(name).model_kind for name in family_names()} <= set(MODEL_KINDS)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_declared_model_kind_is_the_one_the_task_feeds(
    family, tmp_path, write, task_cfg, byte_tokenizer, tiny_model
):
    cfg = FAMILIES[family](tmp_path, write, task_cfg)
    assert cfg["family"] == family
    task = load_task(cfg, byte_tokenizer)
    kind = task_model_kind(cfg)
    assert kind == task_family(family).model_kind == task.model_kind
    # a model of the declared kind takes the task's batches and gives a loss
    batch = next(iter(task.train_loader(1, seed=0)))
    model = tiny_model(BACKBONE.get(kind, "tiny"), kind, num_labels=task.num_labels or 2)
    assert model(**batch).loss.isfinite()
