"""Backbones: the pretrained model and its tokenizer, from the Hub, a local folder, or random init.

``backbone.init=random`` builds the exact architecture from a config shipped in
``dora_bench/backbone_configs/`` (the Hub config's architecture facts), so speed,
memory and parameter counts can be measured with no download; on the ``meta`` device
it costs no memory at all (``make params`` counts Llama-3.2-3B that way).

Decoder LLMs (``llama``, ``qwen2``, ``gpt2``) load as causal language models.
``backbone.dtype=bf16`` stores the frozen weights in bfloat16 (half the memory); what trains
is kept in float32 by the loop, and the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dora_bench.errors import ConfigError, OfflineError, first_line
from dora_bench.hub import hub_reachable
from dora_bench.methods.base import AdaptTarget

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CONFIG_DIR = Path(__file__).parent / "backbone_configs"

#: ``backbone.tokenizer`` value for a tokenizer that needs no files: UTF-8 bytes
#: (transformers' ByT5Tokenizer, 259 ids). Used only when asked for, never as a fallback.
BYTE_TOKENIZER = "bytes"

#: The task head of each model kind, trained fully by every method and left out of
#: the paper's parameter counts. Seq2seq LM heads are tied to the embeddings: no head.
HEADS = {
    ("roberta", "sequence_classification"): ("classifier",),
    # BERT's classification head is pooler (dense + tanh on [CLS]) + classifier: the
    # counterpart of RoBERTa's classifier.dense + classifier.out_proj, so it trains as the head.
    ("bert", "sequence_classification"): ("pooler", "classifier"),
    ("bert", "question_answering"): ("qa_outputs",),
    ("roberta", "question_answering"): ("qa_outputs",),
    ("bart", "sequence_classification"): ("classification_head",),
    ("bart", "question_answering"): ("qa_outputs",),
    ("bart", "seq2seq_lm"): (),
    # Decoder LLMs: the LM head (tied to the embeddings in Llama-3.2, GPT-2) stays frozen, as in LoRA's
    # LLM recipes; full fine-tuning trains it with everything else.
    ("llama", "causal_lm"): (),
    ("qwen2", "causal_lm"): (),
    ("gpt2", "causal_lm"): (),
}

MODEL_KINDS = ("sequence_classification", "question_answering", "seq2seq_lm", "causal_lm")
ARCHITECTURES = ("roberta", "bert", "bart", "llama", "qwen2", "gpt2")
DECODERS = ("llama", "qwen2", "gpt2")
#: ``backbone.dtype``: how the frozen weights are stored.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BackboneConfig:
    """``conf/backbone/*.yaml`` as a checked object."""

    name: str  # short name used in run paths and tables ("roberta-base")
    name_or_path: str | None  # Hub id or local directory for from_pretrained; None: ``package``
    architecture: str  # "roberta" | "bert" | "bart"
    target_modules: tuple[str, ...]  # SPEC §1: the six adapted linear types
    init: str = "pretrained"  # "pretrained" | "random" (shipped config, random weights)
    random_config: str | None = None  # file in backbone_configs/ for init=random
    tokenizer: str | None = None  # Hub id, local dir, or "bytes"; None: the model's own
    package: str | None = None  # "<importable package>/<folder>" that ships the weights (backbone=minilm)
    install: str | None = None  # the command that installs ``package``, for the error when it is missing
    dtype: str = "fp32"  # "fp32" | "bf16": storage of the frozen weights (bf16 needs bf16 autocast)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"backbone.dtype={self.dtype!r} is not known: use one of {', '.join(DTYPES)}")
        if self.init not in ("pretrained", "random"):
            raise ConfigError(f"backbone.init={self.init!r} is not known: use pretrained or random")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"backbone.architecture={self.architecture!r}: supported are {', '.join(ARCHITECTURES)}")
        if not self.name_or_path and not self.package:
            raise ConfigError(f"backbone {self.name!r} names no weights: set backbone.name_or_path=<Hub id or folder>")
        if self.init == "random" and not self.random_config:
            raise ConfigError(
                f"backbone {self.name!r} has no random_config: set backbone.random_config=<file in {CONFIG_DIR}>"
            )

    @classmethod
    def from_dict(cls, raw: dict) -> BackboneConfig:
        raw = dict(raw)
        raw["target_modules"] = tuple(raw["target_modules"])
        return cls(**raw)


def weights_source(cfg: BackboneConfig) -> str:
    """Where ``from_pretrained`` reads the backbone: ``name_or_path``, else the folder inside
    the installed ``package`` (found through importlib, so no path is ever typed)."""
    if cfg.name_or_path:
        return cfg.name_or_path
    import importlib.util

    package, _, folder = cfg.package.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = cfg.install or f"pip install {package.replace('_', '-')}"
        raise ConfigError(f"backbone {cfg.name!r} needs the package {package!r}, which is not installed: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    if not (path / "config.json").is_file():
        raise ConfigError(f"backbone {cfg.name!r}: {path} holds no config.json; reinstall it: {cfg.install or package}")
    return str(path)


def load_tokenizer(cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    """The tokenizer named by ``backbone.tokenizer`` (or the backbone's own); decoders get a pad token."""
    tokenizer = _tokenizer(cfg)
    if cfg.architecture in DECODERS and tokenizer.pad_token_id is None:
        # Llama and GPT-2 ship no pad token. Padding is always masked out (attention mask; -100
        # labels), so the end-of-text token can stand in; it keeps the vocabulary unchanged.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tokenizer(cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer, BartTokenizer, ByT5Tokenizer, RobertaTokenizer

    source = cfg.tokenizer or weights_source(cfg)
    if source == BYTE_TOKENIZER:
        return ByT5Tokenizer(extra_ids=0)
    local = Path(source).expanduser()
    if local.is_dir():
        # A bare BPE folder (vocab.json + merges.txt, no tokenizer_config.json) carries no
        # class name, so the backbone's architecture picks the class.
        if (
            (local / "vocab.json").is_file()
            and (local / "merges.txt").is_file()
            and not (local / "tokenizer_config.json").is_file()
        ):
            cls = RobertaTokenizer if cfg.architecture == "roberta" else BartTokenizer
            return cls.from_pretrained(str(local))
        return _from_pretrained(AutoTokenizer, str(local), "tokenizer")
    if source.startswith((".", "/", "~")):
        raise ConfigError(
            f"tokenizer folder {source!r} does not exist: pass an existing folder or a Hub id to backbone.tokenizer"
        )
    return _from_pretrained(AutoTokenizer, source, "tokenizer")


def load_model(cfg: BackboneConfig, model_kind: str, num_labels: int = 2, device: str | None = None) -> nn.Module:
    """The backbone with the head ``model_kind`` needs; weights from ``cfg.init``, stored in ``cfg.dtype``.

    ``device="meta"`` (random init only): the architecture without any memory behind it, for counting."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    auto = {
        "sequence_classification": AutoModelForSequenceClassification,
        "question_answering": AutoModelForQuestionAnswering,
        "seq2seq_lm": AutoModelForSeq2SeqLM,
        "causal_lm": AutoModelForCausalLM,
    }[model_kind]
    dtype = DTYPES[cfg.dtype]
    head_kwargs = {}
    if model_kind == "sequence_classification":
        head_kwargs = {"num_labels": num_labels}
        if num_labels == 1:
            head_kwargs["problem_type"] = "regression"
    if cfg.init == "random":
        path = CONFIG_DIR / cfg.random_config
        if not path.is_file():
            raise ConfigError(f"random_config {path} is missing: pick a file in {CONFIG_DIR}")
        facts = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        model_type = facts.pop("model_type")
        facts.pop("architectures", None)
        config = AutoConfig.for_model(model_type, **facts, **head_kwargs)
        with torch.device(device or "cpu"):
            return auto.from_config(config, dtype=dtype)
    if device not in (None, "cpu"):
        raise ConfigError(f"load_model(device={device!r}) is for random init: pretrained weights load on the CPU")
    return _from_pretrained(auto, weights_source(cfg), "model", dtype=dtype, **head_kwargs)


def adapt_target(cfg: BackboneConfig, model_kind: str) -> AdaptTarget:
    try:
        heads = HEADS[(cfg.architecture, model_kind)]
    except KeyError:
        raise ConfigError(
            f"backbone {cfg.name!r} has no {model_kind} head: pick another backbone for this task"
        ) from None
    return AdaptTarget(architecture=cfg.architecture, target_modules=cfg.target_modules, head_modules=heads)


def _from_pretrained(auto: Any, source: str, what: str, **kwargs: Any) -> Any:
    """``auto.from_pretrained(source, **kwargs)`` (``auto``: an Auto* model class or AutoTokenizer), offline-aware."""
    is_local = Path(source).expanduser().is_dir()
    try:
        # Where the Hub can't be reached, ask only the local cache: otherwise each call
        # spends ~45 s in retries before failing.
        return auto.from_pretrained(source, local_files_only=not is_local and not hub_reachable(), **kwargs)
    except OSError as err:
        if is_local:
            raise ConfigError(
                f"{what} folder {source!r} can't be loaded ({first_line(err)}): check its files"
            ) from None
        raise OfflineError(
            f"can't load {what} {source!r}: not cached and the Hugging Face Hub is unreachable; "
            f"offline options: backbone.name_or_path=/local/dir (a saved checkpoint) or backbone.init=random"
            + (
                " with backbone.tokenizer=/dir/with/vocab.json+merges.txt or backbone.tokenizer=bytes"
                if what == "tokenizer"
                else ""
            )
        ) from None
