"""DoRA (dynamic-rank, SPEC §1) against its equations: scores, EMA, schedule, pruning, DEM,
the masks after the pruning phase, the report, the peft export and resuming.

Expected numbers are worked out by hand from the SPEC formulas in the comments beside them.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from torch import nn

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.errors import ConfigError
from dora_bench.methods import AdaptTarget, build_method
from dora_bench.methods.dora import (
    DoRALinear,
    Phases,
    components_to_prune,
    dem_variance_sum,
    importance_scores,
    is_pruning_step,
    scheduled_pruned,
    training_phases,
)
from support import CONF_DIR

TINY_MODULES = 12  # 2 layers x 6 module types


def tiny_model(seed: int = 0) -> tuple[nn.Module, AdaptTarget]:
    cfg = BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / "tiny.yaml").read_text()))
    torch.manual_seed(seed)
    return load_model(cfg, "sequence_classification", num_labels=2), adapt_target(cfg, "sequence_classification")


def dora(**overrides):
    return build_method({"name": "dora", "final_budget": 2, "pruning_interval": 5, "dem_coef": 0.5, **overrides})


def materialised_scores(A, B, c, eps=1e-8):
    """Eq. 7 the slow way, as the released code does: every c_i B_i A_i as a d_out x d_in matrix."""
    products = c[:, :, None, None] * B.transpose(1, 2)[:, :, :, None] * A[:, :, None, :]  # (G, r, d_out, d_in)
    total = products.sum(dim=1).flatten(1).norm(dim=1)
    return products.flatten(2).norm(dim=2) / (total[:, None] + eps)


def train(model, method, steps, start=1, lr=1e-2, seed=0):
    """A manual loop in the training loop's hook order, on random token batches."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(start, start + steps):
        ids, labels = torch.randint(3, 259, (4, 12), generator=gen), torch.randint(0, 2, (4,), generator=gen)
        loss = model(input_ids=ids, labels=labels).loss
        extra = method.extra_loss(model, step)
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        method.after_step(model, step)
        optimizer.zero_grad()
    return optimizer


# -- config ----------------------------------------------------------------------------------


def test_init_budget_defaults_to_one_and_a_half_times_the_final_one_rounded_up():
    assert [dora(final_budget=b).config.init_budget for b in (1, 2, 8)] == [2, 3, 12]
    assert dora(final_budget=2, init_budget=6).config.init_budget == 6


@pytest.mark.parametrize(
    "bad, fix",
    [
        ({"final_budget": 0}, "budget=1"),
        ({"final_budget": 4, "init_budget": 3}, "init_budget"),
        ({"warmup_ratio": 0.5, "final_ratio": 0.5}, "lower one"),
        ({"beta": 1.0}, "0.9"),
        ({"pruning_interval": 0}, ">= 1"),
        ({"schedule": "linear"}, "reference, adalora"),
    ],
)
def test_bad_settings_are_refused_with_a_one_line_fix(bad, fix):
    with pytest.raises(ConfigError, match=fix) as err:
        dora(**bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "bad, fix",
    [
        ({"warmup_ratio": -0.1}, "must be >= 0"),
        ({"final_ratio": -0.1, "warmup_ratio": 0.2}, "must be >= 0"),
        ({"alpha": 0.0}, "alpha > 0"),
        ({"dem_coef": -0.1}, "dem_coef >= 0"),
        ({"dropout": 1.0}, r"dropout in \[0, 1\)"),
    ],
)
def test_more_bad_settings_are_refused(bad, fix):
    with pytest.raises(ConfigError, match=fix):
        dora(**bad)


def test_settings_at_the_edges_are_accepted():
    # b0 = bT (nothing to prune: Table 6's b0 = 2 row), no warm-up, no final phase, a ranking every
    # step, no DEM, a small alpha, no dropout
    edges = {"init_budget": 2, "warmup_ratio": 0.0, "final_ratio": 0.0, "pruning_interval": 1}
    config = dora(**edges, dem_coef=0.0, alpha=0.5, dropout=0.0).config
    assert (config.init_budget, config.warmup_ratio, config.final_ratio, config.pruning_interval) == (2, 0.0, 0.0, 1)


