"""Tokenise once: encoded splits saved under ``cache_dir``, keyed by everything that shapes them.

The key hashes the data's identity (file path, size and modification time, or the Hub
id/config/split), the tokenizer's identity (class, name_or_path, vocabulary size,
special ids), and the encoding settings (max length, fields, stride...). Changing any
of these gives a new file; stale files are never read. Files are written to a temporary
name and renamed, so a crash or a parallel run never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Bump when the layout of cached encodings changes.
CACHE_FORMAT = 1


def file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "size": len(tokenizer),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "pad": tokenizer.pad_token_id,
    }


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(cache_dir: Path | None, stem: str, key_parts: dict[str, Any], build: Callable[[], dict]) -> dict:
    """``build()``'s result, read from ``<cache_dir>/<stem>-<key>.pt`` when present.

    ``build`` must return a dict of tensors, strings, numbers and lists/dicts of them
    (what ``torch.load(weights_only=True)`` reads back). ``cache_dir=None``: no cache.
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{stem}-{cache_key(**key_parts)}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as err:  # unreadable (a full disk truncated it...): rebuild it, and say so
            print(
                f"[dora-bench] cache file {path} is unreadable ({type(err).__name__}): re-tokenising", file=sys.stderr
            )
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(value, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return value
