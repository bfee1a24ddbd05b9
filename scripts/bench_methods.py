"""Seconds per training step of every method on one backbone: the cost table of `make bench`.

A step is what the training loop does (dora_bench/run/train.py): forward, task loss + the method's
extra loss, backward, gradient clipping, AdamW, the method's ``after_step``, ``zero_grad``.
Methods run round robin, one step each in turn, so a machine whose load drifts slows every
method alike; the table gives the median and the ratio to Full FT's median, which is what
carries over between machines.

    python scripts/bench_methods.py                                  # MiniLM (real weights), CPU
    python scripts/bench_methods.py --backbone roberta-base --device cuda --steps 30
    python scripts/bench_methods.py --methods lora,dora --profile    # where a step's time goes
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.configs import conf_dir
from dora_bench.methods import build_method, method_names
from dora_bench.report.params import method_config
from dora_bench.run.train import build_optimizer, optimizer_params

DEFAULT_METHODS = "full_ft,bitfit,houlsby,pfeiffer,lora,adalora,dora,dora_wd"


class Runner:
    """One method's model, optimizer and synthetic batches; ``step()`` times one training step."""

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device):
        import yaml

        raw = yaml.safe_load((conf_dir() / "backbone" / f"{args.backbone}.yaml").read_text())
        backbone = BackboneConfig.from_dict({**raw, **({"init": "random"} if args.random_init else {})})
        torch.manual_seed(0)
        model = load_model(backbone, "sequence_classification", num_labels=2)
        self.method = build_method(method_config(name, args.budget))
        self.model = self.method.apply(model, adapt_target(backbone, "sequence_classification")).to(device)
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
        batch = {
            "input_ids": torch.randint(1000, self.vocab, shape, generator=self.generator),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "labels": torch.randint(0, 2, (shape[0],), generator=self.generator),
        }
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.sync()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.model(**batch).loss
        extra = self.method.extra_loss(self.model, self.steps)
        (loss if extra is None else loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(optimizer_params(self.optimizer), 1.0)
        self.optimizer.step()
        self.method.after_step(self.model, self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - start


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
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.methods.split(",")
    unknown = sorted(set(names) - set(method_names()))
    if unknown:
        parser.error(f"unknown methods {', '.join(unknown)}: choose from {', '.join(method_names())}")
    device = torch.device(args.device)
    runners = {name: Runner(name, args, device) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.steps):
        for name, runner in runners.items():
            seconds = runner.step()
            if i >= args.warmup:
                times[name].append(seconds)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"### step time: {args.backbone}{' (random init)' if args.random_init else ''}, budget {args.budget}, "
        f"batch {args.batch_size} x {args.seq_len}, {where}, fp32{' + bf16 autocast' if device.type == 'cuda' else ''}"
        f", "
        f"median of {args.steps} steps (round robin)\n"
    )
    reference = statistics.median(times["full_ft"]) if "full_ft" in times else None
    print("| method | s / step (median) | min | max | / Full FT |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.2f}" if reference else "-"
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {ratio} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, runner in runners.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.step()
            print(f"\n#### {name}\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
