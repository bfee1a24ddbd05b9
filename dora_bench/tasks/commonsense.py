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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import positive_int, register_family, require
from dora_bench.tasks.batching import EncodedDataset, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, report_cut
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


def score(generations: Mapping[str, list[str]], answers: Mapping[str, list[str]]) -> dict[str, float]:
    """Accuracy per set, ``avg`` (the unweighted mean over sets, as the papers' Avg. column) and
    ``unparsed`` (the share of all generations without an answer word)."""
    metrics, unparsed, total = {}, 0, 0
    for name, texts in generations.items():
        parsed = [parse_answer(name, text) for text in texts]
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
        **kwargs: Any,
    ) -> None:
        super().__init__(name, train, tokenizer, **kwargs)
        self.dev_sets = dev_sets
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
        return score(generations, {name: answers for name, (_, answers) in self.dev_sets.items()})


def load_commonsense(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> CommonsenseTask:
    name = require(cfg, "name")
    sources = require(cfg, "sets", "a mapping {set: {hub_id, hub_config, train_split, eval_split}}")
    unknown = sorted(set(sources) - set(SETS))
    if unknown:
        raise ConfigError(f"task.sets: unknown set(s) {', '.join(unknown)}: choose from {', '.join(SETS)}")
    data_dir = Path(cfg["data_dir"]).expanduser() if cfg.get("data_dir") else None
    synthetic = cfg.get("synthetic")  # {train: N, eval: M}: generated rows (tasks/synthetic.py)
    max_length = positive_int(cfg, "max_length")
    limits = {"train": cfg.get("max_train_per_set"), "eval": cfg.get("max_eval_per_set")}
    settings = {
        "task": name,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": max_length,
        "prompts": PROMPTS,
        "rows": ROWS if synthetic else None,
    }

    def read(set_name: str, which: str) -> tuple[dict, Callable[[], list[Example]]]:
        source = sources[set_name]
        split = require(source, f"{which}_split", f"task.sets.{set_name}.{which}_split")
        make_prompt = SETS[set_name][0]
        limit = limits[which]

        def examples(rows: Iterable[Mapping[str, Any]]) -> list[Example]:
            out = []
            for i, row in enumerate(rows):
                if limit is not None and i >= int(limit):
                    break
                try:
                    prompt, answer = make_prompt(row)
                except (KeyError, TypeError, ValueError) as err:
                    raise DataError(
                        f"{set_name} {split} row {i + 1}: {type(err).__name__} {err}: check its fields"
                    ) from None
                out.append(Example(prompt, " " + answer, answer))
            if not out:
                raise DataError(f"{set_name} {split}: no examples")
            return out

        if synthetic:
            count = _count(synthetic, which)
            return {"synthetic": count, "split": split, "limit": limit}, lambda: examples(
                synthetic_rows("commonsense", split, count, set_name)
            )
        if data_dir is not None:
            path = data_dir / set_name / f"{split}.jsonl"
            if not path.is_file():
                raise ConfigError(f"{path} is missing: task.data_dir holds <set>/<split>.jsonl for each set")
            return {**cache.file_identity(path), "limit": limit}, lambda: examples(r.values for r in read_table(path))
        hub_id = require(source, "hub_id", f"task.sets.{set_name}.hub_id, or task.data_dir for local files")
        config = source.get("hub_config")
        identity = {"hub_id": hub_id, "config": config, "split": split, "limit": limit}
        hint = f"task.data_dir=<dir> with {set_name}/{split}.jsonl"
        return identity, lambda: examples(load_hub_split(hub_id, config, split, hint=hint))

    train_parts, dev_sets = [], {}
    for set_name in sources:
        identity, rows = read(set_name, "train")

        def build_train(rows: Callable[[], list[Example]] = rows, set_name: str = set_name) -> dict:
            encoded, cut = encode_examples(tokenizer, rows(), max_length)
            report_cut(set_name, "train", cut, len(encoded["input_ids"]["offsets"]) - 1)
            return encoded

        train_parts.append(
            cache.cached(cache_dir, f"{name}-{set_name}-train", {**settings, "data": identity}, build_train)
        )
        identity, rows = read(set_name, "eval")

        def build_eval(rows: Callable[[], list[Example]] = rows) -> dict:
            examples = rows()
            return {
                **encode_prompts(tokenizer, [e.prompt for e in examples], max_length),
                "answers": [e.answer for e in examples],
            }

        state = cache.cached(cache_dir, f"{name}-{set_name}-eval", {**settings, "data": identity}, build_eval)
        dev_sets[set_name] = (EncodedDataset({"input_ids": Ragged.from_dict(state["input_ids"])}), state["answers"])
    train = EncodedDataset(
        {key: Ragged.concat([Ragged.from_dict(part[key]) for part in train_parts]) for key in ("input_ids", "labels")}
    )
    return CommonsenseTask(name, train, dev_sets, tokenizer, max_new_tokens=positive_int(cfg, "max_new_tokens"))


def _count(synthetic: Mapping[str, Any], which: str) -> int:
    count = synthetic.get(which) if isinstance(synthetic, Mapping) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"task.synthetic.{which}={count!r}: give task.synthetic={{train: N, eval: M}} with N, M >= 1")
    return count


register_family("commonsense", load_commonsense, model_kind=CommonsenseTask.model_kind)