def test_a_run_too_short_for_the_phases_is_refused():
    # floor(0.15 T) >= 1 needs T >= 7 (ceil(1 / 0.15) = 7)
    with pytest.raises(ConfigError, match="at least 7 optimizer steps"):
        training_phases(6, 0.15, 0.5)
    assert training_phases(7, 0.15, 0.5).warmup_end == 1
    # a phase of ratio 0 needs no step; a positive one needs one: 0.5 T >= 1 from T = 2
    with pytest.raises(ConfigError, match="at least 2 optimizer steps"):
        training_phases(1, 0.0, 0.5)
    with pytest.raises(ConfigError, match="at least 1 optimizer steps"):
        training_phases(0, 0.0, 0.0)
    assert training_phases(2, 0.0, 0.5) == Phases(total=2, warmup_end=0, prune_end=1)  # t_f = 1 step
    assert training_phases(1, 0.0, 0.0) == Phases(total=1, warmup_end=0, prune_end=1)
    assert training_phases(10, 0.2, 0.0) == Phases(total=10, warmup_end=2, prune_end=10)


# -- schedule (pure functions) -----------------------------------------------------------------


def test_phases_and_pruning_steps():
    phases = training_phases(1000, 0.15, 0.5)  # t_i = 150, t_f = 500
    assert (phases.warmup_end, phases.prune_end) == (150, 500)
    steps = [t for t in range(1, 1001) if is_pruning_step(t, phases, 10)]
    assert steps == list(range(160, 501, 10))  # k = 10, 20, ..., 350
    # T = 1003: t_i = floor(150.45) = 150, t_f = floor(501.5) = 501, last pruning step 502 (k = 352)
    phases = training_phases(1003, 0.15, 0.5)
    steps = [t for t in range(1, 1004) if is_pruning_step(t, phases, 10)]
    assert steps[0] == 160 and steps[-2:] == [500, 502]
    # 0.29 * 100 is 28.999999999999996 in floating point; the phase still has 29 steps
    assert training_phases(100, 0.29, 0.5).warmup_end == 29


def test_reference_schedule_by_hand():
    # M = 72 modules, b0 = 3, bT = 2: surplus E = 72; pruned = floor(72 (k / 350)^3)
    phases = training_phases(1000, 0.15, 0.5)
    pruned = {t: scheduled_pruned(t, phases, 72, 3, 2, "reference") for t in (150, 160, 230, 240, 325, 430, 500, 900)}
    # k=80: 72 * 0.01194 = 0.86 -> 0; k=90: 72 * 0.01700 = 1.22 -> 1; k=175: 72 / 8 = 9;
    # k=280: 72 * 0.512 = 36.86 -> 36; k=350: 72; after the phase: 72
    assert pruned == {150: 0, 160: 0, 230: 0, 240: 1, 325: 9, 430: 36, 500: 72, 900: 72}


def test_adalora_schedule_by_hand():
    # kept surplus = floor(72 (1 - k / 350)^3); pruned = 72 - that
    phases = training_phases(1000, 0.15, 0.5)
    pruned = {t: scheduled_pruned(t, phases, 72, 3, 2, "adalora") for t in (150, 160, 325, 430, 500)}
    # k=10: 72 * (34/35)^3 = 66.0035 -> 66 kept, 6 pruned; k=175: 9 kept, 63 pruned;
    # k=280: 72 * 0.2^3 = 0.576 -> 0 kept, 72 pruned
    assert pruned == {150: 0, 160: 6, 325: 63, 430: 72, 500: 72}


@pytest.mark.parametrize("schedule", ["reference", "adalora"])
@pytest.mark.parametrize("modules, b0, bT, total", [(72, 3, 2, 1000), (12, 12, 8, 37), (30, 5, 1, 211), (4, 2, 2, 50)])
def test_schedules_are_monotone_and_end_exactly_at_the_final_budget(schedule, modules, b0, bT, total):
    phases = training_phases(total, 0.15, 0.5)
    pruned = [scheduled_pruned(t, phases, modules, b0, bT, schedule) for t in range(1, total + 1)]
    assert all(a <= b for a, b in zip(pruned, pruned[1:]))
    assert modules * b0 - pruned[phases.prune_end - 1] == modules * bT
    assert pruned[phases.warmup_end - 1] == 0


# -- the math -------------------------------------------------------------------------------------


