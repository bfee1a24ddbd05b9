"""A toy sentiment task generated from word lists: no files, no download, learnable in a minute on a CPU.

Each example is a short review such as ``"the soup: zesty, toxic, breezy."``: three opinion
words after a topic; the label is the majority sentiment (1: at least two positive words).
Which words, their order, how many agree (two or three) and the topic are drawn at
random. The same seed always gives the same examples, and no review appears twice (so
none is in both train and dev).

Why a majority of several words rather than one opinion word: the demo backbone is a
*random* 2-layer model. Its attention mixes positions, but nothing routes one word's
information to the position the classifier reads; only methods that retrain the query/key
projections (full FT, LoRA, DoRA...) learn to. A cue spread over several words reaches that
position through plain mixing, so every method (BitFit and the adapters too) can learn
the task, and the demo compares methods rather than showing most of them at chance.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.tasks.base import register_family
from dora_bench.tasks.classification import (
    SequenceClassificationTask,
    SplitSource,
    TextSplit,
    build_classification_task,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


#: Bump when the generator changes, so cached encodings of the old examples are not reused.
DEMO_VERSION = 2

# The opinion words are spelled with a letter no other word uses (positive: z; negative: x),
# so a randomly initialised byte-level model can find the cue without first learning to spell.
POSITIVE = ("jazzy", "zesty", "dazzling", "zany", "snazzy", "breezy", "zippy", "amazing")
NEGATIVE = ("vexing", "toxic", "lax", "noxious", "taxing", "inexact", "vexed", "complex")
OBJECTS = (
    "the soup",
    "this film",
    "the hotel",
    "that song",
    "the lecture",
    "the game",
    "the novel",
    "our trip",
    "the garden",
    "the show",
)
WORDS_PER_REVIEW = 3


def make_splits(train_size: int, dev_size: int, seed: int) -> tuple[TextSplit, TextSplit]:
    """Train and dev examples, half of each label, from ``random.Random(seed)``; all sentences distinct."""
    rng, seen = random.Random(seed), set()
    return _examples(rng, train_size, seen), _examples(rng, dev_size, seen)


def _examples(rng: random.Random, n: int, seen: set[str]) -> TextSplit:
    sentences, labels = [], []
    while len(sentences) < n:
        label = len(sentences) % 2
        agreeing = rng.randint(WORDS_PER_REVIEW // 2 + 1, WORDS_PER_REVIEW)  # a strict majority
        signs = [True] * agreeing + [False] * (WORDS_PER_REVIEW - agreeing)
        rng.shuffle(signs)
        words = [rng.choice(POSITIVE if agree == bool(label) else NEGATIVE) for agree in signs]
        sentence = f"{rng.choice(OBJECTS)}: {', '.join(words)}."
        if sentence in seen:
            continue
        seen.add(sentence)
        sentences.append(sentence)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return TextSplit([[sentences[i] for i in order]], [labels[i] for i in order])


def load_demo(
    cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, cache_dir: Path | None
) -> SequenceClassificationTask:
    seed = int(cfg.get("data_seed", 0))
    sizes = {"train": int(cfg.get("train_size", 1600)), "dev": int(cfg.get("dev_size", 240))}
    splits = functools.cache(lambda: dict(zip(("train", "dev"), make_splits(sizes["train"], sizes["dev"], seed))))

    def source(split: str) -> SplitSource:
        identity = {"demo": DEMO_VERSION, "seed": seed, "sizes": sizes}
        return SplitSource(split, identity, lambda: splits()[split])

    return build_classification_task(cfg, tokenizer, cache_dir, train=source("train"), dev=[source("dev")])


register_family("demo", load_demo, model_kind=SequenceClassificationTask.model_kind)
