"""PEFT methods, one module each, registered by name (see ``base.py`` for the interface).

Adding a method is one import line here (its module calls ``register_method``).
"""

from dora_bench.methods.base import AdaptTarget, Method, build_method, method_class, method_names, register_method

from dora_bench.methods import full_ft  # noqa: E402,F401  (registers "full_ft")
from dora_bench.methods import bitfit  # noqa: E402,F401  (registers "bitfit")
from dora_bench.methods import lora  # noqa: E402,F401  (registers "lora")
from dora_bench.methods import dora  # noqa: E402,F401  (registers "dora")
from dora_bench.methods import adalora  # noqa: E402,F401  (registers "adalora")
from dora_bench.methods import adapters  # noqa: E402,F401  (registers "houlsby" and "pfeiffer")
from dora_bench.methods import prompt_tuning  # noqa: E402,F401  (registers "prompt_tuning")
from dora_bench.methods import dora_wd  # noqa: E402,F401  (registers "dora_wd", NOT the paper's DoRA)

__all__ = ["AdaptTarget", "Method", "build_method", "method_class", "method_names", "register_method"]