def test_closed_form_scores_equal_the_materialised_ones():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    B = torch.randn(3, 7, 5, generator=gen, dtype=torch.float64)
    c = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    c[1, 2] = 0.0  # a pruned component
    c[2] = 0.0  # a module whose every gate is closed: scores 0, not NaN
    closed, slow = importance_scores(A, B, c), materialised_scores(A, B, c)
    torch.testing.assert_close(closed, slow, atol=1e-10, rtol=0)
    assert closed[1, 2] == 0 and torch.all(closed[2] == 0)
    assert torch.all(closed[0] > 0)
    # the same at a small scale, where ||ΔW||_F < 1 (as at the start of training, c near 0)
    small = importance_scores(A * 1e-2, B * 1e-2, c)
    torch.testing.assert_close(small, materialised_scores(A * 1e-2, B * 1e-2, c), atol=1e-10, rtol=0)


def test_dem_on_a_hand_computed_module():
    layer = nn.Module()
    layer.query = nn.Linear(3, 2)
    method = dora(final_budget=1, init_budget=2, dem_coef=0.5)
    model = method.apply(layer, AdaptTarget("roberta", ("query",)))
    method.on_train_begin(model, 100)  # pruning ends at step 50
    with torch.no_grad():
        model.query.lora_A.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))  # Var(A_1) = 1, Var(A_2) = 0
        model.query.lora_B.copy_(torch.tensor([[1.0, 4.0], [3.0, 4.0]]))  # Var(B_1) = Var(1, 3) = 2, Var(B_2) = 0
    # R = (1 + 0 + 2 + 0) / (2 M b0) = 3 / 4; gamma R = 0.375
    assert method.extra_loss(model, 1).item() == pytest.approx(0.375)
    assert method.extra_loss(model, 50).item() == pytest.approx(0.375)
    assert method.extra_loss(model, 51) is None  # dropped once pruning has ended
    off = dora(final_budget=1, init_budget=2, dem_coef=0.0)
    plain = nn.Module()
    plain.query = nn.Linear(3, 2)
    plain = off.apply(plain, AdaptTarget("roberta", ("query",)))
    off.on_train_begin(plain, 100)
    assert off.extra_loss(plain, 1) is None  # dem_coef = 0: no DEM at all (Table 5)


def test_dem_is_averaged_over_the_modules_and_their_initial_components():
    block = nn.Module()
    block.query, block.value = nn.Linear(3, 2), nn.Linear(3, 2)
    method = dora(final_budget=1, init_budget=2, dem_coef=1.0)
    model = method.apply(block, AdaptTarget("roberta", ("query", "value")))
    method.on_train_begin(model, 100)
    with torch.no_grad():
        for layer in (model.query, model.value):
            layer.lora_A.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))  # variances 1, 0
            layer.lora_B.copy_(torch.tensor([[1.0, 4.0], [3.0, 4.0]]))  # variances 2, 0
    # M = 2, b0 = 2: R = (3 + 3) / (2 M b0) = 6 / 8
    assert method.extra_loss(model, 1).item() == pytest.approx(0.75)


def test_dem_batched_sum_matches_a_loop_over_components():
    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(4, 3, 9, generator=gen), torch.randn(4, 6, 3, generator=gen)
    by_hand = sum(A[g, i].var() + B[g, :, i].var() for g in range(4) for i in range(3))
    torch.testing.assert_close(dem_variance_sum(A, B), by_hand)


def test_layer_forward_is_eq_6():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    layer = DoRALinear(base, rank=3, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        layer.lora_c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 5)
    delta = (8.0 / 3) * sum(layer.lora_c[i] * torch.outer(layer.lora_B[:, i], layer.lora_A[i]) for i in range(3))
    torch.testing.assert_close(layer(x), base(x) + x @ delta.T)


