"""Seconds per training step of every method on one backbone: the cost table of `make bench`.

A step is what the training loop does (dora_bench/run/train.py): forward, task loss + the method's
extra loss, backward, gradient clipping, AdamW, the method's ``after_step``, ``zero_grad``.
Methods run round robin, one step each in turn, so a machine whose load drifts slows every
method alike; the table gives the median and the ratios to Full FT's and LoRA's medians, which
are what carry over between machines. ``--sequential`` runs one method at a time instead (built,
timed, freed), so that on a GPU each method's own peak memory can be measured.
A decoder backbone (Llama, Qwen2, GPT-2) trains as a causal LM on its own tokens.

    python scripts/bench_methods.py                                  # MiniLM (real weights), CPU
    python scripts/bench_methods.py --backbone roberta-base --device cuda --steps 30
    python scripts/bench_methods.py --methods lora,dora --profile    # where a step's time goes
    python scripts/bench_methods.py --backbone llama --random-init --device cuda --sequential \
        --batch-size 16 --seq-len 256                                 # Llama-3.2-1B's shape, peak GiB per method
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch

from dora_bench.backbones import HEADS, BackboneConfig, adapt_target, load_model
from dora_bench.configs import conf_dir
from dora_bench.methods import build_method, method_names
from dora_bench.report.params import method_config
from dora_bench.run.launch import autocast_factory
from dora_bench.run.train import build_optimizer, optimizer_params, train_in_fp32

DEFAULT_METHODS = "full_ft,bitfit,houlsby,pfeiffer,lora,adalora,dora,dora_wd"


def load_backbone(args: argparse.Namespace) -> BackboneConfig:
    import yaml

    raw = yaml.safe_load((conf_dir() / "backbone" / f"{args.backbone}.yaml").read_text())
    return BackboneConfig.from_dict({**raw, **({"init": "random"} if args.random_init else {})})


def autocasts(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether a step runs under bf16 autocast: as a run, on a GPU or wherever the frozen weights are bf16."""
    return autocast_factory(device, "auto", load_backbone(args).dtype) is not contextlib.nullcontext


class Runner:
    """One method's model, optimizer and synthetic batches; ``step()`` times one training step."""

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device):
        backbone = load_backbone(args)
        # an encoder classifies, a decoder (no classification head here) predicts its next tokens
        self.kind = (
            "sequence_classification" if (backbone.architecture, "sequence_classification") in HEADS else "causal_lm"
        )
        torch.manual_seed(0)
        model = load_model(backbone, self.kind, num_labels=2)
        self.method = build_method(method_config(name, args.budget))
        self.model = train_in_fp32(self.method.apply(model, adapt_target(backbone, self.kind))).to(device)
        self.autocast = autocast_factory(device, "auto", backbone.dtype)  # as a run (see autocasts)
        # a long run, so that the steps timed here lie inside DoRA's and AdaLoRA's scoring phase
        self.method.on_train_begin(self.model, 100_000)
        self.optimizer = build_optimizer(self.model, 1e-4, 0.01, device)
        self.vocab, self.args, self.device, self.steps = self.model.config.vocab_size, args, device, 0
        self.generator = torch.Generator().manual_seed(0)
        self.model.train()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> float:
        self.steps += 1
        shape = (self.args.batch_size, self.args.seq_len)
        low = 1000 if self.vocab > 2000 else 3  # clear of the special tokens (a byte tokenizer has 259 ids)
        ids = torch.randint(low, self.vocab, shape, generator=self.generator)
        labels = ids if self.kind == "causal_lm" else torch.randint(0, 2, (shape[0],), generator=self.generator)
        batch = {"input_ids": ids, "attention_mask": torch.ones(shape, dtype=torch.long), "labels": labels}
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.sync()
        start = time.perf_counter()
        with self.autocast():
            loss = self.model(**batch).loss
        extra = self.method.extra_loss(self.model, self.steps)
        (loss if extra is None else loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(optimizer_params(self.optimizer), 1.0)
        self.optimizer.step()
        self.method.after_step(self.model, self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - start


def time_round_robin(names: list[str], args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """Every method alive at once, one step each in turn: seconds per timed step; no memory (shared)."""
    runners = {name: Runner(name, args, device) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.steps):
        for name, runner in runners.items():
            seconds = runner.step()
            if i >= args.warmup:
                times[name].append(seconds)
    return times, {}


def time_sequentially(names: list[str], args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """One method at a time: seconds per timed step and, on a GPU, the peak memory its run allocated."""
    times, peaks = {}, {}
    for name in names:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        runner = Runner(name, args, device)
        for _ in range(args.warmup):
            runner.step()
        times[name] = [runner.step() for _ in range(args.steps)]
        if device.type == "cuda":
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
        del runner
    return times, peaks


def heading(args: argparse.Namespace, device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    order = "one method at a time" if args.sequential else "round robin"
    precision = "fp32 + bf16 autocast" if autocasts(args, device) else "fp32"
    return (
        f"### step time: {args.backbone}{' (random init)' if args.random_init else ''}, budget {args.budget}, "
        f"batch {args.batch_size} x {args.seq_len}, {where}, {precision}, median of {args.steps} steps ({order})\n"
    )


def step_table(times: dict[str, list[float]], peaks: dict[str, float]) -> str:
    """Markdown: each method's median, min and max seconds a step, its ratios to Full FT's and LoRA's
    medians (where they ran), and its peak GiB (where measured)."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    references = [
        (f"/ {label}", medians[key]) for key, label in (("full_ft", "Full FT"), ("lora", "LoRA")) if key in medians
    ]
    header = ["method", "s / step (median)", "min", "max", *(label for label, _ in references)]
    header += ["peak GiB"] if peaks else []
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, values in times.items():
        cells = [name, f"{medians[name]:.3f}", f"{min(values):.3f}", f"{max(values):.3f}"]
        cells += [f"{medians[name] / reference:.2f}" for _, reference in references]
        cells += [f"{peaks[name]:.2f}"] if peaks else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm", help="a conf/backbone/ name (default: %(default)s)")
    parser.add_argument("--random-init", action="store_true", help="random weights (no download, same cost)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="RTE's batch size (Table 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="RTE's max_length (Table 8)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators per method")
    parser.add_argument(
        "--sequential", action="store_true", help="one method at a time (built, timed, freed): its own peak GPU memory"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.methods.split(",")
    unknown = sorted(set(names) - set(method_names()))
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}: choose from {', '.join(method_names())}")
    device = torch.device(args.device)
    times, peaks = time_sequentially(names, args, device) if args.sequential else time_round_robin(names, args, device)
    print(heading(args, device))
    print(step_table(times, peaks))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in names:
            runner = Runner(name, args, device)
            runner.step()  # past the first step's one-off costs
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.step()
            print(f"\n#### {name}\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
