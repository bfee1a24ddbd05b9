"""Decoder-LLM tasks: a prompt, a response to learn, and a generation to score.

Each example is a ``(prompt, response)`` pair of strings. A training sequence is

    [prefix] prompt response [eos]      labels: -100 on [prefix] prompt, the token ids on response [eos]

so the loss counts only the response and the end token that teaches the model to stop
(``prefix``: what the tokenizer puts before any text, Llama-3's ``<|begin_of_text|>``; nothing for
GPT-2). Prompt and response are tokenised separately, so the prompt's ids at evaluation are
exactly those seen in training. A sequence longer than ``max_length`` loses the start of its
prompt (the question and the answer format sit at its end), not its response (unless the
response alone is that long).

Evaluation generates from ``[prefix] prompt`` (greedy, or beam search with ``num_beams`` > 1) in
batches padded on the left (so every prompt ends in the last column, where the new tokens go),
sorted by length, with a progress bar; data parallel, each process generates every W-th prompt and
the texts are gathered. Teacher-forced dev scores (``response_loss``) run ``loss_chunk_rows`` rows of
a batch per forward pass, so the full-vocabulary logits of a whole eval batch are never held at once
(64 x 512 x 128k in bf16 is 8 GB); the sums are the same as in one pass.
Families: ``commonsense.py``, ``gsm8k.py``, ``instruct.py``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dora_bench import distributed
from dora_bench.errors import DataError
from dora_bench.tasks.base import Task, evaluating, lockstep_decoding, to_device
from dora_bench.tasks.batching import LABEL_PAD, EncodedDataset, PadCollator, Ragged, eval_batches

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str  # what the model learns to write after the prompt
    answer: str = ""  # what its generation is scored against (a label, a number); "" when not scored that way


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer adds before any text (Llama-3: ``[<|begin_of_text|>]``; GPT-2, ByT5: none).

    Read off an encoding rather than from tokenizer flags, which differ between tokenizer classes."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int
) -> tuple[dict, int]:
    """Training sequences and their labels (see the module docstring), as ``Ragged`` dicts, and the
    number of sequences whose prompt lost its start to ``max_length``."""
    if tokenizer.eos_token_id is None:
        raise DataError(f"tokenizer {type(tokenizer).__name__} has no end-of-text token: responses can't end")
    prefix = special_prefix(tokenizer)
    prompts = _ids(tokenizer, [e.prompt for e in examples])
    responses = _ids(tokenizer, [e.response for e in examples])
    ids, labels, cut = [], [], 0
    for prompt, response in zip(prompts, responses):
        response = response[: max_length - len(prefix) - 2] + [tokenizer.eos_token_id]  # >= 1 prompt token fits
        room = max_length - len(prefix) - len(response)
        cut += len(prompt) > room
        prompt = prefix + prompt[len(prompt) - room :] if len(prompt) > room else prefix + prompt
        ids.append(prompt + response)
        labels.append([LABEL_PAD] * len(prompt) + response)
    return {"input_ids": Ragged.from_rows(ids).to_dict(), "labels": Ragged.from_rows(labels).to_dict()}, cut


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_length: int) -> dict:
    """``[prefix] prompt`` for generation, the prompt's start cut as in training."""
    prefix = special_prefix(tokenizer)
    room = max_length - len(prefix)
    rows = [prefix + ids[max(0, len(ids) - room) :] for ids in _ids(tokenizer, prompts)]
    return {"input_ids": Ragged.from_rows(rows).to_dict()}


def _ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], chunk: int = 4096) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        out.extend(tokenizer(list(texts[start : start + chunk]), add_special_tokens=False)["input_ids"])
    return out


def report_cut(task: str, split: str, cut: int, total: int) -> None:
    if cut:
        print(
            f"[dora-bench] {task} {split}: {cut} of {total} prompts lost their start to task.max_length",
            file=sys.stderr,
        )


