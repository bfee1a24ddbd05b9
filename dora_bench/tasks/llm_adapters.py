"""The LLM-Adapters data format and protocol, for the two published tables users compare against.

LLM-Adapters (Hu et al., EMNLP 2023; github.com/AGI-Edgerunners/LLM-Adapters) ships its training sets
(``ft-training_set/commonsense_170k.json``, ``math_10k.json``) and its test sets
(``dataset/<set>/test.json``) as one JSON list per file, each row::

    {"instruction": "...", "input": "", "output": "the correct answer is true", "answer": "true"}

Weight-decomposed DoRA (Liu et al., ICML 2024; github.com/NVlabs/DoRA, ``commonsense_reasoning/``)
trains and scores its commonsense table with the same files and code. What this module reproduces
of that code, as read from ``finetune.py``, ``commonsense_evaluate.py`` and ``evaluate.py``:

- the Alpaca-style template with its literal whitespace (the 16-space indents, the two spaces after
  "request." in training and one at evaluation are theirs, kept so the tokens are the same);
- the loss on prompt and response together (their ``train_on_inputs=True``): one string
  ``template + output`` tokenised with the tokenizer's special tokens, cut at ``cutoff_len`` from the
  right, the end token appended when there is room;
- answer extraction: commonsense, the first match of the set's answer words in the text after the
  last ``### Response:`` (case-sensitive, no word boundaries, as theirs); maths, the last number of
  ``-?\\d+\\.?\\d*`` after commas are removed, right when within 0.001 of the gold ``answer``.

Decoding (beam search, 4 beams, 32 / 256 new tokens) is set by ``task.num_beams`` and
``task.max_new_tokens``; ``causal_lm.CausalLMTask.generate`` does it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.tasks.batching import Ragged

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FIELDS = ("instruction", "input", "output", "answer")
INDENT = " " * 16  # their templates are indented f-strings: every line after the first starts so
RESPONSE_MARK = "### Response:"

#: our commonsense set -> LLM-Adapters' folder under dataset/ (and commonsense_evaluate.py's --dataset)
COMMONSENSE_FOLDERS = {
    "boolq": "boolq",
    "piqa": "piqa",
    "siqa": "social_i_qa",
    "hellaswag": "hellaswag",
    "winogrande": "winogrande",
    "arc_e": "ARC-Easy",
    "arc_c": "ARC-Challenge",
    "obqa": "openbookqa",
}
#: our set -> the answer words commonsense_evaluate.py's extract_answer looks for, in its order
_WORDS = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "siqa": tuple(f"answer{i}" for i in range(1, 6)),
    "hellaswag": tuple(f"ending{i}" for i in range(1, 5)),
    "winogrande": ("option1", "option2"),
}
_WORDS.update({name: _WORDS["siqa"] for name in ("arc_e", "arc_c", "obqa")})
COMMONSENSE_PATTERNS = {name: re.compile("|".join(words)) for name, words in _WORDS.items()}
MATH_NUMBER = re.compile(r"-?\d+\.?\d*")
MATH_TOLERANCE = 0.001  # evaluate.py's `miss`


def _head(with_input: bool) -> str:
    if with_input:
        return (
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request."
        )
    return "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def train_text(row: Mapping[str, Any]) -> str:
    """finetune.py's ``generate_prompt(data_point)``: the template with the output at its end."""
    blank = INDENT  # the blank lines inside finetune.py's template are indented too
    if row.get("input"):
        lines = [
            _head(True) + " ",
            "",
            f"{INDENT}### Instruction:",
            f"{INDENT}{row['instruction']}",
            blank,
            f"{INDENT}### Input:",
            f"{INDENT}{row['input']}",
            blank,
            f"{INDENT}{RESPONSE_MARK}",
            f"{INDENT}{row['output']}",
        ]
    else:
        lines = [
            _head(False) + "  ",
            "",
            f"{INDENT}### Instruction:",
            f"{INDENT}{row['instruction']}",
            blank,
            f"{INDENT}{RESPONSE_MARK}",
            f"{INDENT}{row['output']}",
        ]
    return "\n".join(lines)


