"""dora-bench: reproduce the benchmarks of dynamic-rank DoRA (Mao et al., ACL 2024) and its baselines.

Data flows one way, and so do imports:
conf/ -> tasks (load, tokenise, metrics) -> backbones + methods -> train (one loop)
-> records (one record.json per run) -> tables / figures.
"""

__version__ = "0.1.0"