class CausalLMTask(Task):
    """Training on response tokens; ``generate`` and ``response_loss`` for the families' ``evaluate``."""

    model_kind = "causal_lm"
    num_labels = 0  # a language-model head: no classes

    def __init__(
        self,
        name: str,
        train: EncodedDataset,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int,
        num_beams: int = 1,
        loss_chunk_rows: int | None = None,
    ) -> None:
        super().__init__(name, train, tokenizer.pad_token_id)
        self.left = PadCollator(tokenizer.pad_token_id, side="left")
        self.pad_token_id, self.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams  # 1: greedy; more: beam search (the LLM-Adapters protocols use 4)
        self.loss_chunk_rows = loss_chunk_rows  # rows per forward pass in response_loss; None: the whole batch
        self.decode: Callable[[torch.Tensor], list[str]] = lambda ids: tokenizer.batch_decode(
            ids, skip_special_tokens=True
        )

    def generate(
        self,
        model: nn.Module,
        prompts: EncodedDataset,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
        desc: str,
    ) -> list[str]:
        """Greedy (or ``num_beams``-beam) continuations of every prompt (the prompt left out), in row order."""
        from transformers import GenerationConfig

        # A fresh config: a checkpoint's own generation_config may ask for sampling (Llama-3's does).
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=self.num_beams,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        mine, batches = my_share(prompts, self.left, batch_size)
        texts: dict[int, str] = {}
        with evaluating(model):
            for indices, batch in tqdm(batches, desc=desc, disable=not self.progress, leave=False):
                inputs = to_device(batch, device)
                with autocast():
                    # keyword arguments only: a peft-wrapped model's generate() takes no positional inputs
                    out = model.generate(**inputs, generation_config=config, **lockstep_decoding())
                new = out[:, inputs["input_ids"].shape[1] :].cpu()  # left padding: every prompt ends here
                for i, text in zip(indices, self.decode(new)):
                    texts[i] = text
        return distributed.gather_rows([texts[i] for i in range(mine)], len(prompts))

    def response_loss(
        self,
        model: nn.Module,
        dataset: EncodedDataset,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict[str, float]:
        """Teacher-forced scores on the response tokens of ``dataset``: mean negative log-likelihood per
        token (``loss``), ``perplexity = exp(loss)``, and ``token_accuracy`` (argmax = next token)."""
        totals = torch.zeros(3, dtype=torch.float64)  # summed NLL, correct tokens, tokens
        with evaluating(model):
            for indices, batch in my_share(dataset, self.collate, batch_size)[1]:
                batch = to_device(batch, device)
                for chunk, scored in row_chunks(batch, self.loss_chunk_rows, batch_size):
                    labels = chunk.pop("labels")
                    with autocast():
                        logits = model(**chunk).logits
                    if indices and scored:  # filler batches and chunks (row_chunks, my_share) only run
                        totals += _response_sums(logits, labels)
                    del logits
        nll, correct, tokens = distributed.all_reduce_sum_(totals).tolist()
        loss = nll / max(tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": correct / max(tokens, 1)}


def _response_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[summed NLL, correct argmax, tokens] over the labelled positions (logits at t predict label t+1)."""
    targets = labels[:, 1:]
    scored = targets != LABEL_PAD
    predicted = logits[:, :-1][scored].float()  # (tokens, vocab): only where a label is
    wanted = targets[scored]
    return torch.tensor(
        [
            F.cross_entropy(predicted, wanted, reduction="sum").item(),
            (predicted.argmax(-1) == wanted).sum().item(),
            wanted.numel(),
        ],
        dtype=torch.float64,
    )


def row_chunks(batch: dict, rows: int | None, batch_size: int) -> list[tuple[dict, bool]]:
    """``(sub-batch, scored)``: ``batch`` cut into runs of ``rows`` rows (None: one piece).

    Data parallel, every process runs ``ceil(batch_size / rows)`` pieces for every batch, however many
    rows its batch has (FSDP gathers weights in every forward, so all must run as many): a short batch
    is topped up with its first row, marked not to be scored."""
    size = next(iter(batch.values())).shape[0]
    if rows is None or rows >= size and distributed.world_size() == 1:
        return [(dict(batch), True)]
    pieces = [({k: v[start : start + rows] for k, v in batch.items()}, True) for start in range(0, size, rows)]
    if distributed.world_size() > 1:
        filler = {k: v[:1] for k, v in batch.items()}
        pieces += [(dict(filler), False)] * (math.ceil(batch_size / rows) - len(pieces))
    return pieces


def _share(dataset: EncodedDataset, rows: list[int]) -> EncodedDataset:
    return EncodedDataset({k: _Rows(col, rows) for k, col in dataset.columns.items()})


def my_share(
    dataset: EncodedDataset, collate: PadCollator, batch_size: int
) -> tuple[int, list[tuple[list[int], dict]]]:
    """``(rows, batches)``: this process's round-robin share of ``dataset`` (rows ``r, r+W, ...``; the
    batches' indices count within the share), padded to as many batches as the process with the most has.

    Under FSDP every forward gathers weights from all processes, so all must run the same number;
    a round-robin share can be one batch short (or empty). The padding batches are the first row of
    the dataset with no row indices: the caller runs them and keeps nothing."""
    rows = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    batches = list(eval_batches(_share(dataset, rows), collate, batch_size))
    if distributed.world_size() == 1:
        return len(rows), batches
    rounds = distributed.max_over_processes(len(batches))
    if len(batches) < rounds:
        _, filler = next(eval_batches(_share(dataset, [0]), collate, 1))
        batches = batches + [([], filler)] * (rounds - len(batches))
    return len(rows), batches


class _Rows:
    """A view of some rows of a column (``Ragged`` or tensor), for one process's share of a dev set."""

    def __init__(self, column: Ragged | torch.Tensor, rows: list[int]) -> None:
        self.column, self.rows = column, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.column[self.rows[i]]

    def lengths(self) -> torch.Tensor:
        return self.column.lengths()[self.rows] if self.rows else torch.zeros(0, dtype=torch.long)
