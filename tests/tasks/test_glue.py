"""GLUE from the download script's TSV layout (fixtures written here), label ids, bad rows, yaml values."""

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import load_task
from support import CONF_DIR, REPO

# CoLA: no header, columns source, label, orig-label, sentence; dev.tsv ends without a newline.
COLA_TRAIN = "gj04\t1\t\tOur friends won't buy this analysis.\nclc95\t0\t*\tThe more you eat \"the less.\n"
COLA_DEV = (
    "gj04\t1\t\tThe sailors rode the breeze.\n"
    "cj99\t0\t*\tAs you eat the most, you want the least.\n"
    "w_80\t1\t\tJohn talked to Bill."
)
# MRPC: a UTF-8 BOM before the header; an unbalanced quote that a quoting parser would run on with.
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_ROWS = (
    "1\t1355540\t1355592\tHe said the pie business doesn't fit.\t\"The pie business does not fit our strategy.\n"
    '0\t2029631\t2029565\tMagnarelli said Racicot hated the regime.\tHis wife said he was "100 percent behind.\n'
)
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_ROWS = (
    "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man dances.\t5.000\n"
    "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA child rides.\tA dog sleeps.\t0.250\n"
)
MNLI_COLUMNS = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
]


def mnli_file(path: Path, rows, dev: bool, write) -> None:
    labels = ["label1", "label2", "label3", "label4", "label5"] if dev else ["label1"]
    lines = ["\t".join(MNLI_COLUMNS + labels + ["gold_label"])]
    for i, (premise, hypothesis, gold) in enumerate(rows):
        lines.append(
            "\t".join(
                [str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", premise, hypothesis]
                + [gold] * len(labels)
                + [gold]
            )
        )
    write(path, "\n".join(lines) + "\n")


@pytest.fixture
def glue_dir(tmp_path, write):
    root = tmp_path / "glue_data"
    write(root / "CoLA" / "train.tsv", COLA_TRAIN)
    write(root / "CoLA" / "dev.tsv", COLA_DEV)
    write(root / "MRPC" / "train.tsv", MRPC_HEADER + MRPC_ROWS)
    write(root / "MRPC" / "dev.tsv", MRPC_HEADER + MRPC_ROWS)
    write(root / "STS-B" / "train.tsv", STSB_HEADER + STSB_ROWS)
    write(root / "STS-B" / "dev.tsv", STSB_HEADER + STSB_ROWS)
    pairs = [
        ("A man sleeps.", "Someone rests.", "entailment"),
        ("A man sleeps.", "He is tall.", "neutral"),
        ("A man sleeps.", "He runs.", "contradiction"),
    ]
    mnli_file(root / "MNLI" / "train.tsv", pairs, dev=False, write=write)
    mnli_file(root / "MNLI" / "dev_matched.tsv", pairs, dev=True, write=write)
    mnli_file(root / "MNLI" / "dev_mismatched.tsv", pairs[:2], dev=True, write=write)
    qqp = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    write(
        root / "QQP" / "train.tsv",
        qqp + "0\t1\t2\tHow old?\tWhat age?\t1\n"
        "1\t3\t4\tWas Muhammad a real historical figure? What is the evidence?\t0\n"  # a known malformed row
        "2\t5\t6\tWhy?\tHow?\t0\n",
    )
    write(root / "QQP" / "dev.tsv", qqp + "0\t1\t2\tHow old?\tWhat age?\t1\n")
    rte = "index\tsentence1\tsentence2\tlabel\n"
    write(
        root / "RTE" / "train.tsv",
        rte + "0\tA dog barks.\tAn animal barks.\tentailment\n1\tA dog barks.\tA cat sleeps.\tnot_entailment\n",
    )
    write(root / "RTE" / "dev.tsv", rte + "0\tA dog barks.\tAn animal barks.\tentailment\n")
    return root


def load(name, glue_dir, tokenizer, task_cfg, **overrides):
    return load_task(task_cfg(name, data_dir=str(glue_dir), **overrides), tokenizer)


def dev_texts(task, tokenizer, set_index=0):
    _, dataset = task.dev_sets[set_index]
    return [tokenizer.decode(dataset[i]["input_ids"], skip_special_tokens=True) for i in range(len(dataset))]


def test_cola_headerless_file_without_final_newline(glue_dir, byte_tokenizer, task_cfg):
    task = load("cola", glue_dir, byte_tokenizer, task_cfg)
    assert task.eval_examples == 3 and len(task.train_set) == 2
    assert dev_texts(task, byte_tokenizer)[-1] == "John talked to Bill."  # the unterminated last line
    assert task.dev_sets[0][1].columns["labels"].tolist() == [1, 0, 1]
    assert task.main_metric == "mcc" and task.model_kind == "sequence_classification"


def test_mrpc_bom_header_and_quotes_kept(glue_dir, byte_tokenizer, task_cfg):
    task = load("mrpc", glue_dir, byte_tokenizer, task_cfg)
    assert task.eval_examples == 2
    assert task.dev_sets[0][1].columns["labels"].tolist() == [1, 0]
    first = dev_texts(task, byte_tokenizer)[0]
    # the pair is joined by the byte tokenizer's </s>, dropped on decode; the lone quote survives
    assert first == "He said the pie business doesn't fit.\"The pie business does not fit our strategy."


def test_stsb_float_labels(glue_dir, byte_tokenizer, task_cfg):
    task = load("stsb", glue_dir, byte_tokenizer, task_cfg)
    labels = task.dev_sets[0][1].columns["labels"]
    assert task.num_labels == 1 and labels.dtype == torch.float32
    assert labels.tolist() == pytest.approx([5.0, 0.25])


class ScriptedClassifier(torch.nn.Module):
    """Predicts a fixed class for each input, found by the text the input ends with."""

    def __init__(self, tokenizer, by_ending: dict[str, int], num_labels: int):
        super().__init__()
        self.tokenizer, self.by_ending, self.num_labels = tokenizer, by_ending, num_labels

    def forward(self, input_ids, attention_mask, **kwargs):
        logits = torch.zeros(len(input_ids), self.num_labels)
        for r, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            text = self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            logits[r, next(label for end, label in self.by_ending.items() if text.endswith(end))] = 1.0
        return SimpleNamespace(logits=logits)


def test_mnli_label_ids_and_both_dev_sets(glue_dir, byte_tokenizer, task_cfg, run_eval, write):
    # matched dev shortest first: evaluation batches rows longest first, so a prediction put back
    # in the wrong row would meet another pair's label
    matched = [("A man sleeps.", "He runs.", "contradiction"), ("A man sleeps.", "He is tall.", "neutral")]
    mnli_file(
        glue_dir / "MNLI" / "dev_matched.tsv",
        [*matched, ("A man sleeps.", "Someone rests.", "entailment")],
        True,
        write,
    )
    task = load("mnli", glue_dir, byte_tokenizer, task_cfg)
    # the Hub's ClassLabel order: entailment 0, neutral 1, contradiction 2
    assert task.train_set.columns["labels"].tolist() == [0, 1, 2]
    assert task.dev_sets[0][1].columns["labels"].tolist() == [2, 1, 0]
    assert task.eval_examples == 3 + 2
    # right on "Someone rests." (entailment) and "He runs." (contradiction), wrong on "He is tall."
    # (neutral, predicted contradiction): matched 2 of 3; mismatched holds "rests" and "tall": 1 of 2
    model = ScriptedClassifier(byte_tokenizer, {"Someone rests.": 0, "He is tall.": 2, "He runs.": 2}, 3)
    assert run_eval(task, model, batch_size=2) == pytest.approx({"accuracy": 2 / 3, "accuracy_mm": 1 / 2})


def test_rte_string_labels(glue_dir, byte_tokenizer, task_cfg):
    task = load("rte", glue_dir, byte_tokenizer, task_cfg)
    assert task.train_set.columns["labels"].tolist() == [0, 1]  # entailment, not_entailment


def test_qqp_skips_malformed_rows_when_told(glue_dir, byte_tokenizer, task_cfg):
    task = load("qqp", glue_dir, byte_tokenizer, task_cfg)  # the yaml says malformed_rows: skip
    assert len(task.train_set) == 2
    with pytest.raises(DataError, match=r"QQP/train\.tsv line 3: 5 tab-separated columns, expected 6"):
        load("qqp", glue_dir, byte_tokenizer, task_cfg, malformed_rows="error")


def test_malformed_row_names_file_and_line(glue_dir, byte_tokenizer, task_cfg, write):
    write(glue_dir / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tentailment\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv line 3: 3 tab-separated columns, expected 4"):
        load("rte", glue_dir, byte_tokenizer, task_cfg)
    # too many is refused as well: a stray tab would shift the label into another column
    write(
        glue_dir / "RTE" / "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tc\tentailment\n",
    )
    with pytest.raises(DataError, match=r"RTE/dev\.tsv line 3: 5 tab-separated columns, expected 4"):
        load("rte", glue_dir, byte_tokenizer, task_cfg)


def test_unknown_label_names_file_and_line(glue_dir, byte_tokenizer, task_cfg, write):
    write(glue_dir / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv line 3: label 'maybe' is not one of entailment, not_entailment"):
        load("rte", glue_dir, byte_tokenizer, task_cfg)
    write(glue_dir / "CoLA" / "dev.tsv", "gj04\t2\t\tA sentence.")
    with pytest.raises(DataError, match=r"CoLA/dev\.tsv line 1: label '2'"):
        load("cola", glue_dir, byte_tokenizer, task_cfg)


def test_missing_folder_is_a_config_error(tmp_path, byte_tokenizer, task_cfg):
    with pytest.raises(ConfigError, match="task.data_dir"):
        load("rte", tmp_path, byte_tokenizer, task_cfg)


def test_hub_unreachable_suggests_data_dir(byte_tokenizer, task_cfg, monkeypatch):
    from dora_bench.hub import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    with pytest.raises(DataError, match=r"can't load nyu-mll/glue/rte .*task\.data_dir=") as err:
        load_task(task_cfg("rte"), byte_tokenizer)
    assert "\n" not in str(err.value)
    hub_reachable.cache_clear()


GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]
TABLE8_ROW = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "squad_v1": "SQuAD v1",
    "squad_v2": "SQuAD v2",
    "xsum": "Xsum",
}


@pytest.mark.parametrize("name", sorted(TABLE8_ROW))
def test_yaml_hyperparameters_are_table8(name):
    with open(REPO / "dora_bench" / "report" / "paper" / "table8_hyperparameters.csv") as f:
        row = {r["task"]: r for r in csv.DictReader(f)}[TABLE8_ROW[name]]
    cfg = yaml.safe_load((CONF_DIR / "task" / f"{name}.yaml").read_text())
    assert cfg["name"] == name
    assert (cfg["max_length"], cfg["batch_size"], cfg["epochs"], cfg["pruning_interval"]) == (
        int(row["max_length"]),
        int(row["batch_size"]),
        int(row["epochs"]),
        int(row["pruning_interval"]),
    )
    assert cfg["lr"] == pytest.approx(float(row["learning_rate"]))
    assert cfg["dem_coef"] == pytest.approx(float(row["regularization_coefficient"]))


@pytest.mark.parametrize("name", GLUE)
def test_glue_yaml_is_consistent(name):
    cfg = yaml.safe_load((CONF_DIR / "task" / f"{name}.yaml").read_text())
    assert cfg["family"] == "glue" and cfg["hub_id"] == "nyu-mll/glue" and cfg["data_dir"] is None
    assert cfg["main_metric"] in cfg["metrics"]
    assert (cfg["label_names"] is None) == (cfg["num_labels"] == 1)
    assert cfg["label_names"] is None or len(cfg["label_names"]) == cfg["num_labels"]
