"""Commonsense reasoning: eight multiple-choice sets, trained together, scored one by one.

BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge and OpenBookQA, as in the
commonsense table of weight-decomposed DoRA (Liu et al., 2024) and the LLM-Adapters line of work
before it: one model is trained on the union of the sets' training splits, and each set's
evaluation split is scored separately. The model answers in words (``true``, ``solution2``,
``answer3``, ``ending1``, ``option2``); the first such word in its greedy generation is its answer,
and a generation without one counts as wrong. Metrics: accuracy per set (``boolq``, ``piqa``...),
their unweighted mean ``avg`` (the tables' "Avg."), and ``unparsed``, the share of generations
holding no answer word.

Sources, per set (``task.sets.<name>`` in conf/task/commonsense.yaml): a Hub dataset, or with
``task.data_dir`` the files ``<data_dir>/<set>/<split>.jsonl``, one Hub row per line with the
Hub's field names (what ``datasets``' ``to_json`` writes), or with ``task.synthetic`` generated
toy rows of the same shape (``synthetic.py``).

``task.protocol=llm_adapters`` (``task=commonsense-llm-adapters``, ``experiment=llm_commonsense_dorawd``)
is weight-decomposed DoRA's own protocol instead: one training file, LLM-Adapters'
``commonsense_170k.json`` (``task.train_file``), one test file per set in LLM-Adapters' layout
``<dataset_dir>/<set>/test.json`` (``task.test_files.<set>``), their template with the loss on prompt and
response, beam search, and their answer extraction (``llm_adapters.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache, llm_adapters
from dora_bench.tasks.base import positive_int, register_family, require
from dora_bench.tasks.batching import EncodedDataset, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, report_cut
from dora_bench.tasks.llm_adapters import COMMONSENSE_FOLDERS
from dora_bench.tasks.readers import load_hub_split, read_table
from dora_bench.tasks.synthetic import ROWS
from dora_bench.tasks.synthetic import rows as synthetic_rows

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase

# -- prompts: one function per set, from a row with the Hub's fields to (prompt, answer word) -------

PROMPTS = 1  # bump when a prompt below changes: it keys the token cache, so stale encodings are never read


def _choices(words: str, options: list[str]) -> str:
    return "\n".join(f"{words}{i}: {text}" for i, text in enumerate(options, start=1))


def boolq(row: Mapping[str, Any]) -> tuple[str, str]:
    prompt = (
        f"Passage: {row['passage']}\nQuestion: {row['question']}?\n"
        f"Is the answer to the question true or false? Reply with true or false.\nAnswer:"
    )
    answer = row["answer"]
    if isinstance(answer, str):  # a jsonl written by hand may spell the boolean out
        answer = answer.strip().lower() == "true"
    return prompt, "true" if answer else "false"


def piqa(row: Mapping[str, Any]) -> tuple[str, str]:
    prompt = (
        f"Goal: {row['goal']}\n{_choices('solution', [row['sol1'], row['sol2']])}\n"
        f"Which solution reaches the goal? Reply with solution1 or solution2.\nAnswer:"
    )
    return prompt, f"solution{int(row['label']) + 1}"


def siqa(row: Mapping[str, Any]) -> tuple[str, str]:
    options = [row["answerA"], row["answerB"], row["answerC"]]
    prompt = (
        f"Context: {row['context']}\nQuestion: {row['question']}\n{_choices('answer', options)}\n"
        f"Which answer is right? Reply with answer1, answer2 or answer3.\nAnswer:"
    )
    return prompt, f"answer{int(row['label'])}"  # the Hub's labels are "1".."3"


def hellaswag(row: Mapping[str, Any]) -> tuple[str, str]:
    prompt = (
        f"Context: {row['ctx']}\n{_choices('ending', list(row['endings']))}\n"
        f"Which ending continues the context best? Reply with ending1, ending2, ending3 or ending4.\nAnswer:"
    )
    return prompt, f"ending{int(row['label']) + 1}"  # the Hub's labels are "0".."3"


def winogrande(row: Mapping[str, Any]) -> tuple[str, str]:
    prompt = (
        f"Sentence: {row['sentence']}\n{_choices('option', [row['option1'], row['option2']])}\n"
        f"Which option fills the blank (_)? Reply with option1 or option2.\nAnswer:"
    )
    return prompt, f"option{int(row['answer'])}"  # "1" / "2"


def _lettered(question: str, choices: Mapping[str, list], key: str) -> tuple[str, str]:
    """ARC and OpenBookQA: choices ``{"text": [...], "label": ["A", "B", ...]}`` (ARC also uses "1".."4")."""
    labels = [str(label) for label in choices["label"]]
    if str(key) not in labels:
        raise DataError(f"answer key {key!r} is none of the choices' labels {labels}")
    words = ", ".join(f"answer{i}" for i in range(1, len(labels) + 1))
    prompt = (
        f"Question: {question}\n{_choices('answer', list(choices['text']))}\n"
        f"Which answer is right? Reply with one of {words}.\nAnswer:"
    )
    return prompt, f"answer{labels.index(str(key)) + 1}"


def arc(row: Mapping[str, Any]) -> tuple[str, str]:
    return _lettered(row["question"], row["choices"], row["answerKey"])


def obqa(row: Mapping[str, Any]) -> tuple[str, str]:
    return _lettered(row["question_stem"], row["choices"], row["answerKey"])


#: set -> (prompt maker, the answer words its generations are searched for)
SETS: dict[str, tuple[Callable[[Mapping[str, Any]], tuple[str, str]], re.Pattern]] = {
    "boolq": (boolq, re.compile(r"\b(true|false)\b", re.IGNORECASE)),
    "piqa": (piqa, re.compile(r"\b(solution\s*[12])\b", re.IGNORECASE)),
    "siqa": (siqa, re.compile(r"\b(answer\s*[1-3])\b", re.IGNORECASE)),
    "hellaswag": (hellaswag, re.compile(r"\b(ending\s*[1-4])\b", re.IGNORECASE)),
    "winogrande": (winogrande, re.compile(r"\b(option\s*[12])\b", re.IGNORECASE)),
    "arc_e": (arc, re.compile(r"\b(answer\s*[1-5])\b", re.IGNORECASE)),
    "arc_c": (arc, re.compile(r"\b(answer\s*[1-5])\b", re.IGNORECASE)),
    "obqa": (obqa, re.compile(r"\b(answer\s*[1-4])\b", re.IGNORECASE)),
}


def parse_answer(set_name: str, text: str) -> str | None:
    """The first answer word of ``set_name`` in a generation, normalised (``"Answer 2."`` -> ``"answer2"``);
    None if there is none."""
    found = SETS[set_name][1].search(text)
    return re.sub(r"\s+", "", found.group(1)).lower() if found else None


def score(
    generations: Mapping[str, list[str]],
    answers: Mapping[str, list[str]],
    parse: Callable[[str, str], str | None] = parse_answer,
) -> dict[str, float]:
    """Accuracy per set, ``avg`` (the unweighted mean over sets, as the papers' Avg. column) and
    ``unparsed`` (the share of all generations without an answer word); ``parse(set, text)`` reads the
    answer of a generation (``llm_adapters.commonsense_answer`` for their protocol)."""
    metrics, unparsed, total = {}, 0, 0
    for name, texts in generations.items():
        parsed = [parse(name, text) for text in texts]
        gold = answers[name]
        if len(parsed) != len(gold) or not gold:
            raise ValueError(f"{name}: {len(parsed)} generations for {len(gold)} answers")
        metrics[name] = sum(p == g for p, g in zip(parsed, gold)) / len(gold)
        unparsed, total = unparsed + sum(p is None for p in parsed), total + len(parsed)
    metrics["avg"] = sum(metrics[name] for name in generations) / len(generations)
    metrics["unparsed"] = unparsed / total
    return metrics


class CommonsenseTask(CausalLMTask):
    main_metric = "avg"

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev_sets: dict[str, tuple[EncodedDataset, list[str]]],
        tokenizer: PreTrainedTokenizerBase,
        *,
        parse: Callable[[str, str], str | None] = parse_answer,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, train, tokenizer, **kwargs)
        self.dev_sets, self.parse = dev_sets, parse
        self.eval_examples = sum(len(answers) for _, answers in dev_sets.values())

    def data_parts(self) -> list:
        return [
            self.train_set,
            *(p for name, (prompts, answers) in self.dev_sets.items() for p in (name, prompts, answers)),
        ]

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        generations = {
            name: self.generate(model, prompts, batch_size=batch_size, device=device, autocast=autocast, desc=name)
            for name, (prompts, _) in self.dev_sets.items()
        }
        return score(generations, {name: answers for name, (_, answers) in self.dev_sets.items()}, self.parse)


# -- reading: this project's protocol, one source per set and split ----------------------------------


@dataclass(frozen=True)
class Reader:
    """Where some examples come from (``identity`` keys the token cache) and how to read them."""

    identity: dict[str, Any]
    read: Callable[[], list[Example]]


def set_examples(set_name: str, split: str, rows: Iterable[Mapping[str, Any]], limit: int | None) -> list[Example]:
    """A set's rows through its prompt (``SETS``), the first ``limit`` of them."""
    make_prompt = SETS[set_name][0]
    out = []
    for i, row in enumerate(rows):
        if limit is not None and i >= int(limit):
            break
        try:
            prompt, answer = make_prompt(row)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{set_name} {split} row {i + 1}: {type(err).__name__} {err}: check its fields") from None
        out.append(Example(prompt, " " + answer, answer))
    if not out:
        raise DataError(f"{set_name} {split}: no examples")
    return out


def synthetic_examples(set_name: str, split: str, count: int, limit: int | None) -> list[Example]:
    return set_examples(set_name, split, synthetic_rows("commonsense", split, count, set_name), limit)


def file_examples(set_name: str, split: str, path: Path, limit: int | None) -> list[Example]:
    return set_examples(set_name, split, (row.values for row in read_table(path)), limit)


def hub_examples(set_name: str, split: str, where: tuple[str, str | None, str], limit: int | None) -> list[Example]:
    hub_id, config, hint = where
    return set_examples(set_name, split, load_hub_split(hub_id, config, split, hint=hint), limit)


def set_reader(cfg: Mapping[str, Any], set_name: str, which: str) -> Reader:
    """One set's ``train`` or ``eval`` examples: generated, ``<data_dir>/<set>/<split>.jsonl``, or the Hub."""
    source = cfg["sets"][set_name]
    split = require(source, f"{which}_split", f"task.sets.{set_name}.{which}_split")
    limit = cfg.get(f"max_{which}_per_set")
    if cfg.get("synthetic"):
        count = synthetic_count(cfg["synthetic"], which)
        identity = {"synthetic": count, "split": split, "limit": limit}
        return Reader(identity, partial(synthetic_examples, set_name, split, count, limit))
    if cfg.get("data_dir"):
        path = Path(cfg["data_dir"]).expanduser() / set_name / f"{split}.jsonl"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: task.data_dir holds <set>/<split>.jsonl for each set")
        return Reader(
            {**cache.file_identity(path), "limit": limit}, partial(file_examples, set_name, split, path, limit)
        )
    hub_id = require(source, "hub_id", f"task.sets.{set_name}.hub_id, or task.data_dir for local files")
    config = source.get("hub_config")
    hint = f"task.data_dir=<dir> with {set_name}/{split}.jsonl"
    identity = {"hub_id": hub_id, "config": config, "split": split, "limit": limit}
    return Reader(identity, partial(hub_examples, set_name, split, (hub_id, config, hint), limit))


# -- reading: LLM-Adapters' files (task.protocol=llm_adapters) -----------------------------------------


def adapters_example(row: Mapping[str, Any]) -> Example:
    """A row of their training or test files: the evaluation prompt, the full training text as the
    response (``train_on_inputs``: the loss sees all of it), and the gold answer word."""
    prompt = llm_adapters.eval_prompt(str(row["instruction"]), row.get("input") or None)
    return Example(prompt, llm_adapters.train_text(row), str(row.get("answer", "")))


def synthetic_adapters_examples(split: str, count: int, set_names: list[str], limit: int | None) -> list[Example]:
    """Generated rows in LLM-Adapters' style (instruction, ``the correct answer is <word>``), for smoke runs."""
    out = []
    for set_name in set_names:
        for example in synthetic_examples(set_name, split, count, None):
            row = {"instruction": example.prompt, "input": "", "output": f"the correct answer is {example.answer}"}
            out.append(adapters_example({**row, "answer": example.answer}))
    return out[:limit]


def adapters_file_examples(path: Path, what: str, limit: int | None) -> list[Example]:
    return [adapters_example(row) for row in llm_adapters.read_rows(path, what)[:limit]]


def adapters_identity(path: Path, limit: int | None) -> dict[str, Any]:
    """A file's identity for the cache key; a missing file's path alone (reading it says it is missing)."""
    return {**(cache.file_identity(path) if path.is_file() else {"path": str(path)}), "limit": limit}


def adapters_train_reader(cfg: Mapping[str, Any]) -> Reader:
    limit = cfg.get("max_train_examples")
    if cfg.get("synthetic"):
        count = synthetic_count(cfg["synthetic"], "train")
        sets = list(cfg["sets"])
        return Reader(
            {"synthetic": count, "limit": limit}, partial(synthetic_adapters_examples, "train", count, sets, limit)
        )
    path = Path(require(cfg, "train_file", "the path of LLM-Adapters' commonsense_170k.json")).expanduser()
    return Reader(adapters_identity(path, limit), partial(adapters_file_examples, path, "task.train_file", limit))


def adapters_eval_reader(cfg: Mapping[str, Any], set_name: str) -> Reader:
    limit = cfg.get("max_eval_per_set")
    if cfg.get("synthetic"):
        count = synthetic_count(cfg["synthetic"], "eval")
        identity = {"synthetic": count, "limit": limit}
        return Reader(identity, partial(synthetic_adapters_examples, "eval", count, [set_name], limit))
    folder = COMMONSENSE_FOLDERS[set_name]
    path = (cfg.get("test_files") or {}).get(set_name)
    if not path and cfg.get("dataset_dir"):
        path = Path(cfg["dataset_dir"]) / folder / "test.json"  # LLM-Adapters' layout
    if not path:
        raise ConfigError(
            f"task.test_files.{set_name} is not set: give task.dataset_dir=<LLM-Adapters' dataset/ folder> "
            f"or task.test_files.{set_name}=<path of their dataset/{folder}/test.json>"
        )
    path = Path(path).expanduser()
    what = f"task.test_files.{set_name}"
    return Reader(adapters_identity(path, limit), partial(adapters_file_examples, path, what, limit))


# -- encoding and loading ----------------------------------------------------------------------------


def build_train(tokenizer: PreTrainedTokenizerBase, read: Reader, what: str, max_length: int, full: bool) -> dict:
    """Training sequences; ``full``: each example's response is the whole sequence, all of it labelled
    (LLM-Adapters' ``train_on_inputs``), else the prompt then the response, the response labelled."""
    examples = read.read()
    if full:
        encoded, cut = llm_adapters.encode_full(tokenizer, [e.response for e in examples], max_length)
        llm_adapters.report_cut(what, cut, len(examples))
    else:
        encoded, cut = encode_examples(tokenizer, examples, max_length)
        report_cut(what, "train", cut, len(examples))
    return encoded


def build_eval(tokenizer: PreTrainedTokenizerBase, read: Reader, max_length: int) -> dict:
    examples = read.read()
    return {
        **encode_prompts(tokenizer, [e.prompt for e in examples], max_length),
        "answers": [e.answer for e in examples],
    }


def eval_set(state: Mapping[str, Any]) -> tuple[EncodedDataset, list[str]]:
    return EncodedDataset({"input_ids": Ragged.from_dict(state["input_ids"])}), list(state["answers"])


def load_commonsense(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> CommonsenseTask:
    name = require(cfg, "name")
    sources = require(cfg, "sets", "a mapping {set: {hub_id, hub_config, train_split, eval_split}}")
    unknown = sorted(set(sources) - set(SETS))
    if unknown:
        raise ConfigError(f"task.sets: unknown set(s) {', '.join(unknown)}: choose from {', '.join(SETS)}")
    protocol = cfg.get("protocol", "own")
    if protocol not in ("own", "llm_adapters"):
        raise ConfigError(f"task.protocol={protocol!r} is not known: use own or llm_adapters")
    adapters = protocol == "llm_adapters"
    max_length = positive_int(cfg, "max_length")
    settings = {
        "task": name,
        "protocol": protocol,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": max_length,
        "prompts": PROMPTS,
        "rows": ROWS if cfg.get("synthetic") else None,
    }
    train_parts = []
    if adapters:  # one training file for all sets
        read = adapters_train_reader(cfg)
        build = partial(build_train, tokenizer, read, name, max_length, full=True)
        train_parts.append(cache.cached(cache_dir, f"{name}-train", {**settings, "data": read.identity}, build))
    else:
        for set_name in sources:
            read = set_reader(cfg, set_name, "train")
            build = partial(build_train, tokenizer, read, set_name, max_length, full=False)
            key = {**settings, "data": read.identity}
            train_parts.append(cache.cached(cache_dir, f"{name}-{set_name}-train", key, build))
    eval_length = 10**9 if adapters else max_length  # their evaluation tokenises prompts whole
    dev_sets = {}
    for set_name in sources:
        read = adapters_eval_reader(cfg, set_name) if adapters else set_reader(cfg, set_name, "eval")
        build = partial(build_eval, tokenizer, read, eval_length)
        dev_sets[set_name] = eval_set(
            cache.cached(cache_dir, f"{name}-{set_name}-eval", {**settings, "data": read.identity}, build)
        )
    train = EncodedDataset(
        {key: Ragged.concat([Ragged.from_dict(part[key]) for part in train_parts]) for key in ("input_ids", "labels")}
    )
    return CommonsenseTask(
        name,
        train,
        dev_sets,
        tokenizer,
        parse=llm_adapters.commonsense_answer if adapters else parse_answer,
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
        num_beams=positive_int({"num_beams": cfg.get("num_beams", 1)}, "num_beams"),
    )


def synthetic_count(synthetic: Mapping[str, Any], which: str) -> int:
    count = synthetic.get(which) if isinstance(synthetic, Mapping) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"task.synthetic.{which}={count!r}: give task.synthetic={{train: N, eval: M}} with N, M >= 1")
    return count


register_family("commonsense", load_commonsense, model_kind=CommonsenseTask.model_kind)
