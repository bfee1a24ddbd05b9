"""Custom file tasks (csv/tsv/json/jsonl/parquet), the tokenisation cache, and the demo task."""

import json

import pytest
import torch

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import classification, load_task, task_names
from dora_bench.tasks.demo import make_splits

REVIEWS = [("a fine film", "pos"), ('dull, "slow" plot', "neg"), ("loved it", "pos")]


def write_reviews(path, write):
    fmt = path.suffix
    if fmt == ".csv":
        body = "review,sentiment\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{y}\n' for t, y in REVIEWS)
    elif fmt == ".tsv":
        body = "review\tsentiment\n" + "".join(f"{t}\t{y}\n" for t, y in REVIEWS)
    elif fmt == ".json":
        body = json.dumps([{"review": t, "sentiment": y} for t, y in REVIEWS])
    elif fmt == ".jsonl":
        body = "".join(json.dumps({"review": t, "sentiment": y}) + "\n" for t, y in REVIEWS)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"review": [t for t, _ in REVIEWS], "sentiment": [y for _, y in REVIEWS]}), path)
        return path
    return write(path, body)


def custom_cfg(task_cfg, train, dev, **overrides):
    return task_cfg(
        "custom",
        train_file=str(train),
        dev_file=str(dev),
        text_fields=["review"],
        label_field="sentiment",
        label_names=["neg", "pos"],
        **overrides,
    )


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_custom_task_from_each_format(fmt, tmp_path, write, byte_tokenizer, task_cfg):
    path = write_reviews(tmp_path / f"reviews.{fmt}", write)
    task = load_task(custom_cfg(task_cfg, path, path), byte_tokenizer)
    dataset = task.dev_sets[0][1]
    assert dataset.columns["labels"].tolist() == [1, 0, 1]
    # the quoted field comes back intact whatever the container
    assert byte_tokenizer.decode(dataset[1]["input_ids"], skip_special_tokens=True) == 'dull, "slow" plot'


def test_custom_task_requires_its_files(byte_tokenizer, task_cfg, tmp_path, write):
    with pytest.raises(ConfigError, match=r"needs task\.train_file: pass task\.train_file=<path"):
        load_task(task_cfg("custom"), byte_tokenizer)
    with pytest.raises(ConfigError, match="does not exist"):
        load_task(custom_cfg(task_cfg, tmp_path / "nope.csv", tmp_path / "nope.csv"), byte_tokenizer)
    text = write(tmp_path / "x.txt", "review\tsentiment\n")
    with pytest.raises(ConfigError, match=r"x\.txt: unknown file type '\.txt'"):
        load_task(custom_cfg(task_cfg, text, text), byte_tokenizer)


def test_custom_task_bad_rows(tmp_path, write, byte_tokenizer, task_cfg):
    path = write(tmp_path / "r.jsonl", '{"review": "ok", "sentiment": "pos"}\n{"review": "hm", "sentiment": "meh"}\n')
    with pytest.raises(DataError, match=r"r\.jsonl line 2: label 'meh' is not one of neg, pos"):
        load_task(custom_cfg(task_cfg, path, path), byte_tokenizer)
    path = write(tmp_path / "r2.jsonl", '{"review": "ok", "label": "pos"}\n')
    with pytest.raises(DataError, match=r"r2\.jsonl line 1: no column 'sentiment'"):
        load_task(custom_cfg(task_cfg, path, path), byte_tokenizer)


def test_custom_regression_and_integer_labels(tmp_path, write, byte_tokenizer, task_cfg):
    path = write(tmp_path / "s.csv", "text,score\na,0.5\nb,4\n")
    cfg = task_cfg(
        "custom",
        train_file=str(path),
        dev_file=str(path),
        label_field="score",
        num_labels=1,
        metrics=["pearson", "spearman"],
        main_metric="pearson",
    )
    task = load_task(cfg, byte_tokenizer)
    assert task.dev_sets[0][1].columns["labels"].tolist() == [0.5, 4.0]
    path = write(tmp_path / "c.csv", "text,label\na,2\nb,0\n")
    task = load_task(
        task_cfg("custom", train_file=str(path), dev_file=str(path), num_labels=3, metrics=["accuracy"]), byte_tokenizer
    )
    assert task.train_set.columns["labels"].tolist() == [2, 0]


