"""Is the Hugging Face Hub reachable? One probe shared by the model and the data loaders.

A leaf module: offline, transformers and datasets each retry for ~25-45 s before failing,
so both ask here first and go straight to the local cache (or a one-line error).
"""

from __future__ import annotations

import functools
import os
import socket

_TRUE = ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co answers; HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 force False.
    When it is unreachable, offline mode is switched on for the rest of the process."""
    if any(os.environ.get(var, "0").lower() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        _go_offline()
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        _go_offline()
        return False


def _go_offline() -> None:
    # transformers probes the Hub for side files (adapter_config.json...) even with
    # local_files_only; offline mode is the one switch every layer honours.
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
