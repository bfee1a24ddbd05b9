"""The real GLUE files of the developers' reference copy (skipped where that folder is absent)."""

import pytest

from dora_bench.errors import DataError
from dora_bench.tasks import load_task
from dora_bench.tasks.readers import read_tsv
from support import GLUE_DATA

pytestmark = pytest.mark.skipif(not GLUE_DATA.is_dir(), reason=f"no GLUE files at {GLUE_DATA}")

# The official GLUE dev sizes.
SMALL = {"rte": 277, "cola": 1043, "mrpc": 408, "stsb": 1500}


@pytest.mark.parametrize(("name", "dev_size"), sorted(SMALL.items()))
def test_dev_sizes_of_the_real_files(name, dev_size, roberta_tokenizer, task_cfg):
    task = load_task(task_cfg(name, data_dir=str(GLUE_DATA)), roberta_tokenizer)
    assert task.eval_examples == dev_size
    labels = task.dev_sets[0][1].columns["labels"]
    if name == "stsb":
        assert 0.0 <= labels.min() and labels.max() <= 5.0
    else:
        assert set(labels.tolist()) == {0, 1}


def test_sst2_dev_file_has_872_rows():
    # the full SST-2 task tokenises 67k train sentences (~8 s): its load is in the slow test below
    assert len(read_tsv(GLUE_DATA / "SST-2" / "dev.tsv")) == 872


@pytest.mark.slow
def test_sst2_full_load(roberta_tokenizer, task_cfg):
    task = load_task(task_cfg("sst2", data_dir=str(GLUE_DATA)), roberta_tokenizer)
    assert (len(task.train_set), task.eval_examples) == (67349, 872)


def test_every_row_of_the_real_files_has_its_header_s_columns():
    # No GLUE file here has a row with a tab inside a text: a row with more columns than its
    # header can only be damage, so the reader refuses it (below) instead of guessing a mapping.
    for path in sorted(GLUE_DATA.glob("*/*.tsv")):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        width = 4 if path.parent.name == "CoLA" else len(lines[0].split("\t"))  # CoLA has no header
        assert {len(line.split("\t")) for line in lines if line} == {width}, path


def test_a_real_line_with_an_extra_tab_is_refused_with_file_and_line(tmp_path):
    lines = (GLUE_DATA / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, first, second = lines[:3]
    # as read: the four columns of the header, the text untouched
    (row,) = read_tsv(_write(tmp_path / "ok.tsv", header + first))
    index, sentence1, sentence2, label = first.rstrip("\n").split("\t")
    assert row.values == {"index": index, "sentence1": sentence1, "sentence2": sentence2, "label": label}
    assert label == "not_entailment" and sentence1.startswith("Dana Reeve, the widow")
    # a stray tab in the second sentence of the line after it: 5 columns where the header has 4
    broken = second.replace(" against ", "\tagainst ", 1)
    path = _write(tmp_path / "dev.tsv", header + first + broken)
    with pytest.raises(DataError) as refused:
        read_tsv(path)
    assert str(refused.value) == (
        f"{path} line 3: 5 tab-separated columns, expected 4 (index, sentence1, sentence2, label): "
        f"fix or delete the line"
    )
    # malformed_rows=skip drops it (QQP's rows with a missing column go the same way)
    assert [r.values["index"] for r in read_tsv(path, skip_malformed=True)] == [index]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path
