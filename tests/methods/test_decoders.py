"""The methods on decoder LLMs: GPT-2's Conv1D treated as the linear map it is, adapted models equal to
their base at init, exports that plain peft reloads, and the refusals where a method has nothing to act on."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn
from transformers.pytorch_utils import Conv1D

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.errors import ConfigError
from dora_bench.methods import build_method
from dora_bench.methods.dora import DoRALinear
from dora_bench.methods.lora import LoRALinear
from dora_bench.methods.shared.linears import fan_in_fan_out, features
from support import CONF_DIR

DECODERS = ("tiny-llama", "tiny-gpt2")


def backbone(name: str) -> BackboneConfig:
    return BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / f"{name}.yaml").read_text()))


def decoder(name: str, seed: int = 0) -> tuple[nn.Module, BackboneConfig]:
    torch.manual_seed(seed)
    cfg = backbone(name)
    return load_model(cfg, "causal_lm").eval(), cfg


def perturb_trainable(model: nn.Module) -> None:
    """Move every trainable tensor off its init (B = 0 or c = 0 would hide a wrong export)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)


def test_conv1d_is_seen_as_the_linear_map_with_the_transposed_weight():
    torch.manual_seed(0)
    conv = Conv1D(nf=7, nx=12)
    nn.init.normal_(conv.bias)
    linear = nn.Linear(12, 7)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    assert features(conv) == features(linear) == (12, 7)
    assert fan_in_fan_out([conv]) and not fan_in_fan_out([linear])
    with pytest.raises(ValueError, match="mix nn.Linear and Conv1D"):
        fan_in_fan_out([conv, linear])
    x = torch.randn(3, 5, 12)
    torch.testing.assert_close(conv(x), linear(x))
    for layer_type in (LoRALinear, DoRALinear):
        on_conv, on_linear = layer_type(conv, 4, 8.0, 0.0), layer_type(linear, 4, 8.0, 0.0)
        with torch.no_grad():
            for a, b in zip(on_conv.parameters(), on_linear.parameters()):
                if a.requires_grad:  # the adapter's factors (and DoRA's gates), nonzero and shared
                    a.normal_()
                    b.copy_(a)
        assert on_conv.lora_A.shape == (4, 12) and on_conv.lora_B.shape == (7, 4)
        torch.testing.assert_close(on_conv(x), on_linear(x))
        assert not torch.allclose(on_conv(x), conv(x))  # the adapter does contribute


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("method", ["lora", "dora", "dora_wd", "adalora"])
def test_adapted_decoder_computes_its_base_at_init(name, method):
    model, cfg = decoder(name)
    ids = torch.randint(3, 259, (2, 11))
    expected = model(input_ids=ids).logits
    adapted = build_method({"name": method, **SIZE[method]}).apply(model, adapt_target(cfg, "causal_lm")).eval()
    torch.testing.assert_close(adapted(input_ids=ids).logits, expected)


SIZE = {
    "lora": {"r": 2},
    "dora": {"final_budget": 2},
    "dora_wd": {"r": 2},
    "adalora": {"target_r": 2},
}


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("method", ["lora", "dora", "dora_wd"])
def test_decoder_export_reloads_with_plain_peft_and_gives_the_same_logits(tmp_path, name, method):
    from peft import PeftModel

    model, cfg = decoder(name)
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    plugin = build_method({"name": method, **SIZE[method]})
    model = plugin.apply(model, adapt_target(cfg, "causal_lm"))
    if method == "dora":
        plugin.on_train_begin(model, 20)
        plugin.mask[0, 0] = False  # a pruned component must stay out of the export
    perturb_trainable(model)
    if method == "dora":
        with torch.no_grad():
            plugin._apply_mask()
    model.eval()
    ids = torch.randint(3, 259, (2, 9))
    expected = model(input_ids=ids).logits
    plugin.export(model, tmp_path)
    fresh, _ = decoder(name, seed=1)
    fresh.load_state_dict(pristine)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert reloaded.peft_config["default"].fan_in_fan_out == (name == "tiny-gpt2")  # Conv1D: weight stored in x out


