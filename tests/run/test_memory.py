"""The memory line before a run (``run/memory.py``), checked by hand on the tiny configs, and the
measured peak beside it after the run."""

from __future__ import annotations

import pytest

from dora_bench.run import memory
from dora_bench.run.train import train

GIB = 2**30


def test_the_estimate_of_a_tiny_encoder_run_is_the_documented_formula(tiny_cfg, capsys):
    record = train(tiny_cfg("method=lora", "trainer.max_steps=1", "trainer.epochs=1"))
    # tiny-roberta with LoRA r=2: 36,642 parameters held in fp32, of which 2,914 train: the adapters,
    # 2 layers x 2 x (4 x (32 + 32) + 2 x (32 + 64)) = 1,792, and the head, (32 x 32 + 32) + (32 x 2 + 2) = 1,122
    assert (record["trainable_params"]["model"], record["trainable_params"]["total"]) == (36_642, 1_792 + 1_122)
    weights, trainable = 36_642 * 4, 2_914 * 12
    # batch 16 x length 64, 2 layers, h = 32, 2 heads, fp32 (e = 4), a classifier: no logits term
    activations = 16 * 64 * 2 * (34 * 32 + 5 * 2 * 64) * 4 // 2
    assert activations == 7_077_888
    assert record["extras"]["memory_estimate"] == {
        "weights_gib": weights / GIB,
        "trainable_optimizer_gib": trainable / GIB,
        "activations_gib": activations / GIB,
        "total_gib": (weights + trainable + activations) / GIB,
        "batch": 16,
        "length": 64,
    }
    out = capsys.readouterr().out
    assert (
        "[dora-bench] memory estimate: weights 0.000137 GiB, trainable+optimizer 3.26e-05 GiB, "
        "activations ~0.00659 GiB at batch 16 × length 64 → ~0.00676 GiB\n"
    ) in out
    # after the run, the measured peak beside it: on a CPU the process's peak RSS
    measured = record["extras"]["efficiency"]
    assert measured["peak_memory_source"] == "peak RSS"
    assert measured["peak_memory_gib"] == pytest.approx(measured["peak_rss_mib"] / 1024, abs=1e-4)
    peak = f"{measured['peak_rss_mib'] / 1024:.3g}"
    assert f"[dora-bench] memory: estimated ~0.00676 GiB, measured peak {peak} GiB (peak RSS)" in out


def test_a_decoder_with_recomputation_and_accumulation_counts_one_micro_batch_and_its_logits(tiny_cfg):
    record = train(
        tiny_cfg(
            "task=gsm8k-synthetic",
            "backbone=tiny-llama",
            "method=lora",
            "trainer.batch_size=8",
            "trainer.grad_accum=2",
            "trainer.gradient_checkpointing=true",
            "trainer.max_steps=1",
            "trainer.epochs=1",
        )
    )
    estimate = record["extras"]["memory_estimate"]
    # micro-batch 8 / 2 = 4, length 128; 2 layers, h = 64, 4 heads, vocabulary 259, fp32
    one_layer = 4 * 128 * (34 * 64 + 5 * 4 * 128) * 4 // 2  # the layer being recomputed
    inputs = 4 * 128 * 2 * 64 * 4  # each layer's input, kept
    logits = 4 * 128 * 259 * 8  # fp32 logits and their gradient
    assert (one_layer, inputs, logits) == (4_849_664, 262_144, 1_060_864)
    assert estimate["activations_gib"] * GIB == one_layer + inputs + logits
    assert (estimate["batch"], estimate["length"]) == (4, 128)
    counts = record["trainable_params"]
    assert estimate["weights_gib"] * GIB == counts["model"] * 4
    assert estimate["trainable_optimizer_gib"] * GIB == counts["total"] * 12


def test_the_line_shows_three_significant_figures():
    estimate = memory.MemoryEstimate(2.5, 0.0123, 19.94, 22.4523, 4, 512)
    assert memory.line(estimate) == (
        "[dora-bench] memory estimate: weights 2.5 GiB, trainable+optimizer 0.0123 GiB, "
        "activations ~19.9 GiB at batch 4 × length 512 → ~22.5 GiB"
    )


def test_an_encoder_decoder_counts_its_decoder_layers_too():
    from types import SimpleNamespace

    bart = SimpleNamespace(
        hidden_size=16, num_attention_heads=2, num_hidden_layers=2, decoder_layers=3, vocab_size=50,
        is_encoder_decoder=True,
    )  # fmt: skip
    # batch 2 x length 8, e = 2: one layer keeps 2 * 8 * (34 * 16 + 5 * 2 * 8) * 2 // 2 = 9,984 bytes
    one_layer = 2 * 8 * (34 * 16 + 5 * 2 * 8) * 2 // 2
    assert one_layer == 9_984
    logits = 2 * 8 * 50 * 8  # the summaries' fp32 logits and their gradient
    assert memory.activation_bytes_of(bart, 2, 8, 2, lm_head=True, recompute=False) == 5 * one_layer + logits
    assert memory.activation_bytes_of(bart, 2, 8, 2, lm_head=False, recompute=False) == 5 * 9_984
    # recomputed: each of the 5 layers' inputs, 2 * 8 * 16 * 2 bytes, and one layer's activations
    assert memory.activation_bytes_of(bart, 2, 8, 2, lm_head=False, recompute=True) == 5 * 512 + 9_984
    encoder_only = SimpleNamespace(**{**vars(bart), "is_encoder_decoder": False})
    assert memory.activation_bytes_of(encoder_only, 2, 8, 2, lm_head=False, recompute=False) == 2 * 9_984
