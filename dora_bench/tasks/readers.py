"""Reading raw examples: local files (tsv/csv/json/jsonl/parquet) and Hugging Face Hub datasets.

Every row comes with where it was read (``file.tsv line 12``) so a bad value can be
reported by file and line. Tab-separated files are read with quoting off: GLUE's TSVs
contain unbalanced quote characters (MRPC: ``"The foodservice pie business...``) that a
quoting parser (pandas' default) would swallow across lines.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dora_bench.errors import ConfigError, DataError
from dora_bench.hub import hub_reachable

if TYPE_CHECKING:
    import datasets

FILE_FORMATS = ("tsv", "csv", "json", "jsonl", "parquet")


@dataclass(frozen=True)
class Row:
    values: dict[str, Any]
    where: str  # "path line 12" / "path row 3": for error messages

    def get(self, field: str) -> Any:
        if field not in self.values:
            columns = ", ".join(map(str, self.values))
            raise DataError(f"{self.where}: no column {field!r} (columns: {columns}): check the task's field names")
        return self.values[field]

    def text(self, field: str) -> str:
        value = self.get(field)
        if value is None:  # a missing value (json null, parquet null); "" is a valid text
            raise DataError(f"{self.where}: column {field!r} has no value: fill it or drop the row")
        return value if isinstance(value, str) else str(value)


def read_tsv(
    path: Path, *, columns: list[str] | None = None, rename: dict[str, str] | None = None, skip_malformed: bool = False
) -> list[Row]:
    """Rows of a tab-separated file with quoting off.

    ``columns``: the file has no header row and these are its columns (CoLA); else the
    first line is the header (a UTF-8 byte-order mark before it is dropped: MRPC).
    ``rename`` maps file column names to the names the task uses. A row with the wrong
    number of columns is a DataError naming the line, or is skipped with
    ``skip_malformed`` (QQP's train.tsv has a few such rows; HF datasets drops them too).
    """
    if not path.is_file():
        raise DataError(f"{path} does not exist: check task.data_dir (expects the GLUE download script's layout)")
    csv.field_size_limit(sys.maxsize)  # SQuAD-length fields are fine
    rows, skipped = [], 0
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = columns or next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header line")
        names = [(rename or {}).get(c, c) for c in header]
        for fields in reader:
            if not fields:  # blank line (e.g. a trailing one)
                continue
            if len(fields) != len(names):
                if skip_malformed:
                    skipped += 1
                    continue
                raise DataError(
                    f"{path} line {reader.line_num}: {len(fields)} tab-separated columns, expected {len(names)} "
                    f"({', '.join(header)}): fix or delete the line"
                )
            rows.append(Row(dict(zip(names, fields)), f"{path} line {reader.line_num}"))
    if skipped:
        print(f"[dora-bench] {path}: skipped {skipped} malformed rows (task.malformed_rows=skip)", file=sys.stderr)
    return rows


def read_table(path: Path) -> list[Row]:
    """Rows of a csv / tsv / json / jsonl / parquet file (format from the extension).

    ``.json`` holds a list of objects (or JSON lines, as ``datasets``' ``to_json`` writes).
    ``.csv`` uses standard quoting; ``.tsv`` none (see the module docstring).
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FILE_FORMATS:
        raise ConfigError(f"{path}: unknown file type {path.suffix!r}: use one of .{', .'.join(FILE_FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path} does not exist: check the path given on the command line")
    if fmt == "tsv":
        return read_tsv(path)
    if fmt == "csv":
        csv.field_size_limit(sys.maxsize)
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = []
            for record in reader:
                if None in record or None in record.values():
                    raise DataError(
                        f"{path} line {reader.line_num}: wrong number of columns: fix the row or its quoting"
                    )
                rows.append(Row(record, f"{path} line {reader.line_num}"))
            return rows
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return [Row(r, f"{path} row {i + 1}") for i, r in enumerate(pq.read_table(path).to_pylist())]
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if "Extra data" not in err.msg:  # else: JSON lines saved as .json
                raise DataError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from None
        else:
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{path}: expected a JSON list of objects (or one object per line)")
            return [Row(r, f"{path} item {i + 1}") for i, r in enumerate(data)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: expected a JSON object")
        rows.append(Row(record, f"{path} line {number}"))
    return rows


def load_hub_split(
    hub_id: str, config: str | None, split: str, *, revision: str | None = None, hint: str
) -> datasets.Dataset:
    """``datasets.load_dataset(hub_id, config, split=split)``; offline, only a cached copy.

    ``hint`` is the offline alternative to suggest (``task.data_dir=...``).
    """
    import datasets

    if not hub_reachable():
        # Without this, datasets retries for ~25 s before failing; offline mode still
        # serves a copy from its own cache.
        datasets.config.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(hub_id, config, split=split, revision=revision)
    except Exception as err:  # ConnectionError, DatasetNotFoundError, FileNotFoundError...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise DataError(
            f"can't load {hub_id}/{config or ''} split {split!r} from the Hub ({reason}): offline, use {hint}"
        ) from None