def test_layer_forward_in_training_drops_the_input_and_rescales_it():
    torch.manual_seed(0)
    base = nn.Linear(5, 4)
    layer = DoRALinear(base, rank=3, alpha=8.0, dropout=0.25)
    with torch.no_grad():
        layer.lora_c.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(6, 5)
    delta = (8.0 / 3) * layer.lora_B @ torch.diag(layer.lora_c) @ layer.lora_A
    torch.manual_seed(1)
    # the mask the layer draws from the same seed (methods/shared/dropout.py on a CPU: 16-bit slices of random
    # int64s, kept at or above round(p 2^16) - 2^15 = -16384; p = 0.25 is exact at that resolution)
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, (8,), dtype=torch.int64)  # ceil(30 / 4) draws
    keep = (bits.view(torch.int16)[:30].view(x.shape) >= -16384).float()
    torch.manual_seed(1)
    out = layer.train()(x)
    # dropout(x) = x ⊙ m / (1 - p) on the adapter's input only; the base sees x whole
    torch.testing.assert_close(out, base(x) + (x * keep / 0.75) @ delta.T)
    assert 0 < keep.sum() < keep.numel()  # some of x was dropped
    torch.testing.assert_close(layer.eval()(x), base(x) + x @ delta.T)  # no dropout in eval


def test_layer_factors_follow_the_base_s_dtype():
    layer = DoRALinear(nn.Linear(5, 4, dtype=torch.float64), rank=3, alpha=8.0, dropout=0.1)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}


# -- the method on the tiny RoBERTa ---------------------------------------------------------


def test_only_components_and_head_train_and_the_model_starts_unchanged():
    model, target = tiny_model()
    model.eval()
    ids = torch.randint(3, 259, (2, 10))
    before = model(input_ids=ids).logits
    method = dora()
    model = method.apply(model, target)
    assert torch.equal(model(input_ids=ids).logits, before)  # c = 0: ΔW = 0 exactly
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(method.layers) == TINY_MODULES
    assert all(n.startswith("classifier.") or n.rsplit(".", 1)[-1] in ("lora_A", "lora_c", "lora_B") for n in trainable)
    factors = {n.rsplit(".", 1)[-1] for n in trainable if not n.startswith("classifier.")}
    assert factors == {"lora_A", "lora_c", "lora_B"}


def test_ema_follows_eq_8_from_the_first_step():
    model, target = tiny_model()
    method = dora(beta=0.9)
    model = method.apply(model, target)
    method.on_train_begin(model, 100)  # steps 1..15 are warm-up
    gen = torch.Generator().manual_seed(3)
    seen = []
    for step in (1, 2):
        with torch.no_grad():
            for layer in method.layers:
                layer.lora_c.copy_(torch.randn(3, generator=gen))
        seen.append(
            torch.cat(
                [
                    materialised_scores(layer.lora_A[None], layer.lora_B[None], layer.lora_c[None])
                    for layer in method.layers
                ]
            )
        )
        method.after_step(model, step)
    torch.testing.assert_close(method.ema, 0.9 * 0.1 * seen[0] + 0.1 * seen[1], rtol=1e-5, atol=1e-6)


def test_a_pruning_step_prunes_exactly_the_scheduled_lowest_components_ties_by_index():
    model, target = tiny_model()
    method = dora(beta=0.0)  # Ŝ = S: the ranking is the current scores'
    model = method.apply(model, target)
    method.on_train_begin(model, 100)  # t_i = 15, t_f = 50, L = 35; 12 modules, b0 = 3, bT = 2: surplus 12
    step = 15 + 25  # k = 25: floor(12 (25/35)^3) = floor(4.37) = 4 pruned
    assert is_pruning_step(step, method.phases, 5)
    with torch.no_grad():
        for layer in method.layers:
            layer.lora_c.fill_(1.0)
        # query, key and value of layer 0 become identical (tied scores), nearly all weight on one component
        for layer in method.layers[:3]:
            layer.lora_A.copy_(method.layers[0].lora_A)
            layer.lora_B.copy_(method.layers[0].lora_B)
            layer.lora_c.copy_(torch.tensor([5.0, 0.01, 0.02]))
    method.after_step(model, step)
    closed = torch.stack([layer.lora_c == 0 for layer in method.layers])
    assert int(closed.sum()) == 4
    # the lowest four: the three tied 0.01 gates, then the first (lowest module index) of the three tied 0.02 gates
    assert closed[:3].tolist() == [[False, True, True], [False, True, False], [False, True, False]]
    assert not closed[3:].any()