def test_bad_metric_settings(tmp_path, write, byte_tokenizer, task_cfg):
    path = write(tmp_path / "c.csv", "text,label\na,1\n")
    base = {"train_file": str(path), "dev_file": str(path)}
    with pytest.raises(ConfigError, match="task.metrics: unknown bleu"):
        load_task(task_cfg("custom", **base, metrics=["bleu"]), byte_tokenizer)
    with pytest.raises(ConfigError, match="task.main_metric='mcc' is not computed"):
        load_task(task_cfg("custom", **base, main_metric="mcc"), byte_tokenizer)
    with pytest.raises(ConfigError, match="task.family='nope'"):
        load_task(task_cfg("custom", family="nope"), byte_tokenizer)


def test_second_load_reads_the_cache(tmp_path, write, byte_tokenizer, task_cfg, monkeypatch):
    path = write_reviews(tmp_path / "reviews.tsv", write)
    cache_dir = tmp_path / "cache"
    calls = []
    encode = classification.encode_split
    monkeypatch.setattr(classification, "encode_split", lambda *a, **k: calls.append(1) or encode(*a, **k))

    first = load_task(custom_cfg(task_cfg, path, path), byte_tokenizer, cache_dir=cache_dir)
    assert len(calls) == 2 and len(list(cache_dir.glob("*.pt"))) == 2  # train + dev
    second = load_task(custom_cfg(task_cfg, path, path), byte_tokenizer, cache_dir=cache_dir)
    assert len(calls) == 2  # nothing re-tokenised
    assert torch.equal(second.train_set.columns["input_ids"].values, first.train_set.columns["input_ids"].values)
    assert not list(cache_dir.glob("*.tmp"))  # written atomically: no leftovers

    load_task(custom_cfg(task_cfg, path, path, max_length=8), byte_tokenizer, cache_dir=cache_dir)
    assert len(calls) == 4  # a different max_length is a different cache entry
    write(path, path.read_text() + "great\tpos\n")  # the file changed (size, mtime): re-tokenise
    changed = load_task(custom_cfg(task_cfg, path, path), byte_tokenizer, cache_dir=cache_dir)
    assert len(calls) == 6 and changed.eval_examples == 4


def test_demo_is_deterministic_and_balanced(byte_tokenizer, task_cfg):
    train, dev = make_splits(300, 60, seed=0)
    again, _ = make_splits(300, 60, seed=0)
    other, _ = make_splits(300, 60, seed=1)
    assert train == again and train.texts != other.texts
    assert sum(train.labels) == 150 and sum(dev.labels) == 30
    assert not set(train.texts[0]) & set(dev.texts[0])
    # the label is the majority letter among the opinion words: z (positive) or x (negative)
    for sentence, label in zip(train.texts[0], train.labels, strict=True):
        words = sentence.rstrip(".").split(": ")[1].split(", ")
        assert label == (sum("z" in w for w in words) > sum("x" in w for w in words))
    task = load_task(task_cfg("demo"), byte_tokenizer)
    assert (len(task.train_set), task.eval_examples) == (1600, 240)
    assert task.train_set.lengths().max() <= task_cfg("demo")["max_length"]


def test_task_names_lists_the_shipped_yamls():
    names = task_names()
    assert {
        "cola",
        "sst2",
        "mrpc",
        "stsb",
        "qqp",
        "mnli",
        "qnli",
        "rte",
        "demo",
        "custom",
        "squad_v1",
        "squad_v2",
        "xsum",
    } <= set(names)


def test_data_fingerprint_follows_the_content_not_the_path(tmp_path, write, byte_tokenizer, task_cfg):
    here = write_reviews(tmp_path / "here" / "reviews.tsv", write)
    there = write(tmp_path / "there" / "copy.tsv", here.read_text())

    def fingerprint(train, dev):
        return load_task(custom_cfg(task_cfg, train, dev), byte_tokenizer).data_fingerprint()

    first = fingerprint(here, here)
    assert len(first) == 16 and int(first, 16) >= 0
    assert fingerprint(there, there) == first  # the same rows on another disk: the same data
    write(there, there.read_text().replace("loved it\tpos", "loved it\tneg"))  # one label flipped
    assert fingerprint(here, there) != first  # in the dev file only
    assert fingerprint(there, here) != first  # in the train file only
