"""SQuAD v1.1 / v2.0 extractive question answering (span start/end logits over the context).

Features. The question (at most ``max_query_length`` tokens) and a window of the context
form one feature of at most ``max_length`` tokens; long contexts give several windows
that overlap by ``doc_stride`` tokens (Hugging Face's ``stride`` convention). Training
targets are the answer's first and last token in the window; a window without the
whole answer, or a v2 question without one, targets position 0 (the "no answer" slot:
``<s>`` for RoBERTa, the first question byte for the byte tokenizer).

Offsets. Answers are cut from the context by each token's character span: the fast
(Rust) tokenizers return it (``return_offsets_mapping``); the byte tokenizer (ByT5,
slow, no offsets) maps one UTF-8 byte to one token, so a token's span is the character
that byte belongs to, computed here. Other slow tokenizers are refused.

Prediction (as in BERT's ``run_squad.py`` ``write_predictions``, kept by Hugging Face's
``utils_qa.postprocess_qa_predictions``): over all windows of a question, the best span
``argmax start_logit[s] + end_logit[e]`` among the 20 best starts and 20 best ends, with
``s <= e``, both in the context, at most 30 tokens. v2: answer "" when the null score
``start_logit[0] + end_logit[0]`` (lowest over the windows) beats the best span by more
than ``null_threshold`` (0).
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks import cache
from dora_bench.tasks.base import Task, evaluating, positive_int, register_family, require, to_device
from dora_bench.tasks.batching import EncodedDataset, Ragged, eval_batches
from dora_bench.tasks.metrics import squad_metrics
from dora_bench.tasks.readers import load_hub_split

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NOT_CONTEXT = -1  # offset of a token outside the context (question, special tokens)


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[str]  # gold texts; [] for a v2 question without an answer
    starts: list[int]  # character offsets of the answers in the context


# -- reading -------------------------------------------------------------------------------


def read_squad_json(path: Path) -> list[QAExample]:
    """Examples of an official SQuAD file: {"data": [{"paragraphs": [{"context", "qas"}]}]}."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: task.data_dir must hold the official SQuAD json files")
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not an official SQuAD json file ({type(err).__name__}: {err})") from None
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                examples.append(
                    _example(
                        qa["id"],
                        qa["question"],
                        paragraph["context"],
                        [a["text"] for a in answers],
                        [a["answer_start"] for a in answers],
                        f"{path} question {qa['id']}",
                    )
                )
    return examples


def _example(
    qid: str | int, question: str, context: str, texts: Sequence[str], starts: Sequence[int], where: str
) -> QAExample:
    for text, start in zip(texts, starts):
        if not (0 <= start and start + len(text) <= len(context)):
            raise DataError(f"{where}: answer_start {start} of {text!r} lies outside the context")
    return QAExample(str(qid), question.strip(), context, list(texts), list(starts))


def hub_examples(hub_id: str, split: str, revision: str | None, hint: str) -> list[QAExample]:
    ds = load_hub_split(hub_id, None, split, revision=revision, hint=hint)
    return [
        _example(
            r["id"],
            r["question"],
            r["context"],
            r["answers"]["text"],
            r["answers"]["answer_start"],
            f"{hub_id} {split} question {r['id']}",
        )
        for r in ds
    ]


