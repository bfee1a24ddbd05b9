"""Decoder-LLM tasks by value: which tokens the loss sees, left padding for generation, answers parsed
from generations, per-set accuracy averaged as the papers do, GSM8K's final numbers, local files."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from torch import nn
from transformers import ByT5Tokenizer

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import load_task
from dora_bench.tasks.batching import EncodedDataset, PadCollator, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, special_prefix
from dora_bench.tasks.commonsense import SETS, parse_answer, score
from dora_bench.tasks.gsm8k import exact_match, final_number
from dora_bench.tasks.instruct import exact_match as instruct_exact_match
from dora_bench.tasks.synthetic import commonsense_row, gsm8k_row
from support import CONF_DIR

BYTES = ByT5Tokenizer(extra_ids=0)  # id = byte + 3; pad 0, eos 1


def byte_ids(text: str) -> list[int]:
    return [b + 3 for b in text.encode()]


def bos_tokenizer():
    """A word-level tokenizer that, like Llama-3's, puts a begin-of-text token before every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "a": 3, "b": 4, "c": 5, "d": 6}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def ragged(rows: dict) -> list[list[int]]:
    r = Ragged.from_dict(rows)
    return [r[i].tolist() for i in range(len(r))]


# -- encoding ----------------------------------------------------------------------------------------


def test_the_prefix_is_what_the_tokenizer_puts_before_any_text():
    assert special_prefix(BYTES) == []  # ByT5 appends its eos instead: not a prefix
    assert special_prefix(bos_tokenizer()) == [1]


def test_the_loss_sees_the_response_and_its_end_token_only():
    encoded, cut = encode_examples(BYTES, [Example("ab", " c")], max_length=32)
    assert ragged(encoded["input_ids"]) == [byte_ids("ab c") + [1]]
    assert ragged(encoded["labels"]) == [[-100, -100] + byte_ids(" c") + [1]] and cut == 0
    encoded, _ = encode_examples(bos_tokenizer(), [Example("a b", "c d")], max_length=32)
    assert ragged(encoded["input_ids"]) == [[1, 3, 4, 5, 6, 2]]  # <bos> a b | c d <eos>
    assert ragged(encoded["labels"]) == [[-100, -100, -100, 5, 6, 2]]


def test_a_long_prompt_loses_its_start_and_keeps_its_response():
    encoded, cut = encode_examples(bos_tokenizer(), [Example("a b c d a b", "c")], max_length=5)
    assert ragged(encoded["input_ids"]) == [[1, 3, 4, 5, 2]]  # <bos> (a b c d) a b | c <eos>
    assert ragged(encoded["labels"]) == [[-100, -100, -100, 5, 2]] and cut == 1
    prompts = encode_prompts(bos_tokenizer(), ["a b c d"], max_length=3)
    assert ragged(prompts["input_ids"]) == [[1, 5, 6]]  # the same rule for generation: the prompt's end stays


def test_generation_batches_pad_on_the_left():
    batch = PadCollator(0, side="left")([{"input_ids": torch.tensor([7, 8, 9])}, {"input_ids": torch.tensor([5])}])
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 0, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    right = PadCollator(0)(
        [
            {"input_ids": torch.tensor([5]), "labels": torch.tensor([6])},
            {"input_ids": torch.tensor([7, 8]), "labels": torch.tensor([9, 4])},
        ]
    )
    assert right["labels"].tolist() == [[6, -100], [9, 4]]


class EchoModel(nn.Module):
    """``generate`` appends (last prompt token + 1) and then eos; the forward returns fixed logits."""

    def __init__(self, logits: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []
        self.logits = logits

    def generate(self, input_ids, attention_mask, generation_config):
        self.seen.append(input_ids.clone())
        new = torch.stack([input_ids[:, -1] + 1, torch.ones_like(input_ids[:, -1])], dim=1)
        return torch.cat([input_ids, new], dim=1)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.logits[: len(input_ids), : input_ids.shape[1]]})()


def causal_task(train=None) -> CausalLMTask:
    data = train or EncodedDataset({"input_ids": Ragged.from_rows([[4]]), "labels": Ragged.from_rows([[4]])})
    task = CausalLMTask("t", data, BYTES, max_new_tokens=2)
    task.progress = False
    return task


