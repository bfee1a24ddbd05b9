"""Grade-school maths: train on worked solutions, select the epoch on held-out training problems, report GSM8K test.

Two protocols (``task.protocol``):

- ``own`` (this project's): prompt ``Question: <question>\\nAnswer:``; the response is the source's
  solution as it is (GSM8K's ends ``#### 72``, MetaMathQA's ``The answer is: 72``), the loss on the
  response only; greedy decoding. Exact match compares the final number of the generation with the
  gold one: the number after the first ``####`` or ``The answer is``, else the last number in the
  text; ``1,000``, ``$1000`` and ``1000.00`` are the same number, ``−4`` (Unicode minus) is -4 and
  ``.5`` is 0.5. Rows: the Hub, local files (``task.train_file``, ``task.test_file``), or generated
  additions (``task.synthetic``, ``synthetic.py``).
- ``llm_adapters``: LLM-Adapters' maths protocol (Hu et al., 2023): ``math_10k.json`` for training
  and their ``dataset/gsm8k/test.json``, both LLM-Adapters JSON files, through their template with
  the loss on prompt and response, beam search and their answer extraction (``llm_adapters.py``).

GSM8K has no dev split, so neither protocol selects on the test set: ``task.dev_size`` training
problems (with a numeric answer), drawn with ``random.Random(task.dev_seed)``, are held out of
training. Every evaluation scores both; the main metric ``exact_match`` (and ``no_number``, the
share of generations holding no number) is the dev slice's and picks the record's best epoch, and
``test_exact_match`` / ``test_no_number`` are the test set's at that epoch: what the tables report.
The slice's size and seed are in the record's ``config.task`` (``dev_size``, ``dev_seed``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache, llm_adapters
from dora_bench.tasks.base import positive_int, register_family, require
from dora_bench.tasks.batching import EncodedDataset, Ragged
from dora_bench.tasks.causal_lm import CausalLMTask, Example, encode_examples, encode_prompts, report_cut
from dora_bench.tasks.commonsense import synthetic_count
from dora_bench.tasks.readers import load_hub_split, read_table
from dora_bench.tasks.synthetic import ROWS, gsm8k_row

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase

#: a number as solutions write it: a sign (ASCII "-" or the Unicode minus "−"), an optional "$", digits with
#: thousands commas and decimals, or a bare fraction ".5"
NUMBER = re.compile(r"[-\u2212]?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
MARKERS = re.compile(r"####|the answer is", re.IGNORECASE)
PROTOCOLS = ("own", "llm_adapters")
NO_TRUNCATION = 10**9  # LLM-Adapters' evaluation tokenises prompts whole


def canonical_number(text: str) -> str | None:
    """``"$1,000.50"`` -> ``"1000.5"``, ``"72.00"`` -> ``"72"``, ``"−4"`` -> ``"-4"``, ``".5"`` -> ``"0.5"``;
    None if ``text`` is no number."""
    cleaned = text.replace(",", "").replace("$", "").replace("\u2212", "-").rstrip(".")
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


@dataclass(frozen=True)
class Problem:
    """One maths problem as read, whatever the file: the question, its worked solution, the gold number
    (canonical text; None when the row's answer is no number, e.g. AQuA's letters in math_10k.json)."""

    question: str
    solution: str
    gold: str | None
    context: str = ""  # LLM-Adapters' `input` field (empty in their maths files)


@dataclass(frozen=True)
class Scored:
    """Prompts to generate from and the gold number of each."""

    prompts: EncodedDataset
    gold: list[str]


class GSM8KTask(CausalLMTask):
    main_metric = "exact_match"  # the held-out dev slice's: it picks the epoch at which test is reported

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev: Scored,
        test: Scored,
        tokenizer: PreTrainedTokenizerBase,
        *,
        score: Callable[[list[str], list[str]], dict[str, float]] = exact_match,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, train, tokenizer, **kwargs)
        self.dev, self.test, self.score = dev, test, score
        self.eval_examples = len(dev.gold) + len(test.gold)

    @property
    def gold(self) -> list[str]:
        return self.test.gold

    def data_parts(self) -> list:
        return [self.train_set, self.dev.prompts, self.dev.gold, self.test.prompts, self.test.gold]

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        """The dev slice's scores (the main metric selects on them) and the test set's as ``test_<metric>``."""
        scores = {}
        for split, part in (("dev", self.dev), ("test", self.test)):
            texts = self.generate(
                model, part.prompts, batch_size=batch_size, device=device, autocast=autocast, desc=f"gsm8k {split}"
            )
            scores[split] = self.score(texts, part.gold)
        return {**scores["dev"], **{f"test_{key}": value for key, value in scores["test"].items()}}


# -- reading problems -----------------------------------------------------------------------------------


def own_problem(question: str, solution: str) -> Problem:
    return Problem(question, solution, final_number(solution))


def llm_adapters_problem(row: Mapping[str, Any]) -> Problem:
    gold = llm_adapters.gold_number(row.get("answer"))
    context = str(row.get("input") or "")
    return Problem(str(row["instruction"]), str(row.get("output", "")), None if gold is None else repr(gold), context)


def synthetic_problems(split: str, count: int, protocol: str) -> list[Problem]:
    """Generated additions (``synthetic.py``); for ``llm_adapters`` in math_10k.json's style of solution."""
    out = []
    for i in range(count):
        row = gsm8k_row(split, i)
        problem = own_problem(row["question"], row["answer"])
        if protocol == "llm_adapters":
            reasoning = row["answer"].split("\n####")[0]
            problem = Problem(row["question"], f"{reasoning} The answer is {problem.gold}.", f"{float(problem.gold)!r}")
        out.append(problem)
    return out


