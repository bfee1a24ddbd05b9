"""Table 9's line for any run: training time, time per step, peak memory, adapter size.

``measure`` goes into ``record["extras"]["efficiency"]`` and ``line`` is printed at the end of a run.
Times are the epochs' optimizer steps (evaluation left out; attempts before a resume included).
GPU memory is what torch allocated at its peak during training; on any device the process's
peak resident memory (RSS) since set-up is recorded too: on a CPU run it is the only memory figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def measure(epochs: list[dict], steps: int, device: torch.device, train_peak_mib: float) -> dict[str, Any]:
    seconds = sum(epoch["seconds"] for epoch in epochs)
    return {
        "train_minutes": round(seconds / 60, 3),
        "seconds_per_step": round(seconds / max(steps, 1), 4),
        "peak_gpu_mib": round(train_peak_mib, 1) if device.type == "cuda" else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def reset_peak_rss() -> None:
    """Restart the count of the process's peak resident memory (Linux: VmHWM, through /proc/self/clear_refs),
    so that a sweep's runs in one process each get their own peak, not the largest so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux (or not allowed): peak_rss_mib then reports the process's lifetime peak


def peak_rss_mib() -> float:
    """Peak resident memory since ``reset_peak_rss`` (everything: weights, data, evaluation), MiB."""
    try:
        for text in Path("/proc/self/status").read_text().splitlines():
            if text.startswith("VmHWM:"):
                return round(int(text.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux and BSD: KiB


def artifact_mib(out_dir: Path, name: str | None) -> float | None:
    """Size on disk of an exported adapter (a file or a folder), MiB; None when the method exports none."""
    if not name:
        return None
    path = out_dir / name
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 3)


def line(record: dict[str, Any]) -> str:
    e, counts = record["extras"]["efficiency"], record["trainable_params"]
    memory = f"peak GPU {e['peak_gpu_mib']:,.0f} MiB" if e["peak_gpu_mib"] is not None else "no GPU"
    return (
        f"[dora-bench] efficiency: {record['method']} trains {counts['total']:,} of {counts['model']:,} parameters; "
        f"{e['train_minutes']:.2f} min training, {e['seconds_per_step']:.3f} s/step; {memory}, "
        f"peak process RSS {e['peak_rss_mib']:,.0f} MiB; {record['precision']}, frozen weights "
        f"{record['extras']['frozen_weights']}"
    )
