"""Our LoRA layer against peft's: the same function and gradients for the same weights; the
cheap input dropout keeps nn.Dropout's mathematics; the export loads with plain peft."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.errors import ConfigError
from dora_bench.methods import build_method
from dora_bench.methods.lora import LoRALinear
from dora_bench.methods.shared.dropout import InputDropout, drop_input
from support import CONF_DIR


def test_lora_linear_matches_peft_lora_in_output_and_gradients():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(12, 7))
    ours = LoRALinear(nn.Linear(12, 7), rank=3, alpha=8.0, dropout=0.0)
    ours.base.load_state_dict(base[0].state_dict())
    theirs = get_peft_model(base, LoraConfig(r=3, lora_alpha=8.0, lora_dropout=0.0, target_modules=["0"]))
    layer = theirs.base_model.model[0]
    with torch.no_grad():
        nn.init.normal_(ours.lora_B)  # B = 0 at init would hide a wrong scaling
        layer.lora_A["default"].weight.copy_(ours.lora_A)
        layer.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(4, 5, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    torch.testing.assert_close(ours.lora_A.grad, layer.lora_A["default"].weight.grad)
    torch.testing.assert_close(ours.lora_B.grad, layer.lora_B["default"].weight.grad)


def test_lora_init_is_peft_s():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(384, 384), rank=8, alpha=8.0, dropout=0.1)
    bound = 1 / 384**0.5  # kaiming_uniform_ with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert not layer.lora_B.any() and layer.scaling == 1.0


def test_input_dropout_keeps_with_probability_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    dropped, factor = drop_input(x, 0.1, training=True)
    realised = 6554 / 65536  # on a CPU p is used rounded to a multiple of 2^-16, and so is the rescaling
    assert factor == 1 / (1 - realised)
    kept = (dropped != 0).float()
    assert abs(kept.mean().item() - (1 - realised)) < 0.003  # 6 standard errors of a binomial mean at n = 400k
    # four decisions come from each random int64: every 16-bit slice keeps at the same rate
    for slice_kept in kept.view(-1, 4).mean(0).tolist():
        assert abs(slice_kept - (1 - realised)) < 0.006
    module = InputDropout(0.1)
    assert abs(module(x).mean().item() - 1.0) < 0.004  # unbiased, as nn.Dropout
    half = drop_input(torch.ones(400_000), 0.5, training=True)
    assert half[1] == 2.0 and abs((half[0] != 0).float().mean().item() - 0.5) < 0.005
    module.eval()
    assert torch.equal(module(x), x) and drop_input(x, 0.0, True) == (x, 1.0)
    with pytest.raises(ConfigError, match=r"^dropout p=1e-06 rounds to 0/65536 on a CPU: use 0, or"):
        drop_input(x, 1e-6, True)


def test_the_cpu_mask_draws_one_random_int64_per_four_elements_rounded_up():
    """The stream of random numbers after a mask is a function of the mask's size: 5 to 8 elements take
    two int64s (later masks, and everything else drawn after them, stay as they were)."""
    after = {}
    for count in (4, 5, 8, 9):
        torch.manual_seed(0)
        drop_input(torch.ones(count), 0.1, training=True)
        after[count] = torch.get_rng_state()
    assert torch.equal(after[5], after[8])
    assert not torch.equal(after[4], after[5]) and not torch.equal(after[8], after[9])


def test_lora_export_reloads_with_plain_peft_and_gives_the_same_logits(tmp_path):
    from peft import PeftModel

    cfg = BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / "tiny.yaml").read_text()))
    torch.manual_seed(0)
    base = load_model(cfg, "sequence_classification", num_labels=2)
    pristine = {k: v.clone() for k, v in base.state_dict().items()}
    method = build_method({"name": "lora", "r": 2})
    model = method.apply(base, adapt_target(cfg, "sequence_classification"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    ids = torch.randint(3, 259, (3, 9))
    expected = model(input_ids=ids).logits
    method.export(model, tmp_path)
    fresh = load_model(cfg, "sequence_classification", num_labels=2)
    fresh.load_state_dict(pristine)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_the_merged_copy_leaves_the_trained_model_as_it_was(tmp_path):
    """``merged_copy`` (DoRA's ``export_merged``) works on a copy: the live model keeps its adapted layers
    and every weight (a shallow copy would share them, and peft's merge would write into the model)."""
    from dora_bench.methods.lora import merged_copy

    cfg = BackboneConfig.from_dict(yaml.safe_load((CONF_DIR / "backbone" / "tiny.yaml").read_text()))
    torch.manual_seed(0)
    method = build_method({"name": "lora", "r": 2})
    model = method.apply(
        load_model(cfg, "sequence_classification", num_labels=2), adapt_target(cfg, "sequence_classification")
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(3, 259, (3, 9))
    expected = model(input_ids=ids).logits
    method.export(model, tmp_path)
    merged = merged_copy(model, method.names, tmp_path / "adapter").eval()
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in method.names)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