def test_generate_continues_each_prompt_from_its_last_token_in_row_order():
    prompts = EncodedDataset({"input_ids": Ragged.from_rows([byte_ids("a"), byte_ids("xyz"), byte_ids("mn")])})
    model = EchoModel()
    texts = causal_task().generate(
        model, prompts, batch_size=2, device=torch.device("cpu"), autocast=contextlib.nullcontext, desc="t"
    )
    assert texts == ["b", "{", "o"]  # 'a'+1, 'z'+1, 'n'+1: row order restored after the length sort
    assert model.seen[0][1].tolist() == [0] + byte_ids("mn")  # the shorter prompt of a batch is padded in front


def test_response_loss_counts_response_tokens_only():
    # one sequence [p, r1, r2] with labels [-100, r1, r2]: positions 0 and 1 predict r1 and r2
    vocab = 5
    logits = torch.zeros(1, 3, vocab)
    logits[0, 0, 2] = 2.0  # predicts r1 = 2: right
    logits[0, 1, 3] = 1.0  # predicts 3 where r2 = 4: wrong
    logits[0, 2, :] = 100.0  # after the last token: must not count
    dev = EncodedDataset({"input_ids": Ragged.from_rows([[1, 2, 4]]), "labels": Ragged.from_rows([[-100, 2, 4]])})
    metrics = causal_task().response_loss(
        EchoModel(logits), dev, batch_size=4, device=torch.device("cpu"), autocast=contextlib.nullcontext
    )
    nll = -torch.log_softmax(logits[0, 0], -1)[2] - torch.log_softmax(logits[0, 1], -1)[4]
    assert metrics["loss"] == pytest.approx(nll.item() / 2)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll.item() / 2))
    assert metrics["token_accuracy"] == 0.5


# -- commonsense ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_name", "text", "expected"),
    [
        ("boolq", " True, because", "true"),
        ("boolq", "it is false", "false"),
        ("boolq", "maybe", None),
        ("piqa", " Solution 2.", "solution2"),
        ("piqa", "solution3", None),  # not an option of PIQA
        ("siqa", "answer3 answer1", "answer3"),  # the first answer word counts
        ("hellaswag", "ending4", "ending4"),
        ("winogrande", "OPTION1", "option1"),
        ("arc_c", "answer5", "answer5"),  # ARC has questions with five choices
        ("obqa", "answer5", None),  # OpenBookQA never does
        ("arc_e", "answers1", None),  # a word boundary, not a prefix
    ],
)
def test_the_first_answer_word_of_a_generation_is_its_answer(set_name, text, expected):
    assert parse_answer(set_name, text) == expected


def test_scores_are_accuracy_per_set_and_their_unweighted_mean():
    generations = {"boolq": [" true", " false", "no idea", " true"], "piqa": ["solution1", "solution1"]}
    answers = {"boolq": ["true", "true", "false", "true"], "piqa": ["solution1", "solution2"]}
    metrics = score(generations, answers)
    assert metrics["boolq"] == 0.5 and metrics["piqa"] == 0.5
    assert metrics["avg"] == 0.5  # pooled over the 6 examples it would be 3/6 too; change one set:
    assert score({"boolq": [" true"] * 4, "piqa": ["x", "x"]}, answers)["avg"] == pytest.approx((0.75 + 0.0) / 2)
    assert metrics["unparsed"] == pytest.approx(1 / 6)


def test_a_set_with_fewer_generations_than_answers_is_refused_not_scored_short():
    # zip would score the 2 generations against the first 2 answers: 1.0 instead of an error
    with pytest.raises(ValueError, match="^boolq: 2 generations for 3 answers$"):
        score({"boolq": [" true", " true"]}, {"boolq": ["true", "true", "false"]})
    with pytest.raises(ValueError, match="^boolq: 0 generations for 0 answers$"):
        score({"boolq": []}, {"boolq": []})


def test_commonsense_evaluate_generates_every_set_with_the_callers_settings(tmp_path):
    cfg = _task_cfg("commonsense-synthetic")
    cfg = {**_task_cfg("commonsense"), **{k: v for k, v in cfg.items() if k != "defaults"}, "max_eval_per_set": 2}
    task = load_task(cfg, BYTES, cache_dir=None)
    calls = []

    def generate(model, prompts, **kwargs):
        calls.append(kwargs)
        name = kwargs["desc"]
        answers = task.dev_sets[name][1]
        return [" " + answers[0]] + ["no idea"] * (len(answers) - 1)  # the first right, the rest unparsed

    task.generate = generate
    cpu = torch.device("cpu")
    metrics = task.evaluate("model", batch_size=3, device=cpu, autocast=contextlib.nullcontext)
    assert [c["desc"] for c in calls] == list(task.dev_sets)
    assert all((c["batch_size"], c["device"], c["autocast"]) == (3, cpu, contextlib.nullcontext) for c in calls)
    assert metrics["avg"] == pytest.approx(0.5) and metrics["unparsed"] == pytest.approx(0.5)