def file_problems(path: Path, fields: Sequence[str], protocol: str, limit: int | None) -> list[Problem]:
    if protocol == "llm_adapters":
        rows = llm_adapters.read_rows(path, "task.train_file / task.test_file")
        return [llm_adapters_problem(row) for row in rows[:limit]]
    question, solution = fields
    out = []
    for row in read_table(path)[:limit]:
        if row.get(question) is None or row.get(solution) is None:
            raise DataError(f"{row.where}: needs the fields {question!r} and {solution!r}")
        out.append(own_problem(str(row.values[question]), str(row.values[solution])))
    return out


def hub_problems(source: Mapping[str, Any], hint: str, limit: int | None) -> list[Problem]:
    question, solution = require(source, "question_field"), require(source, "answer_field")
    out = []
    for i, row in enumerate(load_hub_split(source["hub_id"], source.get("hub_config"), source["split"], hint=hint)):
        if limit is not None and i >= limit:
            break
        if row.get(question) is None or row.get(solution) is None:
            raise DataError(f"{source['hub_id']} row {i + 1}: needs the fields {question!r} and {solution!r}")
        out.append(own_problem(str(row[question]), str(row[solution])))
    return out


@dataclass(frozen=True)
class Reader:
    """Where one split's problems come from (``identity`` keys the token cache) and how to read them."""

    identity: dict[str, Any]
    read: Callable[[], list[Problem]]


def reader(cfg: Mapping[str, Any], source: Mapping[str, Any], split: str, limit: int | None) -> Reader:
    """The train (``split="train"``) or test problems: generated, a local file, or the Hub."""
    protocol, file_key = cfg["protocol"], f"{split}_file"
    if cfg.get("synthetic"):
        count = synthetic_count(cfg["synthetic"], "eval" if split == "test" else "train")
        return Reader({"synthetic": count, "split": split}, partial(synthetic_problems, split, count, protocol))
    fields = (source.get("question_field"), source.get("answer_field"))
    if cfg.get(file_key):
        path = Path(cfg[file_key]).expanduser()
        if not path.is_file():
            raise ConfigError(f"task.{file_key}={path} is missing: give an existing file")
        identity = {**cache.file_identity(path), "fields": list(fields), "limit": limit}
        return Reader(identity, partial(file_problems, path, fields, protocol, limit))
    if protocol == "llm_adapters":
        what = "math_10k.json" if split == "train" else "dataset/gsm8k/test.json"
        raise ConfigError(
            f"task.{file_key} is required by task.protocol=llm_adapters: the path of LLM-Adapters' {what}"
        )
    identity = {"hub_id": require(source, "hub_id"), "config": source.get("hub_config"), "split": source.get("split")}
    hint = f"task.{file_key}=<file.jsonl>"
    return Reader({**identity, "fields": list(fields), "limit": limit}, partial(hub_problems, source, hint, limit))


# -- encoding -------------------------------------------------------------------------------------------


