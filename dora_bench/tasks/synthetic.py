"""Generated rows in the Hub formats of the LLM tasks: smoke runs and tests with no download.

``task.synthetic={train: N, eval: M}`` makes ``commonsense`` and ``gsm8k`` read rows from here instead
of the Hub or files (``task=commonsense-synthetic``, ``task=gsm8k-synthetic``). Every row has the
fields of the real set it stands for, so the same prompt code runs; the content is a toy with a
rule a small model can pick up: the right option is the one naming a fruit, and the maths is one
addition. The rows are a function of the split and the row number only.
"""

from __future__ import annotations

import random
from typing import Any

ROWS = 1  # bump when the generated rows change: it keys the token cache
FRUITS = ("apple", "pear", "plum", "fig", "kiwi", "mango", "lemon", "grape", "peach", "lime")
OTHERS = ("stone", "chair", "cloud", "river", "shoe", "lamp", "brick", "sock", "road", "spoon")


def _rng(name: str, split: str, i: int) -> random.Random:
    return random.Random(f"{name}/{split}/{i}")


def _options(rng: random.Random, n: int) -> tuple[list[str], int]:
    """``n`` words, one of them a fruit, and the fruit's position."""
    right = rng.randrange(n)
    words = rng.sample(OTHERS, n)
    words[right] = rng.choice(FRUITS)
    return words, right


def commonsense_row(set_name: str, split: str, i: int) -> dict[str, Any]:
    """Row ``i`` of ``split`` of a set, with that set's Hub fields."""
    rng = _rng(set_name, split, i)
    if set_name == "boolq":
        word = rng.choice(FRUITS + OTHERS)
        return {"passage": f"A {word} is on the table.", "question": f"is the {word} a fruit", "answer": word in FRUITS}
    if set_name == "piqa":
        (a, b), right = _options(rng, 2)
        return {"goal": "Make a snack.", "sol1": f"Eat a {a}.", "sol2": f"Eat a {b}.", "label": right}
    if set_name == "siqa":
        options, right = _options(rng, 3)
        fields = dict(zip(("answerA", "answerB", "answerC"), options))
        return {"context": "Sam was hungry.", "question": "What did Sam eat?", **fields, "label": str(right + 1)}
    if set_name == "hellaswag":
        options, right = _options(rng, 4)
        return {"ctx": "The cook reached for", "endings": [f"a {w}." for w in options], "label": str(right)}
    if set_name == "winogrande":
        (a, b), right = _options(rng, 2)
        return {"sentence": "The _ was sweet.", "option1": a, "option2": b, "answer": str(right + 1)}
    if set_name in ("arc_e", "arc_c", "obqa"):
        options, right = _options(rng, 4)
        letters = ["A", "B", "C", "D"]
        question = {"question_stem" if set_name == "obqa" else "question": "Which one grows on trees?"}
        return {**question, "choices": {"text": options, "label": letters}, "answerKey": letters[right]}
    raise ValueError(f"no synthetic rows for set {set_name!r}")


def gsm8k_row(split: str, i: int) -> dict[str, Any]:
    """An addition word problem with GSM8K's fields: ``question``, and ``answer`` ending ``#### <sum>``."""
    rng = _rng("gsm8k", split, i)
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    return {
        "question": f"Ann has {a} apples and buys {b} more. How many apples does she have now?",
        "answer": f"She has {a} + {b} = {a + b} apples.\n#### {a + b}",
    }


def rows(task: str, split: str, count: int, set_name: str | None = None) -> list[dict[str, Any]]:
    if task == "gsm8k":
        return [gsm8k_row(split, i) for i in range(count)]
    return [commonsense_row(set_name, split, i) for i in range(count)]
