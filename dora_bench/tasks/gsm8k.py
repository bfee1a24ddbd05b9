"""Grade-school maths: train on GSM8K's or MetaMathQA's worked solutions, score the final number on GSM8K test.

Prompt ``Question: <question>\\nAnswer:``; the response is the source's solution as it is
(GSM8K's ends ``#### 72``, MetaMathQA's ``The answer is: 72``). Evaluation decodes greedily and
compares the final number of the generation with GSM8K's (``exact_match``): the number after the
first ``####`` or ``The answer is``, else the last number in the text; ``1,000``, ``$1000`` and
``1000.00`` are the same number. ``no_number`` is the share of generations holding none.
Rows: the Hub, local files (``task.train_file``, ``task.test_file``), or generated additions
(``task.synthetic``, ``synthetic.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import positive_int, register_family, require
from dora_bench.tasks.batching import EncodedDataset, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, report_cut
from dora_bench.tasks.commonsense import _count
from dora_bench.tasks.readers import load_hub_split, read_table
from dora_bench.tasks.synthetic import ROWS
from dora_bench.tasks.synthetic import rows as synthetic_rows

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
MARKERS = re.compile(r"####|the answer is", re.IGNORECASE)


def canonical_number(text: str) -> str | None:
    """``"$1,000.50"`` -> ``"1000.5"``, ``"72.00"`` -> ``"72"``; None if ``text`` is no number."""
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def final_number(text: str) -> str | None:
    """The answer a solution or a generation states, canonical (see ``canonical_number``)."""
    marker = MARKERS.search(text)
    if marker:
        after = NUMBER.search(text, marker.end())
        if after:
            return canonical_number(after.group())
    numbers = NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else None


def exact_match(generations: list[str], gold: list[str]) -> dict[str, float]:
    """``exact_match``: the share of generations whose final number equals the gold one; ``no_number``."""
    if len(generations) != len(gold) or not gold:
        raise ValueError(f"{len(generations)} generations for {len(gold)} answers")
    predicted = [final_number(text) for text in generations]
    return {
        "exact_match": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
        "no_number": sum(p is None for p in predicted) / len(gold),
    }


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


class GSM8KTask(CausalLMTask):
    main_metric = "exact_match"

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        test: EncodedDataset,
        gold: list[str],
        tokenizer: PreTrainedTokenizerBase,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, train, tokenizer, **kwargs)
        self.test, self.gold = test, gold
        self.eval_examples = len(gold)

    def data_parts(self) -> list:
        return [self.train_set, self.test, self.gold]

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        texts = self.generate(model, self.test, batch_size=batch_size, device=device, autocast=autocast, desc="gsm8k")
        return exact_match(texts, self.gold)


def load_gsm8k(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None) -> GSM8KTask:
    name = require(cfg, "name")
    sources = require(cfg, "sources")
    train_source = require(cfg, "train_source", f"one of {', '.join(sources)}")
    if train_source not in sources:
        raise ConfigError(f"task.train_source={train_source!r} is not known: use one of {', '.join(sources)}")
    max_length = positive_int(cfg, "max_length")
    settings = {
        "task": name,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": max_length,
        "prompt": prompt("{question}"),  # a changed prompt never reads stale encodings
        "rows": ROWS if cfg.get("synthetic") else None,
    }

    def rows(
        source: Mapping[str, Any], file_key: str, limit: int | None
    ) -> tuple[dict[str, Any], Callable[[], list[tuple[str, str]]]]:
        """(identity, a function returning [(question, solution)]) from a local file or the Hub."""
        question, solution = require(source, "question_field"), require(source, "answer_field")
        if cfg.get("synthetic"):
            split = "test" if file_key == "test_file" else "train"
            count = _count(cfg["synthetic"], "eval" if split == "test" else "train")
            identity = {"synthetic": count, "split": split}

            def read() -> list[dict]:
                return [{question: r["question"], solution: r["answer"]} for r in synthetic_rows("gsm8k", split, count)]

        elif cfg.get(file_key):
            path = Path(cfg[file_key]).expanduser()
            identity, read = cache.file_identity(path), lambda: [r.values for r in read_table(path)]
        else:
            hub_id, config, split = require(source, "hub_id"), source.get("hub_config"), require(source, "split")
            identity = {"hub_id": hub_id, "config": config, "split": split}
            read = lambda: load_hub_split(hub_id, config, split, hint=f"task.{file_key}=<file.jsonl>")  # noqa: E731

        def pairs() -> list[tuple[str, str]]:
            out = []
            for i, row in enumerate(read()):
                if limit is not None and i >= int(limit):
                    break
                if row.get(question) is None or row.get(solution) is None:
                    raise DataError(f"{identity} row {i + 1}: needs the fields {question!r} and {solution!r}")
                out.append((str(row[question]), str(row[solution])))
            return out

        return {**identity, "fields": [question, solution], "limit": limit}, pairs

    identity, train_pairs = rows(sources[train_source], "train_file", cfg.get("max_train_examples"))

    def build_train() -> dict:
        examples = [Example(prompt(q), " " + a) for q, a in train_pairs()]
        encoded, cut = encode_examples(tokenizer, examples, max_length)
        report_cut(name, "train", cut, len(examples))
        return encoded

    train = cache.cached(cache_dir, f"{name}-train", {**settings, "data": identity}, build_train)
    identity, test_pairs = rows(require(cfg, "test"), "test_file", cfg.get("max_eval_examples"))

    def build_test() -> dict:
        pairs = test_pairs()
        gold = [final_number(a) for _, a in pairs]
        if None in gold:
            raise DataError(f"test row {gold.index(None) + 1} of {identity}: its answer states no final number")
        return {**encode_prompts(tokenizer, [prompt(q) for q, _ in pairs], max_length), "gold": gold}

    test = cache.cached(cache_dir, f"{name}-test", {**settings, "data": identity}, build_test)
    return GSM8KTask(
        name,
        EncodedDataset({key: Ragged.from_dict(train[key]) for key in ("input_ids", "labels")}),
        EncodedDataset({"input_ids": Ragged.from_dict(test["input_ids"])}),
        test["gold"],
        tokenizer,
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
    )


register_family("gsm8k", load_gsm8k, model_kind=GSM8KTask.model_kind)
