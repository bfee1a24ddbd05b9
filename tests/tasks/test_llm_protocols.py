"""GSM8K's epoch selection on a held-out dev slice, and LLM-Adapters' protocol: their JSON files, template,
loss on prompt and response, answer extraction, beam search, all on small files written here in their format."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import yaml
from test_causal_lm import BYTES, byte_ids, ragged

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import llm_adapters as la
from dora_bench.tasks import load_task
from dora_bench.tasks.causal_lm import row_chunks
from dora_bench.tasks.gsm8k import Problem, hold_out
from support import CONF_DIR


def task_cfg(name: str, **overrides) -> dict:
    cfg = yaml.safe_load((CONF_DIR / "task" / f"{name}.yaml").read_text())
    for parent in cfg.pop("defaults", []):
        if parent != "_self_":
            cfg = {**task_cfg(parent), **cfg}
    return {**cfg, **overrides}


# -- the dev slice ------------------------------------------------------------------------------------


def problems(n: int, letters: tuple[int, ...] = ()) -> list[Problem]:
    return [Problem(f"q{i}", f"s{i}", None if i in letters else str(i)) for i in range(n)]


def test_the_dev_slice_is_seeded_numeric_and_disjoint_from_training():
    train, dev = hold_out(problems(10, letters=(0, 1, 2)), 3, seed=0)
    again_train, again_dev = hold_out(problems(10, letters=(0, 1, 2)), 3, seed=0)
    assert [p.question for p in dev] == [p.question for p in again_dev]  # the seed fixes the slice
    assert len(dev) == 3 and len(train) == 7 and all(p.gold is not None for p in dev)
    assert {p.question for p in train} | {p.question for p in dev} == {f"q{i}" for i in range(10)}
    assert {"q0", "q1", "q2"} <= {p.question for p in train}  # letter answers are never dev: they train
    others = {tuple(p.question for p in hold_out(problems(10), 3, seed=s)[1]) for s in range(5)}
    assert len(others) > 1  # another seed, another slice
    with pytest.raises(ConfigError, match="task.dev_size=8 is too large"):
        hold_out(problems(10, letters=(0, 1, 2)), 8, seed=0)


class Scripted:
    """Stands in for ``generate``: the texts it returns depend on which prompts it is given."""

    def __init__(self, task, dev_texts, test_texts):
        self.by_rows = {id(task.dev.prompts): dev_texts, id(task.test.prompts): test_texts}

    def __call__(self, model, prompts, **kwargs):
        return self.by_rows[id(prompts)]


def test_gsm8k_selects_on_the_dev_slice_and_reports_test_beside_it(tmp_path):
    cfg = task_cfg("gsm8k-synthetic", synthetic={"train": 10, "eval": 4}, dev_size=4, dev_seed=3)
    task = load_task(cfg, BYTES, cache_dir=None)
    assert len(task.train_set) == 6 and len(task.dev.gold) == 4 and len(task.test.gold) == 4
    assert task.eval_examples == 8 and task.main_metric == "exact_match"
    dev_right = [f"#### {g}" for g in task.dev.gold[:3]] + ["no idea"]  # 3 of 4 right, 1 without a number
    test_right = [f"#### {g}" for g in task.test.gold[:1]] + ["#### 0"] * 3  # 1 of 4
    task.generate = Scripted(task, dev_right, test_right)
    metrics = task.evaluate(None, batch_size=2, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert metrics == {"exact_match": 0.75, "no_number": 0.25, "test_exact_match": 0.25, "test_no_number": 0.0}


def test_a_gsm8k_record_selects_on_dev_and_keeps_test_at_that_epoch(tiny_cfg):
    from dora_bench.run.train import train
    from support import TINY_LLM

    record = train(tiny_cfg(*TINY_LLM, "method=lora", "trainer.max_steps=4", "task.max_new_tokens=4"))
    assert record["config"]["task"]["dev_size"] == 16 and record["config"]["task"]["dev_seed"] == 0
    assert record["eval_examples"] == 16 + 16 and record["main_metric"] == "exact_match"
    best = record["best"]["metrics"]
    assert set(best) == {"exact_match", "no_number", "test_exact_match", "test_no_number"}
    assert max(e["metrics"]["exact_match"] for e in record["epochs"]) == best["exact_match"]


# -- LLM-Adapters' files -------------------------------------------------------------------------------


def write_json(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=4))
    return str(path)


def adapters_row(instruction, answer, output=None):
    return {"instruction": instruction, "input": "", "output": output or f"the correct answer is {answer}",
            "answer": answer}  # fmt: skip


def test_the_template_is_theirs_to_the_space():
    text = la.train_text({"instruction": "Is it?", "input": "", "output": "the correct answer is true"})
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.  "
        "\n\n                ### Instruction:\n                Is it?\n                \n"
        "                ### Response:\n                the correct answer is true"
    )
    prompt = la.eval_prompt("Is it?")
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
        "\n\n                ### Instruction:\n                Is it?\n\n"
        "                ### Response:\n                "
    )
    with_input = la.eval_prompt("Add.", "2 and 3")
    assert "further context. Write a response that appropriately completes the request.\n\n" in with_input
    assert "\n                ### Input:\n                2 and 3\n\n                ### Response:\n" in with_input


def test_the_loss_sees_prompt_and_response_and_the_cut_keeps_the_start():
    encoded, cut = la.encode_full(BYTES, ["abc", "abcdefgh"], max_length=6)
    # ByT5 puts its end token after every text: "abc</s>" fits; the long one keeps its first 6 tokens
    assert ragged(encoded["input_ids"]) == [byte_ids("abc") + [1], byte_ids("abcdef")]
    assert ragged(encoded["labels"]) == ragged(encoded["input_ids"]) and cut == 1


@pytest.mark.parametrize(
    ("set_name", "generation", "expected"),
    [
        ("boolq", "the correct answer is true", "true"),
        ("boolq", "the correct answer is True", None),  # theirs is case-sensitive
        ("piqa", "solution2 or solution1", "solution2"),
        ("siqa", "answer12", "answer1"),  # no word boundary in theirs
        ("hellaswag", "### Response: ending3 ### Response: ending1", "ending1"),  # after the last mark
        ("winogrande", "option3", None),
        ("arc_c", "the correct answer is answer5", "answer5"),
    ],
)
def test_commonsense_answers_are_read_as_their_extract_answer_reads_them(set_name, generation, expected):
    assert la.commonsense_answer(set_name, generation) == expected


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("She has 3 + 4 = 7 apples. The answer is 7.", 7.0),
        ("It costs 1,250 dollars", 1250.0),
        ("The answer is -3", -3.0),
        ("no number", None),
        ("12 ### Response: 99", 12.0),  # up to their split's first part
    ],
)
def test_maths_answers_are_the_last_number_as_their_extract_answer_number_reads_them(generation, expected):
    assert la.math_answer(generation) == expected


def test_maths_scores_within_their_tolerance():
    scores = la.math_score(["The answer is 7.0004", "8", "none"], ["7.0", "9.0", "1.0"])
    assert scores == {"exact_match": pytest.approx(1 / 3), "no_number": pytest.approx(1 / 3)}
    # exactly the tolerance away still counts (their `abs(label - pred) <= miss`): 0.001 - 0 is 0.001
    assert la.math_score(["The answer is 0"], ["0.001"])["exact_match"] == 1.0


def test_maths_scoring_refuses_generations_that_do_not_pair_with_the_answers():
    # zip would score 1 generation against the first of 2 answers: 0.5, not an error
    with pytest.raises(ValueError, match="^1 generations for 2 answers$"):
        la.math_score(["7"], ["7", "8"])
    with pytest.raises(ValueError, match="^0 generations for 0 answers$"):
        la.math_score([], [])


def test_a_gold_answer_is_read_without_its_thousands_commas_and_a_letter_is_none():
    assert la.gold_number("1,234.5") == 1234.5 and la.gold_number(12) == 12.0 and la.gold_number("C") is None


def test_commonsense_reads_their_training_file_and_per_set_test_files(tmp_path):
    train = write_json(tmp_path / "commonsense_170k.json",
                       [adapters_row("Is a fig a fruit?", "true"), adapters_row("Pick one.", "solution2")])  # fmt: skip
    dataset = tmp_path / "dataset"
    tests = {
        "boolq": write_json(dataset / "boolq" / "test.json", [adapters_row("Is a plum a fruit?", "true")] * 2),
        "piqa": write_json(dataset / "piqa" / "test.json", [adapters_row("Which?", "solution1")]),
    }
    cfg = task_cfg("commonsense-llm-adapters", train_file=train, dataset_dir=str(dataset), test_files=tests)
    cfg["max_length"] = 1024  # bytes: the template alone is ~190
    cfg["sets"] = {k: v for k, v in cfg["sets"].items() if k in tests}
    task = load_task(cfg, BYTES, cache_dir=tmp_path / "cache")
    assert len(task.train_set) == 2 and task.eval_examples == 3 and task.num_beams == 4
    first = task.train_set[0]
    full = la.train_text(adapters_row("Is a fig a fruit?", "true"))
    assert first["input_ids"].tolist() == byte_ids(full) + [1] and first["labels"].tolist() == byte_ids(full) + [1]
    prompts, answers = task.dev_sets["boolq"]
    assert (
        prompts[0]["input_ids"].tolist() == byte_ids(la.eval_prompt("Is a plum a fruit?")) and answers == ["true"] * 2
    )
    generations = {"boolq": ["the correct answer is true", "false"], "piqa": ["solution1"]}
    task.generate = lambda model, prompts, desc, **kw: generations[desc]
    metrics = task.evaluate(None, batch_size=2, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert metrics["boolq"] == 0.5 and metrics["piqa"] == 1.0 and metrics["avg"] == 0.75
    only_dir = load_task({**cfg, "test_files": {}}, BYTES, cache_dir=None)  # the layout alone finds them
    assert only_dir.data_fingerprint() == task.data_fingerprint()
    with pytest.raises(ConfigError, match=r"task.test_files.piqa is not set: .*their dataset/piqa/test.json"):
        load_task({**cfg, "dataset_dir": None, "test_files": {"boolq": tests["boolq"]}}, BYTES, cache_dir=None)
    (tmp_path / "bad.json").write_text('{"instruction": "not a list"}')
    with pytest.raises(DataError, match="expected a non-empty JSON list"):
        load_task({**cfg, "train_file": str(tmp_path / "bad.json")}, BYTES, cache_dir=None)


def test_gsm8k_reads_math_10k_and_their_gsm8k_test_and_holds_out_numeric_rows(tmp_path):
    rows = [
        adapters_row(f"Add {i} and 1.", f"{i + 1}.0", f"{i} + 1 = {i + 1}. The answer is {i + 1}.") for i in range(6)
    ]
    rows.append(adapters_row("Pick a letter.", "B", "The answer is B."))  # AQuA's rows in math_10k: a letter
    train = write_json(tmp_path / "math_10k.json", rows)
    test = write_json(tmp_path / "dataset" / "gsm8k" / "test.json", [adapters_row("Add 2 and 2.", "4.0", "4")])
    cfg = task_cfg("gsm8k-llm-adapters", train_file=train, test_file=test, dev_size=2, max_length=1024)
    task = load_task(cfg, BYTES, cache_dir=None)
    assert len(task.train_set) == 5 and len(task.dev.gold) == 2 and task.test.gold == ["4.0"]
    assert all(gold != "B" for gold in task.dev.gold) and task.num_beams == 4 and task.max_new_tokens == 256
    assert task.test.prompts[0]["input_ids"].tolist() == byte_ids(la.eval_prompt("Add 2 and 2."))
    with pytest.raises(ConfigError, match="task.test_file is required by task.protocol=llm_adapters"):
        load_task({**cfg, "test_file": None}, BYTES, cache_dir=None)


# -- the dev loss in chunks of rows ----------------------------------------------------------------------


def test_row_chunks_cut_a_batch_and_keep_every_row_once():
    batch = {"input_ids": torch.arange(10).view(5, 2), "labels": torch.arange(10).view(5, 2)}
    pieces = row_chunks(batch, 2, batch_size=5)
    assert [p["input_ids"].shape[0] for p, _ in pieces] == [2, 2, 1] and all(scored for _, scored in pieces)
    assert torch.equal(torch.cat([p["input_ids"] for p, _ in pieces]), batch["input_ids"])
    assert len(row_chunks(batch, None, batch_size=5)) == 1


def test_the_chunked_dev_loss_equals_the_loss_of_whole_batches(tmp_path):
    from conftest import _tiny_model

    from dora_bench.tasks.batching import EncodedDataset, Ragged
    from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples

    model = _tiny_model("tiny-llama", "causal_lm").eval()
    examples = [Example(f"say {i} " * (1 + i % 4), f" {i * 7}") for i in range(11)]  # unequal lengths: padding
    encoded, _ = encode_examples(BYTES, examples, max_length=64)
    dev = EncodedDataset({k: Ragged.from_dict(encoded[k]) for k in ("input_ids", "labels")})
    scores = {}
    for rows in (None, 3, 1):
        task = CausalLMTask("t", dev, BYTES, max_new_tokens=1, loss_chunk_rows=rows)
        scores[rows] = task.response_loss(
            model, dev, batch_size=8, device=torch.device("cpu"), autocast=contextlib.nullcontext
        )
    assert scores[3]["loss"] == pytest.approx(scores[None]["loss"], rel=1e-6)
    assert scores[1]["loss"] == pytest.approx(scores[None]["loss"], rel=1e-6)
    assert scores[3]["token_accuracy"] == scores[None]["token_accuracy"] == scores[1]["token_accuracy"]
    assert 4 < scores[None]["loss"] < 7  # a random 259-token model: about ln(259) = 5.6 nats per token


# -- instruct checkpoints' chat template ---------------------------------------------------------------


def test_the_chat_template_wraps_the_prompt_once_with_one_begin_token(tmp_path):
    from test_causal_lm import bos_tokenizer

    tokenizer = bos_tokenizer()  # <pad> 0, <bos> 1, <eos> 2, a 3, b 4, c 5, d 6
    turns = "{% for m in messages %}{{ m['content'] }} b{% endfor %}"
    tokenizer.chat_template = "{{ bos_token }}" + turns + "{% if add_generation_prompt %} c{% endif %}"
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "d"}) + "\n")
    cfg = task_cfg("instruct", train_file=str(path), dev_file=str(path), template="{prompt}", chat_template=True)
    first = load_task(cfg, tokenizer, cache_dir=None).train_set[0]
    assert first["input_ids"].tolist() == [
        1,
        3,
        4,
        5,
        6,
        2,
    ]  # <bos> a (user turn) b (end of turn) c (assistant) d <eos>
    assert first["labels"].tolist() == [-100, -100, -100, -100, 6, 2]
    plain = load_task({**cfg, "chat_template": False}, tokenizer, cache_dir=None).train_set[0]
    assert plain["input_ids"].tolist() == [1, 3, 6, 2]
    with pytest.raises(ConfigError, match="has no chat template: use an instruct checkpoint's tokenizer"):
        load_task(cfg, BYTES, cache_dir=None)