def test_training_ends_at_exactly_the_final_budget_and_masks_stay_fixed():
    model, target = tiny_model()
    method = dora(final_budget=2)
    model = method.apply(model, target)
    method.on_train_begin(model, 40)  # t_i = 6, t_f = 20: pruning steps 11, 16, 20; fixed from step 21
    assert method.first_countable_step() == 20
    train(model, method, 20)
    gates = torch.stack([layer.lora_c.detach().clone() for layer in method.layers])
    assert int((gates != 0).sum()) == 2 * TINY_MODULES  # bT x M components kept, the rest gated off
    train(model, method, 20, start=21, seed=1)
    after = torch.stack([layer.lora_c.detach() for layer in method.layers])
    assert torch.equal(after == 0, gates == 0)  # pruned gates held at 0 ...
    assert torch.all(after[gates != 0] != gates[gates != 0])  # ... while the kept ones still train

    report = method.report(model)
    sizes = {n: layer.base.in_features + layer.base.out_features + 1 for n, layer in zip(method.names, method.layers)}
    assert report["rank_allocation"] == {
        n: int((layer.lora_c != 0).sum()) for n, layer in zip(method.names, method.layers)
    }
    assert sum(report["rank_allocation"].values()) == 2 * TINY_MODULES
    assert report["final_trainable_params"] == sum(k * sizes[n] for n, k in report["rank_allocation"].items())
    assert method.paper_trainable_params(model, target) == report["final_trainable_params"]
    assert report["initial_trainable_params"] == 3 * sum(sizes.values())
    phases = method.phases
    assert report["budget_schedule"] == [
        {"step": t, "kept": 36 - scheduled_pruned(t, phases, 12, 3, 2, "reference")} for t in (11, 16, 20)
    ]
    assert report["budget_schedule"][-1]["kept"] == 24
    grid = report["rank_allocation_grid"]
    assert grid["rows"] == ["0", "1"] and len(grid["columns"]) == 6
    history = report["score_history"]
    # L = 14: floor(12 (5/14)^3) = 0, floor(12 (10/14)^3) = floor(4.37) = 4, then all 12 surplus components
    assert history["steps"] == [11, 16, 20] and [sum(k) for k in history["kept_by_type"]] == [36, 32, 24]
    assert history["columns"] == ["Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2"]  # the types this backbone has
    # the threshold of a ranking: the highest Ŝ that was pruned, at most the lowest kept one; none at step 11
    assert history["threshold"][0] is None
    for threshold, entry in zip(history["threshold"][1:], method.history[1:]):
        assert threshold == pytest.approx(entry["ema"][~entry["mask"]].max().item(), rel=1e-5)
        assert threshold <= entry["ema"][entry["mask"]].min().item()
    assert (report["init_budget"], report["final_budget"]) == (3, 2)  # Table 6 reads init_budget


def test_the_paper_count_follows_where_the_kept_components_are():
    # FFN components cost 32 + 64 + 1 = 97 parameters, attention ones 32 + 32 + 1 = 65. Gates that
    # make two of three components of every attention module negligible send the final ranking's
    # 12 prunings there: 12 attention + 12 FFN components stay, 12 x 65 + 12 x 97 = 1,944, where
    # bT = 2 everywhere would count 2 x (8 x 65 + 4 x 97) = 1,816.
    model, target = tiny_model()
    method = dora(final_budget=2, beta=0.0)
    model = method.apply(model, target)
    method.on_train_begin(model, 40)  # prune_end = 20: its ranking prunes the whole surplus of 12
    with torch.no_grad():
        for name, layer in zip(method.names, method.layers):
            attention = "attention" in name
            layer.lora_c.copy_(torch.tensor([5.0, 0.01, 0.01] if attention else [1.0, 1.0, 1.0]))
    assert method.paper_trainable_params(model, target) == 1_816  # before the mask is final: nominal
    method.after_step(model, 20)
    kept = {n: int(k) for n, k in zip(method.names, method.mask.sum(1))}
    assert sum(k for n, k in kept.items() if "attention" not in n) == 12
    assert method.paper_trainable_params(model, target) == 1_944
    assert method.report(model)["final_trainable_params"] == 1_944


def test_first_countable_step_needs_the_run_length():
    model, target = tiny_model()
    method = dora()
    method.apply(model, target)
    with pytest.raises(RuntimeError, match=r"needs on_train_begin\(model, total_steps\) first"):
        method.first_countable_step()