# -- features ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair: prefix A middle B suffix."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> PairTemplate:
        enc = tokenizer("a", "b", return_special_tokens_mask=True)
        ids, special = enc["input_ids"], enc["special_tokens_mask"]
        text_positions = [i for i, s in enumerate(special) if not s]
        # the two texts are runs of non-special positions; the gap between them is `middle`
        gaps = [i for i in range(1, len(text_positions)) if text_positions[i] != text_positions[i - 1] + 1]
        if len(gaps) != 1:
            raise ConfigError(f"can't find where {type(tokenizer).__name__} separates a question from its context")
        a_end, b_start = text_positions[gaps[0] - 1] + 1, text_positions[gaps[0]]
        return cls(ids[: text_positions[0]], ids[a_end:b_start], ids[text_positions[-1] + 1 :])

    def __len__(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def context_tokens(
    tokenizer: PreTrainedTokenizerBase, contexts: Sequence[str]
) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """(token ids, character span of each token) of each context, no special tokens."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(list(contexts), add_special_tokens=False, return_offsets_mapping=True)
        return [(ids, [tuple(o) for o in offs]) for ids, offs in zip(enc["input_ids"], enc["offset_mapping"])]
    if type(tokenizer).__name__ != "ByT5Tokenizer":
        raise ConfigError(
            f"SQuAD needs character offsets: {type(tokenizer).__name__} has none; use a fast tokenizer "
            f"(tokenizer.json, or vocab.json+merges.txt) or backbone.tokenizer=bytes"
        )
    out = []
    for context in contexts:
        ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        spans = [(i, i + 1) for i, ch in enumerate(context) for _ in ch.encode("utf-8")]
        if len(ids) != len(spans):
            raise DataError(
                f"byte tokenizer gave {len(ids)} tokens for {len(spans)} bytes of a context "
                f"(it holds a special token's text?): {context[:60]!r}"
            )
        out.append((ids, spans))
    return out


def build_features(
    examples: Sequence[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    doc_stride: int,
    max_query_length: int,
    train: bool,
) -> dict:
    """Windows of every example, as tensors (see the module docstring).

    train: ``input_ids``, ``start_positions``, ``end_positions``.
    eval: ``input_ids``, ``example_index`` and ``offsets`` (a token's character span in
    its context, ``(-1, -1)`` outside the context).
    """
    template = PairTemplate.of(tokenizer)
    unique = list(dict.fromkeys(e.context for e in examples))
    tokenized = dict(zip(unique, context_tokens(tokenizer, unique)))
    questions = tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]
    input_ids, starts, ends, example_index, offsets = [], [], [], [], []
    for index, (example, question) in enumerate(zip(examples, questions)):
        question = question[:max_query_length]
        ids, spans = tokenized[example.context]
        window = max_length - len(question) - len(template)
        if window <= doc_stride:
            raise ConfigError(
                f"task.max_length={max_length} leaves {window} context tokens per window, not more than "
                f"task.doc_stride={doc_stride}: raise max_length or lower doc_stride"
            )
        context_start = len(template.prefix) + len(question) + len(template.middle)
        answer = _answer_tokens(example, spans) if train else None
        first = 0
        while True:
            last = min(first + window, len(ids))
            input_ids.append(template.prefix + question + template.middle + ids[first:last] + template.suffix)
            if train:
                inside = answer is not None and first <= answer[0] and answer[1] < last
                starts.append(answer[0] - first + context_start if inside else 0)
                ends.append(answer[1] - first + context_start if inside else 0)
            else:
                example_index.append(index)
                offsets.append(
                    [(NOT_CONTEXT, NOT_CONTEXT)] * context_start
                    + spans[first:last]
                    + [(NOT_CONTEXT, NOT_CONTEXT)] * len(template.suffix)
                )
            if last == len(ids):
                break
            first += window - doc_stride
    features = {"input_ids": Ragged.from_rows(input_ids).to_dict()}
    if train:
        features["start_positions"] = torch.tensor(starts, dtype=torch.long)
        features["end_positions"] = torch.tensor(ends, dtype=torch.long)
    else:
        features["example_index"] = torch.tensor(example_index, dtype=torch.long)
        features["offsets"] = Ragged.from_rows(offsets, trailing=(2,)).to_dict()
    return features


def _answer_tokens(example: QAExample, spans: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """First and last context token overlapping the first answer (None: no answer, or it covers no token)."""
    if not example.answers:
        return None
    char_start = example.starts[0]
    char_end = char_start + len(example.answers[0])
    # spans are in text order: token ends and token starts both never decrease
    first = bisect.bisect_right([end for _, end in spans], char_start)
    last = bisect.bisect_left([start for start, _ in spans], char_end) - 1
    return (first, last) if first <= last else None


# -- prediction ----------------------------------------------------------------------------


def best_answers(
    contexts: Sequence[str],
    example_index: Sequence[int],
    offsets: Sequence[np.ndarray],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_threshold: float = 0.0,
) -> list[str]:
    """The predicted answer text of every example, from the logits of its features.

    ``offsets[f]`` is ``(len_f, 2)`` character spans (-1 outside the context); logits are
    ``(len_f,)``. See the module docstring for the rule.
    """
    best_score = np.full(len(contexts), -np.inf)
    best_text = [""] * len(contexts)
    null_score = np.full(len(contexts), np.inf)
    for f, example in enumerate(example_index):
        start, end, spans = start_logits[f], end_logits[f], offsets[f]
        null_score[example] = min(null_score[example], start[0] + end[0])
        top_starts = np.argsort(start)[::-1][:n_best]
        top_ends = np.argsort(end)[::-1][:n_best]
        for s in top_starts:
            if spans[s][0] == NOT_CONTEXT:
                continue
            for e in top_ends:
                if spans[e][0] == NOT_CONTEXT or e < s or e - s + 1 > max_answer_length:
                    continue
                score = start[s] + end[e]
                if score > best_score[example]:
                    best_score[example] = score
                    best_text[example] = contexts[example][spans[s][0] : spans[e][1]].strip()
    if allow_null:
        return ["" if null_score[i] > best_score[i] + null_threshold else text for i, text in enumerate(best_text)]
    return best_text


# -- the task ------------------------------------------------------------------------------


class SquadTask(Task):
    model_kind = "question_answering"
    num_labels = 2  # a start and an end logit per token (the QA head's size is fixed)

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        dev: EncodedDataset,
        dev_offsets: Ragged,
        dev_examples: dict[str, list],
        *,
        pad_token_id: int,
        main_metric: str,
        version_2: bool,
        n_best: int,
        max_answer_length: int,
        null_threshold: float,
    ) -> None:
        super().__init__(name, train, pad_token_id)
        self.main_metric = main_metric
        self.dev, self.dev_offsets, self.dev_examples = dev, dev_offsets, dev_examples
        self.version_2, self.n_best, self.max_answer_length = version_2, n_best, max_answer_length
        self.null_threshold = null_threshold
        self.eval_examples = len(dev_examples["id"])

    def data_parts(self) -> list:
        return [self.train_set, self.dev, self.dev_offsets, self.dev_examples]  # the gold answers live in the last

    def evaluate(
        self, model: nn.Module, *, batch_size: int, device: torch.device, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        n = len(self.dev)
        starts: list[np.ndarray | None] = [None] * n
        ends: list[np.ndarray | None] = [None] * n
        with evaluating(model):
            for indices, batch in eval_batches(self.dev, self.collate, batch_size):
                batch.pop("example_index")
                lengths = batch["attention_mask"].sum(-1).tolist()
                with autocast():
                    out = model(**to_device(batch, device))
                start_logits, end_logits = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
                for row, (i, length) in enumerate(zip(indices, lengths)):
                    starts[i], ends[i] = start_logits[row, :length], end_logits[row, :length]
        texts = best_answers(
            self.dev_examples["context"],
            self.dev.columns["example_index"].tolist(),
            [self.dev_offsets[i].numpy() for i in range(n)],
            starts,
            ends,
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
            allow_null=self.version_2,
            null_threshold=self.null_threshold,
        )
        ids = self.dev_examples["id"]
        return squad_metrics(dict(zip(ids, texts)), dict(zip(ids, self.dev_examples["answers"])))


def load_squad(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None) -> SquadTask:
    name = require(cfg, "name")
    version_2 = bool(cfg.get("version_2", False))
    settings = {
        "task": name,
        "v2": version_2,
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "max_length": positive_int(cfg, "max_length"),
        "doc_stride": positive_int(cfg, "doc_stride"),
        "max_query_length": positive_int(cfg, "max_query_length"),
    }
    main_metric = cfg.get("main_metric") or "f1"
    if main_metric not in ("exact_match", "f1"):
        raise ConfigError(f"task.main_metric={main_metric!r}: SQuAD reports exact_match and f1")
    files = {"train": require(cfg, "train_json"), "dev": require(cfg, "dev_json")}
    train, dev = (encoded_split(cfg, files, split, tokenizer, settings, cache_dir) for split in ("train", "dev"))
    train_set = EncodedDataset(
        {
            "input_ids": Ragged.from_dict(train["input_ids"]),
            "start_positions": train["start_positions"],
            "end_positions": train["end_positions"],
        }
    )
    dev_set = EncodedDataset({"input_ids": Ragged.from_dict(dev["input_ids"]), "example_index": dev["example_index"]})
    return SquadTask(
        name,
        train_set,
        dev_set,
        Ragged.from_dict(dev["offsets"]),
        dev["examples"],
        pad_token_id=tokenizer.pad_token_id,
        main_metric=main_metric,
        version_2=version_2,
        n_best=int(cfg.get("n_best", 20)),
        max_answer_length=int(cfg.get("max_answer_length", 30)),
        null_threshold=float(cfg.get("null_threshold", 0.0)),
    )


def encoded_split(
    cfg: Mapping[str, Any],
    files: dict[str, str],
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    settings: dict,
    cache_dir: Path | None,
) -> dict:
    """One split's features (``_build_split``), from the cache when its data and settings were seen before."""
    identity, read = split_source(cfg, files, split)
    build = functools.partial(_build_split, read, split, tokenizer, settings)
    return cache.cached(cache_dir, f"{settings['task']}-{split}", {**settings, "split": split, "data": identity}, build)


def split_source(
    cfg: Mapping[str, Any], files: dict[str, str], split: str
) -> tuple[dict, Callable[[], list[QAExample]]]:
    """Where a split is read from, the official JSON (``files``) under ``task.data_dir`` or the Hub:
    its identity for the cache key and its reader."""
    if cfg.get("data_dir"):
        path = Path(cfg["data_dir"]).expanduser() / files[split]
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: task.data_dir must hold {files['train']} and {files['dev']}")
        return cache.file_identity(path), functools.partial(read_squad_json, path)
    hub_id, revision = require(cfg, "hub_id"), cfg.get("hub_revision")
    hub_split = {"train": "train", "dev": "validation"}[split]
    hint = f"task.data_dir=<dir holding the official {files['train']} and {files['dev']}>"
    read = functools.partial(hub_examples, hub_id, hub_split, revision, hint)
    return {"hub_id": hub_id, "split": hub_split, "revision": revision}, read


def _build_split(
    read: Callable[[], list[QAExample]], split: str, tokenizer: PreTrainedTokenizerBase, settings: dict
) -> dict:
    """The split's features (``build_features``); the dev split keeps its examples for scoring."""
    examples = read()
    if not examples:
        raise DataError(f"task {settings['task']!r}: the {split} split has no questions")
    features = build_features(
        examples,
        tokenizer,
        max_length=settings["max_length"],
        doc_stride=settings["doc_stride"],
        max_query_length=settings["max_query_length"],
        train=split == "train",
    )
    if split == "dev":
        features["examples"] = {
            "id": [e.id for e in examples],
            "context": [e.context for e in examples],
            "answers": [e.answers for e in examples],
        }
    return features


register_family("squad", load_squad, model_kind=SquadTask.model_kind)
