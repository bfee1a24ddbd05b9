"""PEFT methods, one module each, registered by name (see ``base.py`` for the interface).

Adding a method is one import line here (its module calls ``register_method``).
"""

from dora_bench.methods import (
    adalora,  # noqa: F401  (registers "adalora")
    adapters,  # noqa: F401  (registers "houlsby" and "pfeiffer")
    bitfit,  # noqa: F401  (registers "bitfit")
    dora,  # noqa: F401  (registers "dora")
    dora_wd,  # noqa: F401  (registers "dora_wd", NOT the paper's DoRA)
    full_ft,  # noqa: F401  (registers "full_ft")
    lora,  # noqa: F401  (registers "lora")
    prompt_tuning,  # noqa: F401  (registers "prompt_tuning")
)
from dora_bench.methods.base import AdaptTarget, Method, build_method, method_class, method_names, register_method

__all__ = ["AdaptTarget", "Method", "build_method", "method_class", "method_names", "register_method"]