@pytest.mark.parametrize("set_name", sorted(SETS))
def test_every_sets_prompt_ends_in_an_answer_its_parser_reads_back(set_name):
    make_prompt = SETS[set_name][0]
    for i in range(20):
        prompt, answer = make_prompt(commonsense_row(set_name, "train", i))
        assert prompt.endswith("Answer:") and parse_answer(set_name, " " + answer) == answer


def test_commonsense_reads_local_jsonl_per_set_and_trains_on_their_union(tmp_path):
    for set_name, split, n in (
        ("boolq", "train", 3),
        ("boolq", "validation", 2),
        ("piqa", "train", 4),
        ("piqa", "validation", 1),
    ):
        (tmp_path / set_name).mkdir(exist_ok=True)
        rows = [commonsense_row(set_name, split, i) for i in range(n)]
        (tmp_path / set_name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _task_cfg("commonsense", data_dir=str(tmp_path))
    cfg["sets"] = {k: v for k, v in cfg["sets"].items() if k in ("boolq", "piqa")}
    task = load_task(cfg, BYTES, cache_dir=tmp_path / "cache")
    assert len(task.train_set) == 7 and task.eval_examples == 3
    gold = commonsense_row("piqa", "validation", 0)["label"]
    assert task.dev_sets["piqa"][1] == [f"solution{gold + 1}"]
    cfg["sets"]["piqa"]["eval_split"] = "test"
    with pytest.raises(ConfigError, match="piqa/test.jsonl is missing"):
        load_task(cfg, BYTES, cache_dir=None)


# -- GSM8K ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("so 2 + 2 = 4. The answer is: $5.50.", "5.5"),
        ("The answer is 72.00", "72"),
        ("It costs -3 dollars, then 12", "12"),  # no marker: the last number
        ("#### 8\nQuestion: 99 cats", "8"),  # a rambling model: the first marker's number
        ("no digits here", None),
        ("#### -40", "-40"),
        ("#### \u22124", "-4"),  # the Unicode minus sign, not a positive 4
        ("The temperature falls to \u22123.5 degrees", "-3.5"),
        ("#### .5", "0.5"),  # a bare fraction, not 5
        ("so she keeps .25 of it", "0.25"),
        ("The answer is 5.", "5"),  # a full stop after the number is not a fraction
        ("#### 0.0000005", "0.0000005"),  # positional, never "5E-7" (str of a small Decimal)
    ],
)
def test_the_final_number_is_read_after_the_marker_or_last(text, expected):
    assert final_number(text) == expected


def test_gsm8k_exact_match_compares_numbers_not_strings():
    metrics = exact_match(["#### 1,000", "The answer is 7.0", "no idea", "#### 3"], ["1000", "7", "5", "4"])
    assert metrics == {"exact_match": 0.5, "no_number": 0.25}


def test_gsm8k_exact_match_refuses_generations_that_do_not_pair_with_the_answers():
    # zip would score 1 generation against the first of 2 answers: 0.5, not an error
    with pytest.raises(ValueError, match="^1 generations for 2 answers$"):
        exact_match(["#### 3"], ["3", "4"])
    with pytest.raises(ValueError, match="^0 generations for 0 answers$"):
        exact_match([], [])


def test_gsm8k_reads_local_files_and_refuses_a_test_answer_without_a_number(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(gsm8k_row("train", i)) + "\n" for i in range(5)))
    test.write_text("".join(json.dumps(gsm8k_row("test", i)) + "\n" for i in range(3)))
    cfg = _task_cfg("gsm8k", train_file=str(train), test_file=str(test), dev_size=1)
    task = load_task(cfg, BYTES, cache_dir=None)
    assert (
        len(task.train_set) == 4
        and len(task.dev.gold) == 1
        and task.gold == [final_number(gsm8k_row("test", i)["answer"]) for i in range(3)]
    )
    labels = task.train_set[0]["labels"].tolist()
    assert labels[-1] == 1 and bytes(t - 3 for t in labels if t > 2).decode().startswith(" She has")
    test.write_text(json.dumps({"question": "q", "answer": "none"}) + "\n")
    with pytest.raises(DataError, match="states no final number"):
        load_task(cfg, BYTES, cache_dir=None)


# -- instruct ------------------------------------------------------------------------------------


