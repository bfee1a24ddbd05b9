"""The real GLUE files of the developers' reference copy (skipped where that folder is absent)."""

import pytest

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
