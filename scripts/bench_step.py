"""Time one training step on roberta-base (random init): LoRA (our layer, equal to peft's, r = b0), DoRA with
closed-form importance scores, and DoRA scoring the released code's way (every component
product c_i B_i A_i materialised as a d_out x d_in matrix, module by module).

A step is forward + backward + AdamW + the method's hooks (DEM loss, ``after_step``): bf16
autocast on CUDA, fp32 on CPU. DoRA's steps run inside its pruning phase and every step is a
pruning step (``--pruning-interval 1``, the worst case), so the bookkeeping column is an upper
bound on what a real run pays per step.

    python scripts/bench_step.py --device cuda --steps 20
    python scripts/bench_step.py --device cpu --steps 3 --batch-size 4
    python scripts/bench_step.py --tiny          # seconds on a CPU: the 2-layer model
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import yaml

from dora_bench.backbones import BackboneConfig, adapt_target, load_model
from dora_bench.configs import conf_dir
from dora_bench.methods import build_method
from dora_bench.methods.dora import EPS, DoRA, DoRAConfig

CONF = conf_dir() / "backbone"


def materialised_scores(A: torch.Tensor, B: torch.Tensor, c: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. 7 as the released code computes it: per module, the (r, d_out, d_in) stack of products."""
    rows = []
    for a, b, gate in zip(A, B, c):
        gated = gate[:, None] * a
        products = torch.einsum("ok,kd->kod", b, gated)
        rows.append(products.flatten(1).norm(dim=1) / ((b @ gated).norm() + eps))
    return torch.stack(rows)


class MaterialisedDoRA(DoRA):
    score_fn = staticmethod(materialised_scores)


def build(variant: str, args, device: torch.device):
    backbone = "tiny.yaml" if args.tiny else "roberta-base.yaml"
    cfg = BackboneConfig.from_dict({**yaml.safe_load((CONF / backbone).read_text()), "init": "random"})
    torch.manual_seed(0)
    model = load_model(cfg, "sequence_classification", num_labels=2)
    dora_cfg = DoRAConfig(final_budget=args.budget, pruning_interval=args.pruning_interval, dem_coef=0.5)
    method = {
        "lora": lambda: build_method({"name": "lora", "r": dora_cfg.init_budget}),
        "dora": lambda: DoRA(dora_cfg),
        "dora-materialised": lambda: MaterialisedDoRA(dora_cfg),
    }[variant]()
    model = method.apply(model, adapt_target(cfg, "sequence_classification")).to(device)
    return model, method, model.config.vocab_size


class Runner:
    """One variant's model, method and optimizer; ``step()`` times one training step."""

    def __init__(self, variant: str, args, device: torch.device):
        self.model, self.method, self.vocab = build(variant, args, device)
        self.method.on_train_begin(self.model, 100 * (args.warmup + args.steps))
        # DoRA's steps start inside its pruning phase, where the bookkeeping is heaviest
        self.step_index = self.method.phases.warmup_end if isinstance(self.method, DoRA) else 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")
        self.args, self.device = args, device
        self.gen = torch.Generator().manual_seed(0)
        self.model.train()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> tuple[float, float]:
        """Seconds for the whole step and for the method's part (extra_loss + after_step)."""
        self.step_index += 1
        args, model, method = self.args, self.model, self.method
        ids = torch.randint(3, self.vocab, (args.batch_size, args.seq_len), generator=self.gen).to(self.device)
        labels = torch.randint(0, 2, (args.batch_size,), generator=self.gen).to(self.device)
        self.sync()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = model(input_ids=ids, labels=labels).loss
        self.sync()
        mark = time.perf_counter()
        extra = method.extra_loss(model, self.step_index)
        self.sync()
        book = time.perf_counter() - mark
        (loss if extra is None else loss + extra).backward()
        self.optimizer.step()
        self.sync()
        mark = time.perf_counter()
        method.after_step(model, self.step_index)
        self.sync()
        book += time.perf_counter() - mark
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - start, book


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--budget", type=int, default=2, help="final budget bT; b0 = ceil(1.5 bT) = LoRA's rank")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--pruning-interval", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the 2-layer model: a CPU smoke test")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecations, via peft
    if args.tiny:
        args.batch_size, args.seq_len = min(args.batch_size, 4), min(args.seq_len, 32)
    device = torch.device(args.device)
    name = "tiny" if args.tiny else "roberta-base"
    print(
        f"{name} random init, batch {args.batch_size} x {args.seq_len}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, device {device}, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}, "
        f"budget {args.budget} (b0 = {DoRAConfig(final_budget=args.budget).init_budget}), "
        f"pruning interval {args.pruning_interval}, torch threads {torch.get_num_threads()}"
    )
    # Round robin, one step of each variant in turn: a machine whose load drifts (a shared
    # CPU, a GPU clocking down) then slows every variant alike.
    runners = {v: Runner(v, args, device) for v in ("lora", "dora", "dora-materialised")}
    times = {v: ([], []) for v in runners}
    for i in range(args.warmup + args.steps):
        for variant, runner in runners.items():
            step, book = runner.step()
            if i >= args.warmup:
                times[variant][0].append(step)
                times[variant][1].append(book)
    means = {}
    for variant, (steps, books) in times.items():
        means[variant] = (statistics.mean(steps), statistics.mean(books))
        print(
            f"  {variant:<18} step {means[variant][0] * 1e3:9.2f} ms (median {statistics.median(steps) * 1e3:9.2f})"
            f"   method bookkeeping {means[variant][1] * 1e3:8.3f} ms"
        )
    print(f"DoRA / LoRA step time:                    {means['dora'][0] / means['lora'][0]:.3f}")
    print(f"materialised / closed-form step time:     {means['dora-materialised'][0] / means['dora'][0]:.3f}")
    print(f"materialised / closed-form bookkeeping:   {means['dora-materialised'][1] / means['dora'][1]:.2f}")


if __name__ == "__main__":
    main()