def eval_prompt(instruction: str, input_text: str | None = None) -> str:
    """The evaluation scripts' ``generate_prompt(instruction, input)``: the blank lines are empty here,
    one space follows "request." without an input and none with one, and the prompt ends in the indent."""
    if input_text:
        lines = [
            _head(True),
            "",
            f"{INDENT}### Instruction:",
            f"{INDENT}{instruction}",
            "",
            f"{INDENT}### Input:",
            f"{INDENT}{input_text}",
            "",
            f"{INDENT}{RESPONSE_MARK}",
            INDENT,
        ]
    else:
        lines = [
            _head(False) + " ",
            "",
            f"{INDENT}### Instruction:",
            f"{INDENT}{instruction}",
            "",
            f"{INDENT}{RESPONSE_MARK}",
            INDENT,
        ]
    return "\n".join(lines)


def read_rows(path: str | Path, what: str) -> list[dict[str, Any]]:
    """The rows of one LLM-Adapters JSON file (a list of objects with instruction/input/output/answer)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what}={path} is missing: download it from LLM-Adapters (docs/llm.md lists the files)")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not JSON ({err}): {what} takes LLM-Adapters' JSON list files") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of {{instruction, input, output, answer}} rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "instruction" not in row:
            raise DataError(f"{path} row {i + 1}: needs the field 'instruction' (LLM-Adapters' format)")
    return rows


def encode_full(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> tuple[dict, int]:
    """``train_on_inputs=True`` sequences as finetune.py's ``tokenize``: the whole text with the
    tokenizer's special tokens, its first ``max_length`` tokens, the end token appended if it fits;
    labels equal to the ids. Returns the Ragged dicts and how many texts were cut."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no end-of-text token: sequences can't end")
    ids, cut = [], 0
    for start in range(0, len(texts), 4096):
        for row in tokenizer(list(texts[start : start + 4096]))["input_ids"]:
            cut += len(row) > max_length
            row = list(row[:max_length])
            if row[-1] != eos and len(row) < max_length:
                row.append(eos)
            ids.append(row)
    encoded = Ragged.from_rows(ids).to_dict()
    return {"input_ids": encoded, "labels": dict(encoded)}, cut


def report_cut(task: str, cut: int, total: int) -> None:
    if cut:
        print(f"[dora-bench] {task} train: {cut} of {total} sequences lost their end to task.max_length "
              f"(their cutoff_len)", file=sys.stderr)  # fmt: skip


def response_of(generation: str, last: bool) -> str:
    """The text their scripts score: what follows ``### Response:`` in prompt + generation. The prompt
    holds one mark, so that is the generation up to its own first mark (maths, ``split(...)[1]``) or
    after its last one (commonsense, ``split(...)[-1]``), stripped."""
    parts = generation.split(RESPONSE_MARK)
    return (parts[-1] if last else parts[0]).strip()


def commonsense_answer(set_name: str, generation: str) -> str | None:
    """commonsense_evaluate.py's ``extract_answer``: the first answer word in the response, or None."""
    found = COMMONSENSE_PATTERNS[set_name].search(response_of(generation, last=True))
    return found.group(0) if found else None


def math_answer(generation: str) -> float | None:
    """evaluate.py's ``extract_answer_number``: the last number of the response, commas removed."""
    numbers = MATH_NUMBER.findall(response_of(generation, last=False).replace(",", ""))
    return float(numbers[-1]) if numbers else None


def gold_number(answer: Any) -> float | None:
    """A row's ``answer`` as evaluate.py reads it (``float(label)``); None for a letter (AQuA's rows)."""
    try:
        return float(str(answer).replace(",", ""))
    except ValueError:
        return None


def math_score(generations: list[str], gold: list[str]) -> dict[str, float]:
    """``exact_match``: share of generations whose number is within 0.001 of the gold; ``no_number``."""
    if len(generations) != len(gold) or not gold:
        raise ValueError(f"{len(generations)} generations for {len(gold)} answers")
    predicted = [math_answer(text) for text in generations]
    right = sum(p is not None and abs(float(g) - p) <= MATH_TOLERANCE for p, g in zip(predicted, gold))
    return {"exact_match": right / len(gold), "no_number": sum(p is None for p in predicted) / len(gold)}
