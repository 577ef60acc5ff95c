"""Read a text corpus (Parquet, CSV or JSONL; a file, a directory or a glob) as a Ray Dataset.

The dataset streams: nothing here pulls the corpus into the driver. Each row comes out with
`text` (str), `reject` ("" or the reason the row cannot be embedded), `replaced` (whether
undecodable bytes were replaced) and, when configured, `id` and `label`.
"""

import glob
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from icc.errors import ICCError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
# pyarrow parses CSV and JSONL in blocks that must hold a whole row: this bounds one text's size.
MAX_ROW_BYTES = 256 << 20


def list_files(path: str) -> tuple[list[str], str]:
    """Expand a file, directory or glob into sorted files of one format: (files, format)."""
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path, recursive=True))
    elif os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() in FORMATS)
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ICCError(f"data.path not found: {path}")
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise ICCError(f"no Parquet, CSV or JSONL files under data.path: {path}")
    formats = {FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in formats:
        raise ICCError(f"unsupported file type in {path}: use .parquet, .csv or .jsonl")
    if len(formats) > 1:
        raise ICCError(f"data.path mixes file formats ({', '.join(sorted(formats))}): {path}")
    return files, formats.pop()


def read_table(files: list[str], fmt: str):
    """Lazy Ray Dataset over `files`. CSV values may hold newlines inside quotes."""
    import pyarrow.json as pajson
    import ray.data

    if fmt == "parquet":
        return ray.data.read_parquet(files)
    if fmt == "csv":
        return ray.data.read_csv(
            files,
            read_options=pacsv.ReadOptions(block_size=MAX_ROW_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
        )
    # pyarrow reads newline-delimited JSON; `lines=True` (pandas) would ignore the block size.
    return ray.data.read_json(files, read_options=pajson.ReadOptions(block_size=MAX_ROW_BYTES))


def read_corpus(path: str, text_column: str, id_column: str | None = None, label_column: str | None = None):
    """Ray Dataset of prepared rows (see module docstring); raises ICCError on a bad path or column."""
    files, fmt = list_files(path)
    ds = read_table(files, fmt)
    schema = ds.schema()
    if schema is None:  # no file holds a row
        raise ICCError(f"the corpus is empty: {path}")
    columns = schema.names
    wanted = {"text": text_column, "id": id_column, "label": label_column}
    for role, name in wanted.items():
        if name and name not in columns:
            raise ICCError(f"{role} column '{name}' not in {path} (columns: {', '.join(columns)})")
    keep = {role: name for role, name in wanted.items() if name}
    return ds.select_columns(list(dict.fromkeys(keep.values()))).map_batches(
        prepare_batch, fn_kwargs={"columns": keep}, batch_format="pyarrow"
    )


def prepare_batch(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Rename columns to their roles and clean the text column (see `clean_texts`)."""
    texts, reject, replaced = clean_texts(table.column(columns["text"]).to_pylist())
    out = {"text": texts, "reject": reject, "replaced": replaced}
    for role in ("id", "label"):
        if role in columns:
            out[role] = table.column(columns[role])
    return pa.table(out)


def clean_texts(values: list) -> tuple[list[str], list[str], list[bool]]:
    """Texts as str, with the reject reason ("" if fine) and whether bytes were replaced.

    Bytes are decoded as UTF-8 with undecodable bytes replaced by U+FFFD; other non-str values
    (numbers) are formatted with str(); None, NaN and whitespace-only texts are rejected.
    """
    texts, reject, replaced = [], [], []
    for value in values:
        was_bytes = isinstance(value, bytes)
        if was_bytes:
            value = value.decode("utf-8", errors="replace")
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        text = "" if missing else str(value)
        texts.append(text)
        reject.append("" if text.strip() else "empty text")
        replaced.append(was_bytes and "\ufffd" in text)
    return texts, reject, replaced
