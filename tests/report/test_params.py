"""Trainable-parameter counts as the paper counts them (head excluded; Full FT: everything).

Fast tests check each method's count on the tiny backbones against closed-form formulas,
and the same formulas at roberta-base's sizes against the numbers SPEC §2 gives. The slow
tests build the real roberta-base / bart-base (random init) and compare with the paper.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.methods import build_method, method_names
from dora_bench.report import params
from support import CONF_DIR

# -- closed forms: d = width, f = FFN width, L = layers (RoBERTa), r / m / n = the size ------


def lora(d, f, L, r):  # r (d_in + d_out) per module: q, k, v, attention output, FFN in, FFN out
    return L * r * (4 * 2 * d + 2 * (d + f))


def adalora(d, f, L, r):  # one more parameter per rank: the singular value
    return L * r * (4 * (2 * d + 1) + 2 * (d + f + 1))


def adapters(d, m, n):  # n adapters, each d -> m -> d with biases
    return n * (2 * d * m + m + d)


def bitfit(d, f, L):  # embedding LayerNorm, then per layer: q, k, v, o, FFN in, FFN out, 2 LayerNorms
    return d + L * (4 * d + f + d + 2 * d)


def dora_wd(d, f, L, r):  # LoRA plus one magnitude per output row
    return lora(d, f, L, r) + L * (5 * d + f)


def expected(name: str, budget: int, d: int, f: int, L: int) -> int | None:
    return {
        "lora": lora(d, f, L, budget),
        "adalora": adalora(d, f, L, budget),  # before the final mask: target_r everywhere
        "dora": adalora(d, f, L, budget),  # the same nominal count until pruning ends
        "houlsby": adapters(d, 4 * budget, 2 * L),
        "pfeiffer": adapters(d, 8 * budget, L),
        "bitfit": bitfit(d, f, L),
        "prompt_tuning": 10 * budget * d,
        "dora_wd": dora_wd(d, f, L, budget),
    }.get(name)


def test_closed_forms_give_the_spec_numbers_at_roberta_base_size():
    d, f, L = 768, 3072, 12
    assert [lora(d, f, L, b) for b in (2, 8)] == [331_776, 1_327_104]
    assert [adapters(d, 4 * b, 2 * L) for b in (2, 8)] == [313_536, 1_198_848]
    assert [adapters(d, 8 * b, L) for b in (2, 8)] == [304_320, 1_189_632]
    assert bitfit(d, f, L) == 102_144


@pytest.fixture(scope="module")
def tiny_base():
    cfg = BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / "tiny.yaml").read_text()))
    torch.manual_seed(0)
    return load_model(cfg, "sequence_classification", num_labels=2), adapt_target(cfg, "sequence_classification")


@pytest.mark.parametrize("budget", [2, 8])
@pytest.mark.parametrize("name", method_names())
def test_tiny_counts_match_the_closed_forms(name, budget, tiny_base):
    base, target = tiny_base
    c = base.config
    ours, trains = params.count(build_method(params.method_config(name, budget)), base, target)
    if name == "full_ft":
        assert ours == trains == sum(p.numel() for p in base.parameters())
        return
    d, f, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    want = expected(name, budget, d, f, L)
    # a method without a closed form here would go unchecked: write one (its yaml's sizing) above
    assert want is not None, f"no closed form for {name}: add it to expected()"
    assert ours == want
    # what trains is the paper's count plus the head, once; AdaLoRA and DoRA start from b0 = ceil(1.5 bT)
    head = sum(p.numel() for n, p in base.named_parameters() if target.is_head(n))
    b0 = math.ceil(1.5 * budget)
    initial = {"adalora": adalora(d, f, L, b0), "dora": adalora(d, f, L, b0)}.get(name, ours)
    assert trains == initial + head


def test_paper_column_reads_millions():
    column = params.paper_column("table2_glue.csv")
    assert column[("LoRA", 2)] == pytest.approx(330_000)
    assert column[("Full FT", None)] == pytest.approx(124_650_000)
    assert column[("H-Adapter", 8)] == pytest.approx(1_200_000)


# -- the real backbones (slow: ~125M-parameter models) ---------------------------------------

EXACT = {
    ("lora", 2): 331_776,
    ("lora", 8): 1_327_104,
    ("houlsby", 2): 313_536,
    ("houlsby", 8): 1_198_848,
    ("pfeiffer", 2): 304_320,
    ("pfeiffer", 8): 1_189_632,
    ("bitfit", None): 102_144,
    ("full_ft", None): 124_647_170,
}


@pytest.fixture(scope="module")
def roberta_base():
    raw = {**yaml.safe_load((CONF_DIR / "backbone" / "roberta-base.yaml").read_text()), "init": "random"}
    cfg = BackboneConfig.from_dict(raw)
    return load_model(cfg, "sequence_classification", num_labels=2), adapt_target(cfg, "sequence_classification")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in method_names() if n in params.PAPER_NAMES])
def test_roberta_base_counts_are_within_5_percent_of_the_paper(name, roberta_base):
    base, target = roberta_base
    paper = params.paper_column("table2_glue.csv")
    uses_budget = build_method(params.method_config(name, 2)).uses_budget
    for budget in (2, 8) if uses_budget else (None,):
        method = build_method(params.method_config(name, budget or 2))
        ours, _ = params.count(method, base, target)
        reference = paper[(params.PAPER_NAMES[name], budget)]
        assert abs(ours / reference - 1) < 0.05, f"{name} at budget {budget}: {ours:,} vs the paper's {reference:,.0f}"
        if (name, budget) in EXACT:
            assert ours == EXACT[(name, budget)]


@pytest.mark.slow
def test_bart_base_counts_follow_the_encoder_decoder_layout():
    raw = {**yaml.safe_load((CONF_DIR / "backbone" / "bart-base.yaml").read_text()), "init": "random"}
    cfg = BackboneConfig.from_dict(raw)
    base, target = load_model(cfg, "seq2seq_lm"), adapt_target(cfg, "seq2seq_lm")
    d, f, layers = 768, 3072, 6
    per_rank = layers * (4 * 2 * d + 2 * (d + f)) + layers * (8 * 2 * d + 2 * (d + f))  # decoder: + cross-attention
    assert params.count(build_method(params.method_config("lora", 2)), copy.deepcopy(base), target)[0] == 2 * per_rank
    # Houlsby: one adapter after each sub-layer, 2 per encoder layer and 3 per decoder layer
    assert params.count(build_method(params.method_config("houlsby", 2)), base, target)[0] == adapters(d, 8, 5 * layers)
    assert params.count(build_method(params.method_config("pfeiffer", 2)), base, target)[0] == adapters(
        d, 16, 2 * layers
    )


@pytest.mark.slow
def test_params_cli_prints_a_markdown_row_per_method(capsys):
    params.main(["--backbone", "roberta-base", "--budgets", "2"])
    out = capsys.readouterr().out
    assert "| lora | 2 | 331,776 | 0.266% | 0.33M | +0.5% |" in out
    assert "| full_ft | - | 124,647,170 | 100.000% | 124.65M |" in out
    assert all(f"| {name} |" in out for name in method_names())


def test_minilm_counts_follow_the_closed_forms_at_its_size():
    """MiniLM (6 layers, width 384, FFN 1536; random init, no package needed): LoRA r = 8 is
    331,776 and r = 2 is 82,944 on its 36 modules; the pooler trains with the head, outside the count."""
    raw = {**yaml.safe_load((CONF_DIR / "backbone" / "minilm.yaml").read_text()), "init": "random"}
    cfg = BackboneConfig.from_dict(raw)
    base, target = (
        load_model(cfg, "sequence_classification", num_labels=2),
        adapt_target(cfg, "sequence_classification"),
    )
    d, f, layers = 384, 1536, 6
    assert lora(d, f, layers, 8) == 331_776 and lora(d, f, layers, 2) == 82_944
    for name, budget in (("lora", 8), ("lora", 2), ("houlsby", 8), ("pfeiffer", 2), ("bitfit", None), ("dora", 8)):
        ours, trains = params.count(build_method(params.method_config(name, budget or 2)), base, target)
        assert ours == expected(name, budget or 2, d, f, layers), name
        if name != "dora":  # DoRA trains b0 = 12 components a module until pruning ends; it counts the final bT
            assert trains - ours == (d * d + d) + (d * 2 + 2), name  # the head: pooler dense + classifier


# -- Llama-3.2 columns: the real sizes, on the meta device (no memory, no weights) -----------


def llama_lora(d: int, kv: int, f: int, layers: int, r: int) -> int:
    """r (d_in + d_out) on q (d->d), k and v (d->kv, grouped-query), o (d->d), gate and up (d->f), down (f->d)."""
    return layers * r * (2 * d + 2 * (d + kv) + 2 * d + 3 * (d + f))


@pytest.mark.parametrize(
    ("column", "total", "shape"),
    [("llama-3.2-1b", 1_235_814_400, (2048, 512, 8192, 16)), ("llama-3.2-3b", 3_212_749_824, (3072, 1024, 8192, 28))],
)
def test_llama_columns_count_the_real_architecture_without_memory(column, total, shape):
    base, target = params.load_base(column)
    assert {p.device.type for p in base.parameters()} == {"meta"}
    assert sum(p.numel() for p in base.parameters()) == total  # the model cards' counts
    d, kv, f, layers = shape
    for budget in (2, 8):
        lora_count, _ = params.count(build_method(params.method_config("lora", budget)), base, target)
        assert lora_count == llama_lora(d, kv, f, layers, budget)
        dora_count, _ = params.count(build_method(params.method_config("dora", budget)), base, target)
        assert dora_count == lora_count + budget * 7 * layers  # one gate per component
    assert llama_lora(2048, 512, 8192, 16, 8) == 5_636_096


@pytest.mark.slow
def test_params_cli_prints_the_llama_column_with_shares_of_the_model(capsys):
    params.main(["--backbone", "llama-3.2-1b", "--budgets", "8"])
    out = capsys.readouterr().out
    assert "| lora | 8 | 5,636,096 | 0.456% | - | - | 5,636,096 |" in out
    assert "| bitfit | - | n/a: method=bitfit: this llama backbone has no bias terms" in out