def test_instruct_exact_match_ignores_surrounding_and_repeated_whitespace_only():
    assert instruct_exact_match([" Paris ", "a  b", "paris"], ["Paris", "a b", "Paris"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="^2 generations for 3 references$"):
        instruct_exact_match(["Paris", "Rome"], ["Paris", "Rome", "Oslo"])  # zip would score it 1.0
    with pytest.raises(ValueError, match="^0 generations for 0 references$"):
        instruct_exact_match([], [])


def test_instruct_evaluate_adds_exact_match_to_the_dev_loss_only_with_prompts(tmp_path):
    rows = [{"q": f"say {i}", "a": f"{i}"} for i in range(4)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _task_cfg("instruct", train_file=str(path), dev_file=str(path), prompt_field="q", response_field="a")
    cfg["template"] = "Q: {prompt}\nA:"
    cpu, calls = torch.device("cpu"), []

    def response_loss(model, dataset, **kwargs):
        calls.append(("loss", model, dataset, kwargs))
        return {"loss": 0.5, "token_accuracy": 0.25}

    def generate(model, prompts, **kwargs):
        calls.append(("generate", model, prompts, kwargs))
        return [" 0", "1", "two", "3 "]  # 3 of the 4 references after normalising

    settings = {"batch_size": 3, "device": cpu, "autocast": contextlib.nullcontext}
    without = load_task(cfg, BYTES, cache_dir=None)
    without.response_loss, without.generate = response_loss, generate
    assert without.evaluate("model", **settings) == {"loss": 0.5, "token_accuracy": 0.25}
    assert calls == [("loss", "model", without.dev, settings)]
    calls.clear()
    task = load_task({**cfg, "exact_match": True}, BYTES, cache_dir=None)
    task.response_loss, task.generate = response_loss, generate
    assert task.evaluate("model", **settings) == {"loss": 0.5, "token_accuracy": 0.25, "exact_match": 0.75}
    assert calls == [
        ("loss", "model", task.dev, settings),
        ("generate", "model", task.prompts, {**settings, "desc": "dev"}),
    ]


def test_instruct_reads_its_fields_through_the_template_and_checks_its_main_metric(tmp_path):
    rows = [{"q": f"say {i}", "a": f"{i}"} for i in range(4)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _task_cfg("instruct", train_file=str(path), dev_file=str(path), prompt_field="q", response_field="a")
    cfg["template"] = "Q: {prompt}\nA:"
    task = load_task(cfg, BYTES, cache_dir=None)
    first = task.train_set[0]
    prompt_length = len(byte_ids("Q: say 0\nA:"))
    assert first["input_ids"].tolist() == byte_ids("Q: say 0\nA:0") + [1]
    assert first["labels"].tolist() == [-100] * prompt_length + byte_ids("0") + [1]
    assert task.prompts is None and task.main_metric == "token_accuracy"
    with pytest.raises(ConfigError, match="exact_match with task.exact_match=true"):
        load_task({**cfg, "main_metric": "exact_match"}, BYTES, cache_dir=None)
    with pytest.raises(ConfigError, match="must contain"):
        load_task({**cfg, "template": "no slot"}, BYTES, cache_dir=None)


def _task_cfg(name: str, **overrides) -> dict:
    import yaml

    cfg = yaml.safe_load((CONF_DIR / "task" / f"{name}.yaml").read_text())
    return {**cfg, **overrides}


def test_the_data_fingerprint_sees_a_changed_gold_answer_and_not_the_path(tmp_path):
    def fingerprint(folder, answer):
        folder.mkdir(exist_ok=True)
        train, test = folder / "train.jsonl", folder / "test.jsonl"
        train.write_text("".join(json.dumps(gsm8k_row("train", i)) + "\n" for i in range(3)))
        test.write_text(json.dumps({"question": "How many?", "answer": f"#### {answer}"}) + "\n")
        cfg = _task_cfg("gsm8k", train_file=str(train), test_file=str(test), dev_size=1)
        return load_task(cfg, BYTES, cache_dir=None).data_fingerprint()

    assert fingerprint(tmp_path / "a", 7) == fingerprint(tmp_path / "b", 7)  # the same rows elsewhere
    assert fingerprint(tmp_path / "a", 7) != fingerprint(tmp_path / "a", 8)  # the gold number is data too
    cfg = _task_cfg("commonsense-synthetic")
    cfg = {**_task_cfg("commonsense"), **{k: v for k, v in cfg.items() if k != "defaults"}}
    first = load_task(cfg, BYTES, cache_dir=None).data_fingerprint()
    assert load_task({**cfg, "max_eval_per_set": 2}, BYTES, cache_dir=None).data_fingerprint() != first