def test_pruned_gates_regrow_between_rankings():
    model, target = tiny_model()
    method = dora(final_budget=1)
    model = method.apply(model, target)
    method.on_train_begin(model, 100)  # b0 = 2; t_i = 15, prune_end = 50
    train(model, method, 45)  # last ranking at step 45 (k = 30): floor(12 (30/35)^3) = 7 pruned
    pruned = ~method.mask
    assert int(pruned.sum()) == 7
    train(model, method, 2, start=46, seed=1)  # no ranking at 46, 47
    gates = torch.stack([layer.lora_c.detach() for layer in method.layers])
    assert torch.all(gates[pruned] != 0)  # gentle pruning: gates of pruned components move again


def test_nominal_count_before_training_and_the_paper_count_formula():
    model, target = tiny_model()
    method = dora(final_budget=2)
    model = method.apply(model, target)
    per_layer = 4 * (32 + 32 + 1) + (32 + 64 + 1) * 2  # q, k, v, attention output; FFN in and out
    assert method.paper_trainable_params(model, target) == 2 * 2 * per_layer  # bT x 2 layers
    assert method.report(model)["initial_trainable_params"] == 3 * 2 * per_layer


def test_state_dict_round_trip_resumes_identically():
    model, target = tiny_model()
    method = dora()
    model = method.apply(model, target)
    method.on_train_begin(model, 40)
    train(model, method, 14)  # one ranking done (step 11)
    resumed_model, _ = tiny_model(seed=5)
    resumed = dora()
    resumed_model = resumed.apply(resumed_model, target)
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(method.state_dict())
    assert resumed.report(resumed_model) == method.report(model)
    for m, meth in ((model, method), (resumed_model, resumed)):
        with torch.no_grad():
            for layer in meth.layers:
                layer.lora_c.add_(0.01)
        meth.after_step(m, 16)  # the next ranking
    torch.testing.assert_close(resumed.ema, method.ema, rtol=0, atol=0)
    assert torch.equal(resumed.mask, method.mask) and resumed.history[-1]["step"] == 16
    # the state is a copy: the live scores and mask keep changing, a saved state must not
    saved = method.state_dict()
    ema, mask = saved["ema"].clone(), saved["mask"].clone()
    history = [{k: v.clone() if torch.is_tensor(v) else v for k, v in e.items()} for e in saved["history"]]
    with torch.no_grad():
        for layer in method.layers:
            layer.lora_c.mul_(-3.0).add_(0.5)
    method.after_step(model, 20)  # the last ranking: new scores, a new mask
    assert not torch.equal(method.ema, ema) and not torch.equal(method.mask, mask)
    assert torch.equal(saved["ema"], ema) and torch.equal(saved["mask"], mask)
    assert all(_same_entry(a, b) for a, b in zip(saved["history"], history))
    assert saved["total_steps"] == 40
    other = dora(final_budget=8)
    other.apply(*tiny_model())
    with pytest.raises(ValueError, match="same backbone and budget"):
        other.load_state_dict(method.state_dict())


