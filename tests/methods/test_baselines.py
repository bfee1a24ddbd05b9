"""The baselines on tiny random backbones: where adapters sit, identity at init, AdaLoRA's
allocator at work, prompt tuning's forward, weight-decomposed LoRA's magnitudes, and that
every baseline's yaml composes into a method."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.errors import ConfigError
from dora_bench.methods import build_method
from dora_bench.methods.adalora import orthogonality_penalty, phases
from support import CONF_DIR

TASKS = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "squad_v1", "squad_v2", "xsum"}
KIND = {"tiny": "sequence_classification", "tiny-bart": "seq2seq_lm"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~50x faster on one thread than with threads fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(backbone: str = "tiny", seed: int = 0):
    torch.manual_seed(seed)
    cfg = BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / f"{backbone}.yaml").read_text()))
    return load_model(cfg, KIND[backbone], num_labels=2), adapt_target(cfg, KIND[backbone])


def batch(backbone: str, n: int = 4, length: int = 10, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 259, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # one padded row, so the mask path is exercised
    out = {"input_ids": ids, "attention_mask": mask}
    if backbone == "tiny-bart":
        out["labels"] = torch.randint(3, 259, (n, 6), generator=g)
    else:
        out["labels"] = torch.randint(0, 2, (n,), generator=g)
    return out


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# -- adapters ------------------------------------------------------------------------------

PLACEMENT = {
    ("houlsby", "tiny"): {
        f"roberta.encoder.layer.{i}.{m}.adapter" for i in (0, 1) for m in ("attention.output", "output")
    },
    ("pfeiffer", "tiny"): {f"roberta.encoder.layer.{i}.output.adapter" for i in (0, 1)},
    ("houlsby", "tiny-bart"): {
        "model.encoder.layers.0.self_attn.out_proj.adapter",
        "model.encoder.layers.0.fc2.adapter",
        "model.decoder.layers.0.self_attn.out_proj.adapter",
        "model.decoder.layers.0.encoder_attn.out_proj.adapter",
        "model.decoder.layers.0.fc2.adapter",
    },
    ("pfeiffer", "tiny-bart"): {"model.encoder.layers.0.fc2.adapter", "model.decoder.layers.0.fc2.adapter"},
}


@pytest.mark.parametrize("method, backbone", sorted(PLACEMENT))
def test_adapters_sit_after_the_named_projections_and_only_they_train(method, backbone):
    model, target = tiny(backbone)
    budget = 2
    model = build_method({"name": method, "budget": budget}).apply(model, target)
    adapters = {n for n, m in model.named_modules() if n.endswith(".adapter")}
    assert adapters == PLACEMENT[(method, backbone)]
    width = (4 if method == "houlsby" else 8) * budget
    for name in adapters:
        assert model.get_submodule(name).down.out_features == width
    assert all(".adapter." in n or target.is_head(n) for n in trainable(model))
    assert any(target.is_head(n) for n in trainable(model)) == bool(target.head_modules)


def _logits(model, backbone: str) -> torch.Tensor:
    inputs = {k: v for k, v in batch(backbone).items() if k != "labels"}
    if backbone == "tiny-bart":
        inputs["decoder_input_ids"] = batch(backbone)["labels"]
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits.clone()


@pytest.mark.parametrize("method", ["adalora", "dora_wd", "lora"])
@pytest.mark.parametrize("backbone", ["tiny", "tiny-bart"])
def test_adapted_model_computes_what_the_backbone_computes_at_init(method, backbone):
    model, target = tiny(backbone)
    before = _logits(model, backbone)
    sizes = {"adalora": {"target_r": 2}, "dora_wd": {"r": 2}, "lora": {"r": 2}}[method]
    adapted = build_method({"name": method, **sizes}).apply(model, target)
    torch.testing.assert_close(_logits(adapted, backbone), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("backbone", ["tiny", "tiny-bart"])
def test_an_adapter_whose_up_projection_is_zero_leaves_the_block_as_it_was(method, backbone):
    """f = 0 must give back the frozen block exactly: the wrapper re-implements it faithfully
    (Pfeiffer's LN(f(LN(a + x)) + a + x) is LN(a + x) again)."""
    model, target = tiny(backbone)
    before = _logits(model, backbone)
    adapted = build_method({"name": method, "budget": 2}).apply(model, target)
    assert not torch.equal(_logits(adapted, backbone), before)  # a random f changes it, if only a little
    with torch.no_grad():
        for name, module in adapted.named_modules():
            if name.endswith(".adapter.up"):
                module.weight.zero_()
                module.bias.zero_()
    torch.testing.assert_close(_logits(adapted, backbone), before, atol=1e-6, rtol=0)


def test_houlsby_and_pfeiffer_blocks_compute_their_reference_arrangements():
    """Against the formulas written out by hand on one RoBERTa output block (eval: no dropout).
    Houlsby (adapter-bert): LN(a + f(a) + x); Pfeiffer (AdapterHub): LN(f(LN(a + x)) + a + x)."""
    import torch.nn.functional as F

    from dora_bench.methods.adapters import Bottleneck, HoulsbyConfig, HoulsbyOutput, PfeifferConfig, PfeifferOutput

    model, _ = tiny()
    block = model.roberta.encoder.layer[0].output.eval()
    torch.manual_seed(3)
    h, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
    a = h @ block.dense.weight.T + block.dense.bias
    norm = block.LayerNorm
    for config, wrapper, act in (
        (HoulsbyConfig(budget=1, init_std=0.3), HoulsbyOutput, F.gelu),
        (PfeifferConfig(budget=1), PfeifferOutput, F.relu),
    ):
        adapter = Bottleneck(32, config)

        def f(v, act=act, adapter=adapter):
            return act(v @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias

        expected = norm(a + f(a) + x) if wrapper is HoulsbyOutput else norm(f(norm(a + x)) + a + x)
        with torch.no_grad():
            torch.testing.assert_close(wrapper(block, adapter)(h, x), expected, atol=1e-5, rtol=1e-5)
            assert f(a).abs().max() > 1e-3  # the adapter's term is not negligible, so the test can fail


def test_an_adapted_projection_adds_its_adapter_to_the_projection():
    """BART and decoder LLMs: ``a + f(a)`` with ``a = projection(x)``, by hand on a non-zero adapter."""
    import torch.nn.functional as F

    from dora_bench.methods.adapters import AdaptedProjection, Bottleneck, HoulsbyConfig

    torch.manual_seed(4)
    projection, adapter = torch.nn.Linear(6, 8), Bottleneck(8, HoulsbyConfig(budget=1, init_std=0.3))
    x = torch.randn(3, 6)
    a = projection(x)
    f = F.gelu(a @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
    with torch.no_grad():
        torch.testing.assert_close(AdaptedProjection(projection, adapter)(x), a + f)
        assert f.abs().max() > 1e-3  # a - f(a) would differ


def test_adapter_inits_follow_their_references():
    from dora_bench.methods.adapters import Bottleneck, HoulsbyConfig, PfeifferConfig

    torch.manual_seed(0)
    houlsby, pfeiffer = Bottleneck(768, HoulsbyConfig(budget=8)), Bottleneck(768, PfeifferConfig(budget=8))
    for proj in (houlsby.down, houlsby.up):  # truncated normal, std 1e-3, cut at 2 std
        assert proj.weight.abs().max() <= 2e-3 and 0.8e-3 < proj.weight.std() < 1e-3
        assert not proj.bias.any()
    for proj in (pfeiffer.down, pfeiffer.up):  # N(0, 0.02)
        assert 0.019 < proj.weight.std() < 0.021 and proj.weight.abs().max() > 0.04
    assert isinstance(houlsby.act, torch.nn.GELU) and isinstance(pfeiffer.act, torch.nn.ReLU)


def test_adapter_learns_a_nonzero_update():
    model, target = tiny()
    model = build_method({"name": "houlsby", "budget": 1}).apply(model, target)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch("tiny")).loss.backward()
    optimizer.step()
    up = model.get_submodule("roberta.encoder.layer.0.output.adapter.up")
    assert up.weight.abs().sum() > 0  # the zero init does not trap it at the identity


# -- AdaLoRA -------------------------------------------------------------------------------


def test_adalora_phases_follow_the_fractions_and_reject_runs_too_short():
    assert phases(40, 0.15, 0.5) == (6, 20)
    assert phases(60, 0.15, 0.5) == (9, 30)  # 0.15 * 60 is 8.999... in floating point
    with pytest.raises(ConfigError, match=r"T=5 gives tinit=0, tfinal=2; train for at least 7 steps$"):
        phases(5, 0.15, 0.5)  # 0.15 * 5 rounds down to no warm-up at all; 1 / 0.15 -> 7 steps
    # a zero fraction asks for no phase at all: not "too short"
    assert phases(5, 0.2, 0.0) == (1, 0) and phases(5, 0.0, 0.0) == (0, 0)


def test_adalora_counts_every_epoch_before_its_schedule_is_known():
    method = build_method({"name": "adalora", "init_r": 4, "target_r": 2})
    assert method.first_countable_step() == 0  # no run yet: nothing to wait for


def test_adalora_allocator_prunes_to_the_target_budget():
    model, target = tiny()
    method = build_method({"name": "adalora", "target_r": 2, "deltaT": 2})  # init_r = ceil(1.5 * 2) = 3
    model = method.apply(model, target)
    modules = len(method.final_ranks(model))
    assert modules == 12 and set(method.final_ranks(model).values()) == {3}
    total = 40
    method.on_train_begin(model, total)
    assert model.base_model.rankallocator.peft_config.total_step == total  # the allocator sees T
    assert method.first_countable_step() == total - 20

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    seen_patterns = set()
    for step in range(1, total + 1):
        inputs = batch("tiny", n=8, seed=step % 4)
        (model(**inputs).loss + method.extra_loss(model, step)).backward()
        optimizer.step()
        method.after_step(model, step)
        optimizer.zero_grad()
        seen_patterns.add(tuple(sorted(method.final_ranks(model).items())))

    report = method.report(model)
    kept = [entry["kept"] for entry in report["budget_schedule"]]
    assert kept[0] == 3 * modules and kept[-1] == 2 * modules
    assert kept == sorted(kept, reverse=True) and len(kept) > 2  # pruned in several rounds
    assert all(6 < entry["step"] <= 20 for entry in report["budget_schedule"][1:])  # inside the budget phase
    assert len(seen_patterns) > 2
    assert sum(report["rank_allocation"].values()) == 2 * modules
    grid_total = sum(v for row in report["rank_allocation_grid"]["values"] for v in row if v is not None)
    assert grid_total == 2 * modules
    # pruned singular values stay at zero through the final phase
    for name, layer in model.base_model.model.named_modules():
        if name in report["rank_allocation"]:
            assert int((layer.lora_E["default"] != 0).sum()) <= report["rank_allocation"][name]
    sizes = {"attention": 32 + 32 + 1, "intermediate": 32 + 64 + 1, "output": 64 + 32 + 1}
    expected = sum(
        r
        * (
            sizes["attention"]
            if ("attention" in n or "self" in n)
            else sizes["intermediate"]
            if "intermediate" in n
            else sizes["output"]
        )
        for n, r in report["rank_allocation"].items()
    )
    assert report["final_trainable_params"] == expected


def test_adalora_penalty_is_the_loops_to_add_not_hidden_in_the_forward():
    model, target = tiny()
    method = build_method({"name": "adalora", "target_r": 2})
    model = method.apply(model, target)
    inputs = batch("tiny")
    out = model(**inputs)
    plain = torch.nn.functional.cross_entropy(out.logits, inputs["labels"])
    torch.testing.assert_close(out.loss, plain)  # peft adds nothing inside the forward
    penalty = method.extra_loss(model, 1)
    assert penalty.requires_grad and penalty.item() > 0
    torch.testing.assert_close(penalty, 0.1 * orthogonality_penalty(model))
    identity = build_method({"name": "adalora", "target_r": 2, "orth_reg_weight": 0.0})
    assert identity.extra_loss(identity.apply(tiny()[0], target), 1) is None


@pytest.mark.parametrize("init_r", [2, 4])  # below, and equal (nothing to prune: peft's kthvalue(k=0) fails)
def test_adalora_needs_an_initial_rank_above_the_target(init_r):
    with pytest.raises(ConfigError, match="init_r"):
        build_method({"name": "adalora", "target_r": 4, "init_r": init_r})


# -- prompt tuning -------------------------------------------------------------------------


def test_prompt_tuning_trains_only_the_prompt_and_the_head():
    model, target = tiny()
    method = build_method({"name": "prompt_tuning", "budget": 2})
    model = method.apply(model, target)
    names = trainable(model)
    prompt = [n for n in names if "prompt_encoder" in n]
    assert len(prompt) == 1 and all("prompt_encoder" in n or target.is_head(n) for n in names)
    assert model.get_parameter(prompt[0]).shape == (20, 32)  # 10 tokens per budget unit, width 32
    assert method.paper_trainable_params(model, target) == 20 * 32

    inputs = batch("tiny")
    out = model(**inputs)
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.get_parameter(prompt[0]).grad.abs().sum() > 0
    frozen = [p for n, p in model.named_parameters() if n not in names]
    assert all(p.grad is None for p in frozen)


def test_prompt_tuning_refuses_what_is_not_classification():
    model, target = tiny("tiny-bart")
    with pytest.raises(ConfigError, match="classification"):
        build_method({"name": "prompt_tuning", "budget": 2}).apply(model, target)


# -- weight-decomposed LoRA ----------------------------------------------------------------


def test_dora_wd_trains_a_magnitude_per_output_row():
    model, target = tiny()
    method = build_method({"name": "dora_wd", "r": 2})
    model = method.apply(model, target)
    magnitudes = {n: p for n, p in model.named_parameters() if "lora_magnitude_vector" in n}
    assert len(magnitudes) == 12 and all(p.requires_grad for p in magnitudes.values())
    before = {n: p.detach().clone() for n, p in magnitudes.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(3):
        model(**batch("tiny", seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(not torch.equal(before[n], p) for n, p in magnitudes.items())
    lora_count = 2 * 2 * (4 * (32 + 32) + (32 + 64) + (64 + 32))
    assert method.paper_trainable_params(model, target) == lora_count + 2 * (5 * 32 + 64)


def test_dora_wd_drops_its_adapters_input_at_the_configured_rate():
    from dora_bench.methods.shared.dropout import InputDropout

    model, target = tiny()
    model = build_method({"name": "dora_wd", "r": 2, "dropout": 0.1}).apply(model, target)
    dropouts = [m.lora_dropout["default"] for m in model.modules() if hasattr(m, "lora_dropout")]
    assert len(dropouts) == 12 and all(isinstance(d, InputDropout) and d.p == 0.1 for d in dropouts)


# -- configs -------------------------------------------------------------------------------

OURS = ["full_ft", "bitfit", "lora", "adalora", "houlsby", "pfeiffer", "prompt_tuning", "dora_wd"]


def compose_method(name: str, budget: int) -> dict:
    raw = {
        "budget": budget,
        "task": yaml.safe_load((CONF_DIR / "task" / "rte.yaml").read_text()),
        "method": yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text()),
    }
    return OmegaConf.to_container(OmegaConf.create(raw).method, resolve=True)


@pytest.mark.parametrize("name", OURS)
def test_method_yaml_composes_and_names_its_learning_rates(name):
    method_cfg = compose_method(name, budget=8)
    assert method_cfg["name"] == name
    assert "lr" in method_cfg and set(method_cfg["lr_by_task"]) <= TASKS
    assert all(lr > 0 for lr in method_cfg["lr_by_task"].values())
    method = build_method(method_cfg)
    assert method.name == name


def test_method_yaml_sizes_follow_the_budget():
    sizes = {
        "lora": lambda m: m.config.r,
        "dora_wd": lambda m: m.config.r,
        "houlsby": lambda m: m.config.width,
        "pfeiffer": lambda m: m.config.width,
        "prompt_tuning": lambda m: m.config.num_virtual_tokens,
        "adalora": lambda m: (m.config.init_r, m.config.target_r),
    }
    got = {name: [size(build_method(compose_method(name, b))) for b in (2, 8)] for name, size in sizes.items()}
    assert got == {
        "lora": [2, 8],
        "dora_wd": [2, 8],
        "houlsby": [8, 32],
        "pfeiffer": [16, 64],
        "prompt_tuning": [20, 80],
        "adalora": [(3, 2), (12, 8)],
    }
    assert (
        compose_method("adalora", 2)["deltaT"]
        == yaml.safe_load((CONF_DIR / "task" / "rte.yaml").read_text())["pruning_interval"]
    )
    assert math.ceil(1.5 * 5) == build_method(compose_method("adalora", 5)).config.init_r


@pytest.mark.parametrize(
    ("task", "alpha", "orth"),
    [("rte", 32, 0.3), ("stsb", 32, 0.3), ("sst2", 16, 0.1), ("cola", 32, 0.1), ("demo", 32, 0.1)],
)
def test_adalora_takes_alpha_and_orthogonality_weight_with_its_scripts_rates(task, alpha, orth):
    # AdaLoRA's run_debertav3_<task>.sh set lr, lora_alpha and reg_orth_coef together: the rate we take
    # from a script comes with that script's alpha (alpha / init_r is the update scale) and weight
    from support import compose

    cfg = compose([f"task={task}", "method=adalora", "budget=8", "backbone=tiny"])
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    assert (method_cfg["alpha"], method_cfg["orth_reg_weight"]) == (alpha, orth)
    config = build_method(method_cfg).config
    assert (config.alpha, config.orth_reg_weight) == (alpha, orth)


def test_adalora_export_of_a_module_pruned_to_rank_0_reloads_exactly(tmp_path, capsys):
    """A module the allocator emptied is saved as 0 x d factors: no PeftWarning about a bad sharded
    save, one line of ours, and plain peft reloads the adapter with the same logits."""
    import warnings

    from peft import PeftModel

    model, target = tiny()
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method({"name": "adalora", "target_r": 2})  # init_r = 3
    model = method.apply(model, target)
    method.on_train_begin(model, 40)
    layers = sorted(method.final_ranks(model))
    emptied = layers[:2]
    pattern = {f"{name}.lora_E.default": [name not in emptied] * 2 + [False] for name in layers}
    model.peft_config["default"].rank_pattern = pattern
    with torch.no_grad():
        for name, param in model.base_model.model.named_parameters():
            if name.endswith("lora_E.default"):  # trained values, masked as the allocator masks them
                values = torch.randn_like(param)
                keep = torch.tensor(pattern[name], dtype=torch.bool).unsqueeze(1)
                param.copy_(values.masked_fill(~keep, 0.0))
            elif name.endswith(("lora_A.default", "lora_B.default")):
                param.add_(torch.randn_like(param) * 0.1)
    assert sorted(n for n, r in method.final_ranks(model).items() if r == 0) == emptied
    model.eval()
    ids = torch.randint(3, 259, (3, 9), generator=torch.Generator().manual_seed(2))
    expected = model(input_ids=ids).logits
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.export(model, tmp_path)
    assert not [w for w in caught if "invalid shape" in str(w.message)]
    assert "AdaLoRA pruned 2 module(s) to rank 0: exported as empty (no-update) adapters" in capsys.readouterr().out
    fresh, _ = tiny()
    fresh.load_state_dict(pristine)
    with warnings.catch_warnings():
        # peft >= 0.21 checks rank_pattern's keys against module names when it injects (peft PR 3588);
        # AdaLoRA's keys name its lora_E parameters, so every key is reported as unmatched. They are
        # not ignored: peft's AdaLoRA reload resizes by them afterwards, as the logits below show.
        warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
        reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    actual = reloaded(input_ids=ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    plain, _ = tiny()
    plain.load_state_dict(pristine)
    assert not torch.allclose(actual, plain.eval()(input_ids=ids).logits, atol=1e-3)  # the adapter does something