def hold_out(problems: list[Problem], size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """``(train, dev)``: ``size`` problems with a numeric answer drawn with ``random.Random(seed)`` form the
    dev slice (in file order); the rest, in file order, are trained on."""
    candidates = [i for i, p in enumerate(problems) if p.gold is not None]
    if size >= len(problems) or size > len(candidates):
        raise ConfigError(
            f"task.dev_size={size} is too large: {len(problems)} training problems, {len(candidates)} with a "
            f"numeric answer, and some must be left to train on; lower task.dev_size"
        )
    chosen = set(random.Random(seed).sample(candidates, size))
    train = [p for i, p in enumerate(problems) if i not in chosen]
    return train, [problems[i] for i in sorted(chosen)]


def eval_prompts(protocol: str, problems: Sequence[Problem]) -> list[str]:
    if protocol == "llm_adapters":
        return [llm_adapters.eval_prompt(p.question, p.context) for p in problems]
    return [prompt(p.question) for p in problems]


def encode_train(
    tokenizer: PreTrainedTokenizerBase, protocol: str, problems: Sequence[Problem], max_length: int
) -> tuple[dict, int]:
    if protocol == "llm_adapters":
        rows = [{"instruction": p.question, "input": p.context, "output": p.solution} for p in problems]
        texts = [llm_adapters.train_text(row) for row in rows]
        return llm_adapters.encode_full(tokenizer, texts, max_length)
    return encode_examples(tokenizer, [Example(prompt(p.question), " " + p.solution) for p in problems], max_length)


def encode_scored(
    tokenizer: PreTrainedTokenizerBase, protocol: str, problems: Sequence[Problem], max_length: int
) -> dict[str, Any]:
    length = NO_TRUNCATION if protocol == "llm_adapters" else max_length
    encoded = encode_prompts(tokenizer, eval_prompts(protocol, problems), length)["input_ids"]
    return {"input_ids": encoded, "gold": [p.gold for p in problems]}


def build_train_and_dev(
    tokenizer: PreTrainedTokenizerBase, cfg: Mapping[str, Any], read: Reader, name: str
) -> dict[str, Any]:
    train, dev = hold_out(read.read(), int(cfg["dev_size"]), int(cfg["dev_seed"]))
    encoded, cut = encode_train(tokenizer, cfg["protocol"], train, int(cfg["max_length"]))
    if cfg["protocol"] == "llm_adapters":
        llm_adapters.report_cut(name, cut, len(train))
    else:
        report_cut(name, "train", cut, len(train))
    return {**encoded, "dev": encode_scored(tokenizer, cfg["protocol"], dev, int(cfg["max_length"]))}


def build_test(tokenizer: PreTrainedTokenizerBase, cfg: Mapping[str, Any], read: Reader) -> dict[str, Any]:
    problems = read.read()
    missing = next((i for i, p in enumerate(problems) if p.gold is None), None)
    if missing is not None:
        raise DataError(f"test row {missing + 1} of {read.identity}: its answer states no final number")
    return encode_scored(tokenizer, cfg["protocol"], problems, int(cfg["max_length"]))


def scored(state: Mapping[str, Any]) -> Scored:
    return Scored(EncodedDataset({"input_ids": Ragged.from_dict(state["input_ids"])}), list(state["gold"]))


def check_config(cfg: Mapping[str, Any]) -> None:
    protocol = cfg.get("protocol", "own")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"task.protocol={protocol!r} is not known: use one of {', '.join(PROTOCOLS)}")
    for key in ("dev_size", "num_beams"):
        positive_int(cfg, key)
    if isinstance(cfg.get("dev_seed"), bool) or not isinstance(cfg.get("dev_seed"), int):
        raise ConfigError(f"task.dev_seed={cfg.get('dev_seed')!r} must be an integer (it draws the dev slice)")


def load_gsm8k(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None) -> GSM8KTask:
    cfg = {"protocol": "own", "num_beams": 1, **cfg}
    check_config(cfg)
    name, protocol = require(cfg, "name"), cfg["protocol"]
    sources = require(cfg, "sources")
    train_source = require(cfg, "train_source", f"one of {', '.join(sources)}")
    if train_source not in sources:
        raise ConfigError(f"task.train_source={train_source!r} is not known: use one of {', '.join(sources)}")
    max_length = positive_int(cfg, "max_length")
    settings = {
        "task": name,
        "protocol": protocol,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": max_length,
        "prompt": eval_prompts(protocol, [Problem("{question}", "", None)])[0],  # a changed prompt: new encodings
        "rows": ROWS if cfg.get("synthetic") else None,
    }
    train_reader = reader(cfg, sources[train_source], "train", cfg.get("max_train_examples"))
    selection = {"dev_size": int(cfg["dev_size"]), "dev_seed": int(cfg["dev_seed"])}
    train = cache.cached(
        cache_dir,
        f"{name}-train",
        {**settings, **selection, "data": train_reader.identity},
        partial(build_train_and_dev, tokenizer, cfg, train_reader, name),
    )
    test_reader = reader(cfg, require(cfg, "test"), "test", cfg.get("max_eval_examples"))
    test = cache.cached(
        cache_dir,
        f"{name}-test",
        {**settings, "data": test_reader.identity},
        partial(build_test, tokenizer, cfg, test_reader),
    )
    return GSM8KTask(
        name,
        EncodedDataset({key: Ragged.from_dict(train[key]) for key in ("input_ids", "labels")}),
        scored(train["dev"]),
        scored(test),
        tokenizer,
        score=llm_adapters.math_score if protocol == "llm_adapters" else exact_match,
        max_new_tokens=positive_int(cfg, "max_new_tokens"),
        num_beams=int(cfg["num_beams"]),
    )


register_family("gsm8k", load_gsm8k, model_kind=GSM8KTask.model_kind)