def _same_entry(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_budget_goes_to_the_modules_a_teacher_changed():
    """A teacher = the base plus rank-3 updates in three modules. Each adapted layer of the
    student is trained to reproduce its teacher twin on random inputs; the layers the teacher
    left alone need no update. With bT = 1 (12 of 36 components kept) every component of the
    three changed modules must survive the global ranking.

    (Matching the whole network's output instead does not isolate the effect on this 2-layer
    random model: every module then gets some update, and eq. 7 scores a component by its
    share of its own module's update, not by how much the module matters.)"""
    base, target = tiny_model()
    teacher = copy.deepcopy(base)
    changed = [
        "roberta.encoder.layer.0.attention.self.value",
        "roberta.encoder.layer.1.intermediate.dense",
        "roberta.encoder.layer.1.output.dense",
    ]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in changed:
            weight = teacher.get_submodule(name).weight
            out_features, in_features = weight.shape
            weight += torch.randn(out_features, 3, generator=gen) @ torch.randn(3, in_features, generator=gen) / 8
    method = dora(final_budget=1, init_budget=3, dropout=0.0, dem_coef=0.0)
    student = method.apply(copy.deepcopy(base), target)
    method.on_train_begin(student, 60)  # pruning steps 14, 19, 24, 29, 30 (t_i = 9, prune_end = 30)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=2e-2)
    for step in range(1, 61):
        loss = 0.0
        for name, layer in zip(method.names, method.layers):
            x = torch.randn(16, layer.base.in_features, generator=gen)
            loss = loss + nn.functional.mse_loss(layer(x), teacher.get_submodule(name)(x))
        loss.backward()
        optimizer.step()
        method.after_step(student, step)
        optimizer.zero_grad()
    ranks = method.report(student)["rank_allocation"]
    assert sum(ranks.values()) == TINY_MODULES
    assert [ranks[n] for n in changed] == [3, 3, 3]
    others = [k for n, k in ranks.items() if n not in changed]
    assert sum(others) / len(others) < 1


# -- export ---------------------------------------------------------------------------------------


def test_export_is_an_ordinary_peft_lora_with_the_same_logits(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    model, target = tiny_model()
    base = copy.deepcopy(model)
    method = dora(final_budget=1, export_merged=True)
    model = method.apply(model, target)
    method.on_train_begin(model, 40)
    train(model, method, 40, lr=5e-2)
    with torch.no_grad():  # make sure one module has lost every component, whatever this seed did
        method.mask = method.mask.clone()
        method.mask[0] = False
        method.layers[0].lora_c.zero_()
    artifacts = method.export(model, tmp_path)
    assert artifacts == {"adapter": "adapter", "merged": "merged", "scores": "dora_scores.pt"}

    ranks = method.report(model)["rank_allocation"]
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    lora_a = {
        k.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): v.shape[0]
        for k, v in saved.items()
        if k.endswith("lora_A.weight")
    }
    assert lora_a == {n: k for n, k in ranks.items() if k > 0}  # only kept components, rank-0 modules left out

    model.eval()
    ids = torch.randint(3, 259, (3, 14))
    want = model(input_ids=ids).logits
    assert (base.eval()(input_ids=ids).logits - want).abs().max() > 1e-3  # training changed the model
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()  # (injects into base in place)
    assert (loaded(input_ids=ids).logits - want).abs().max() < 1e-4
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert (merged(input_ids=ids).logits - want).abs().max() < 1e-4
    scores = torch.load(tmp_path / "dora_scores.pt")
    assert scores["steps"] == [11, 16, 20] and scores["scores"].shape == (3, TINY_MODULES, 2)
    assert scores["modules"] == method.names
    assert scores["kept"] == [e["kept"] for e in method.history] and scores["kept"][-1] == TINY_MODULES
    assert torch.equal(scores["masks"], torch.stack([e["mask"] for e in method.history]))
    assert torch.equal(scores["scores"][-1], method.history[-1]["ema"])
    assert torch.equal(scores["final_mask"], method.mask) and torch.equal(scores["final_scores"], method.ema)


# -- the real size --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("budget, initial, final", [(2, 497_880, 331_920), (8, 1_991_520, 1_327_680)])
def test_roberta_base_counts(budget, initial, final):
    """b0 x 72 components at the start; bT x 72 at the end, nominally (uniform allocation):
    per layer 4 x (768 + 768 + 1) + 2 x (768 + 3072 + 1) = 13,830 per component rank."""
    cfg = BackboneConfig.from_dict(
        {**yaml.safe_load((CONF_DIR / "backbone" / "roberta-base.yaml").read_text()), "init": "random"}
    )
    model, target = load_model(cfg, "sequence_classification", 2), adapt_target(cfg, "sequence_classification")
    method = dora(final_budget=budget)
    model = method.apply(model, target)
    assert len(method.layers) == 72
    assert method.report(model)["initial_trainable_params"] == initial == math.ceil(1.5 * budget) * 12 * 13_830
    assert method.paper_trainable_params(model, target) == final == budget * 12 * 13_830


# -- control arms: which components a ranking prunes ------------------------------------------


def test_inverse_keeps_exactly_what_importance_prunes_first():
    scores = torch.tensor([0.30, 0.05, 0.90, 0.05, 0.60, 0.20, 0.75, 0.10])
    live = torch.ones(8, dtype=torch.bool)
    draws = torch.Generator().manual_seed(0)
    # importance prunes the lowest (ties by index: 1 before 3), inverse the highest
    assert components_to_prune(scores, live, 3, "importance", draws).tolist() == [1, 3, 7]  # in score order
    assert components_to_prune(scores, live, 5, "inverse", draws).tolist() == [2, 6, 4, 0, 5]
    kept_by_inverse = set(range(8)) - set(components_to_prune(scores, live, 5, "inverse", draws).tolist())
    assert kept_by_inverse == set(components_to_prune(scores, live, 3, "importance", draws).tolist())


def test_random_keeps_the_pruned_and_draws_the_rest_among_the_live():
    live = torch.tensor([True, False, True, True, False, True, True, True])
    pruned = components_to_prune(torch.zeros(8), live, 4, "random", torch.Generator().manual_seed(1))
    assert len(pruned) == 4 and {1, 4} <= set(pruned.tolist())
    with pytest.raises(ValueError, match="already are"):
        components_to_prune(torch.zeros(8), live, 1, "random", torch.Generator().manual_seed(1))


def masks_of_a_run(allocation: str, seed: int, steps: int = 20) -> list[torch.Tensor]:
    model, target = tiny_model()
    method = dora(final_budget=2, allocation=allocation, allocation_seed=seed)
    model = method.apply(model, target)
    method.on_train_begin(model, 40)  # pruning steps 11, 16, 20
    train(model, method, steps)
    return method, model, [e["mask"] for e in method.history]


@pytest.mark.parametrize("allocation", ["random", "inverse"])
def test_every_arm_keeps_the_schedule_s_count_after_every_ranking(allocation):
    reference, _, masks = masks_of_a_run("importance", 0)
    arm, _, arm_masks = masks_of_a_run(allocation, 0)
    assert [int(m.sum()) for m in arm_masks] == [int(m.sum()) for m in masks] == [36, 32, 24]
    assert arm.report(None)["budget_schedule"] == reference.report(None)["budget_schedule"]
    assert not torch.equal(arm_masks[-1], masks[-1])  # same count, other components


def test_random_masks_differ_between_seeds_and_nest_within_a_run():
    _, _, first = masks_of_a_run("random", 0)
    _, _, again = masks_of_a_run("random", 0)
    _, _, other = masks_of_a_run("random", 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[-1], other[-1])
    for earlier, later in zip(first, first[1:]):
        assert not (later & ~earlier).any()  # a component drawn for pruning stays pruned


def test_the_random_arms_seed_is_the_run_seed_and_step_folded_into_63_bits():
    from dora_bench.methods.dora import random_arm_seed

    assert random_arm_seed(3, 40) == 3 * 1_000_003 + 40
    # a seed so large that the product passes 2^63 wraps into torch's range (not modulo any other number)
    assert random_arm_seed(2**62, 7) == (2**62 * 1_000_003 + 7) % 2**63 == 2**62 + 7


def test_a_resumed_random_run_draws_the_same_mask():
    method, model, masks = masks_of_a_run("random", 3)
    model_a, target = tiny_model()
    interrupted = dora(final_budget=2, allocation="random", allocation_seed=3)
    model_a = interrupted.apply(model_a, target)
    interrupted.on_train_begin(model_a, 40)
    train(model_a, interrupted, 14)  # one ranking (step 11) done
    model_b, _ = tiny_model(seed=9)
    resumed = dora(final_budget=2, allocation="random", allocation_seed=3)
    model_b = resumed.apply(model_b, target)
    model_b.load_state_dict(model_a.state_dict())
    resumed.load_state_dict(interrupted.state_dict())
    with torch.no_grad():  # the weights decide nothing for the random arm: only the seed and the step do
        for layer in resumed.layers:
            layer.lora_c.normal_()
    for step in (16, 20):
        resumed.after_step(model_b, step)
    assert [torch.equal(a, b) for a, b in zip([e["mask"] for e in resumed.history], masks)] == [True] * 3


def test_the_no_pruning_arm_keeps_dora_s_scale():
    plain = dora(final_budget=8)
    flat = dora(final_budget=8, init_budget=8, default_scale=True)
    table6 = dora(final_budget=8, init_budget=8)
    assert plain.config.scaling == flat.config.scaling == pytest.approx(8 / 12)
    assert table6.config.scaling == 1.0
    model, target = tiny_model()
    flat.apply(model, target)
    assert [layer.scaling for layer in flat.layers] == pytest.approx([8 / 12] * TINY_MODULES)
    assert flat.ema.shape[1] == 8
