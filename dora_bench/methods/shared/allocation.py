"""Rank allocations as the paper draws them (Figure 2): a grid of layers x module types.

A method that distributes a budget (DoRA, AdaLoRA) reports ``{module name: rank}``;
``allocation_grid`` turns that into rows (layers, in model order) and columns (the
six adapted module types), so two methods' allocations can be set side by side;
``dora_bench.report.heatmaps`` draws them (each run's own PNG, and the panels of Figure 2).
"""

from __future__ import annotations

import re
from typing import Any

# (pattern on the module's dotted name, column label). First match wins, so the more
# specific RoBERTa "attention.output.dense" precedes the FFN "output.dense". Decoder LLMs: Llama's
# and Qwen2's gated MLP is gate/up (Wg, Wf1) then down (Wf2); GPT-2's c_attn holds q, k and v in one.
_TYPES: tuple[tuple[str, str], ...] = (
    (r"encoder_attn\.q_proj$", "Xq"),
    (r"encoder_attn\.k_proj$", "Xk"),
    (r"encoder_attn\.v_proj$", "Xv"),
    (r"encoder_attn\.out_proj$", "Xo"),
    (r"(query|q_proj)$", "Wq"),
    (r"(key|k_proj)$", "Wk"),
    (r"(value|v_proj)$", "Wv"),
    (r"c_attn$", "Wqkv"),
    (r"(attention\.output\.dense|out_proj|o_proj|attn\.c_proj)$", "Wo"),
    (r"gate_proj$", "Wg"),
    (r"(intermediate\.dense|fc1|up_proj|c_fc)$", "Wf1"),
    (r"(output\.dense|fc2|down_proj|mlp\.c_proj)$", "Wf2"),
)
COLUMN_ORDER = ("Wq", "Wk", "Wv", "Wqkv", "Wo", "Wg", "Wf1", "Wf2", "Xq", "Xk", "Xv", "Xo")
# RoBERTa/BERT `layer.N.`, BART `encoder.layers.N.` / `decoder.layers.N.`, Llama `layers.N.`, GPT-2 `h.N.`
_LAYER = re.compile(r"(?:(encoder|decoder)\.)?(?:layers?|h)\.(\d+)\.")


def module_position(name: str) -> tuple[str, str]:
    """``(row, column)`` of an adapted module: ``("3", "Wq")`` or ``("dec 1", "Xk")``."""
    found = _LAYER.search(name)
    if found is None:
        raise ValueError(f"no layer index in module name {name!r}")
    stack, index = found.groups()
    # BART has an encoder and a decoder stack, both called `layers`; RoBERTa (`encoder.layer`) and the
    # decoder-only LLMs have one.
    row = f"{'dec' if stack == 'decoder' else 'enc'} {index}" if stack and ".layers." in name else index
    for pattern, column in _TYPES:
        if re.search(pattern, name):
            return row, column
    raise ValueError(f"module {name!r} is none of the adapted types {COLUMN_ORDER}")


def allocation_grid(ranks: dict[str, int]) -> dict[str, Any]:
    """``{"rows": [...], "columns": [...], "values": [[rank or None]]}`` from per-module ranks."""
    cells: dict[tuple[str, str], int] = {}
    rows: list[str] = []
    for name, rank in ranks.items():
        row, column = module_position(name)
        if (row, column) in cells:
            raise ValueError(f"two modules map to layer {row!r}, type {column!r} (second: {name!r})")
        cells[(row, column)] = int(rank)
        if row not in rows:
            rows.append(row)
    rows.sort(key=_row_key)
    columns = [c for c in COLUMN_ORDER if any(col == c for _, col in cells)]
    values = [[cells.get((r, c)) for c in columns] for r in rows]
    return {"rows": rows, "columns": columns, "values": values}


def _row_key(row: str) -> tuple[int, int]:
    if row.startswith("enc "):
        return (0, int(row[4:]))
    if row.startswith("dec "):
        return (1, int(row[4:]))
    return (0, int(row))