@pytest.mark.parametrize("name", DECODERS)
def test_lora_and_dora_count_the_same_components_on_decoders(name):
    """Budget matching: LoRA at rank r and DoRA's final count at bT = r cost the same per module but one
    gate, d_in + d_out (+ 1) per rank, on every adapted projection (GPT-2's fused c_attn: 64 in, 192 out)."""
    model, cfg = decoder(name)
    target = adapt_target(cfg, "causal_lm")
    lora = build_method({"name": "lora", "r": 2})
    adapted = lora.apply(model, target)
    shapes = [features(adapted.get_submodule(n).base) for n in lora.names]
    assert len(shapes) == {"tiny-llama": 2 * 7, "tiny-gpt2": 2 * 4}[name]
    assert lora.paper_trainable_params(adapted, target) == sum(2 * (i + o) for i, o in shapes)
    dora = build_method({"name": "dora", "final_budget": 2})
    model, _ = decoder(name)
    adapted = dora.apply(model, target)
    assert dora.paper_trainable_params(adapted, target) == sum(2 * (i + o + 1) for i, o in shapes)


def test_dora_reports_a_rank_grid_with_the_decoders_module_types():
    model, cfg = decoder("tiny-llama")
    dora = build_method({"name": "dora", "final_budget": 2})
    dora.apply(model, adapt_target(cfg, "causal_lm"))
    grid = dora.report(model)["rank_allocation_grid"]
    assert grid["rows"] == ["0", "1"] and grid["columns"] == ["Wq", "Wk", "Wv", "Wo", "Wg", "Wf1", "Wf2"]
    model, cfg = decoder("tiny-gpt2")
    dora = build_method({"name": "dora", "final_budget": 2})
    dora.apply(model, adapt_target(cfg, "causal_lm"))
    assert dora.report(model)["rank_allocation_grid"]["columns"] == ["Wqkv", "Wo", "Wf1", "Wf2"]


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize(("method", "per_layer"), [("houlsby", 2), ("pfeiffer", 1)])
def test_adapters_follow_the_output_projections_of_a_decoder(name, method, per_layer):
    model, cfg = decoder(name)
    plugin = build_method({"name": method, "budget": 2})
    adapted = plugin.apply(model, adapt_target(cfg, "causal_lm"))
    assert plugin.report(adapted)["adapters"] == 2 * per_layer
    trained = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trained and all(".adapter." in n for n in trained)
    # with a zero up-projection each adapter adds nothing: the model is its base again
    reference, _ = decoder(name)
    with torch.no_grad():
        for module in adapted.modules():
            if hasattr(module, "up") and isinstance(module.up, nn.Linear):
                module.up.weight.zero_()
    ids = torch.randint(3, 259, (2, 7))
    torch.testing.assert_close(adapted(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_bitfit_refuses_a_backbone_without_biases_and_trains_gpt2s():
    model, cfg = decoder("tiny-llama")
    with pytest.raises(ConfigError, match="no bias terms"):
        build_method({"name": "bitfit"}).apply(model, adapt_target(cfg, "causal_lm"))
    model, cfg = decoder("tiny-gpt2")
    adapted = build_method({"name": "bitfit"}).apply(model, adapt_target(cfg, "causal_lm"))
    trained = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trained and all(n.endswith(".bias") for n in trained)


def test_prompt_tuning_prepends_to_a_decoder_and_its_labels():
    model, cfg = decoder("tiny-llama")
    plugin = build_method({"name": "prompt_tuning", "budget": 1, "tokens_per_budget": 3})
    adapted = plugin.apply(model, adapt_target(cfg, "causal_lm"))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == 3 * 64
    ids = torch.randint(3, 259, (2, 5))
    out = adapted(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert out.logits.shape[1] == 5 + 3 and torch.isfinite(out.loss)
