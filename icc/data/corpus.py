"""Read a text corpus (Parquet, CSV or JSONL; a file, a directory or a glob) as a Ray Dataset.

The dataset streams: nothing here pulls the corpus into the driver (only the id column, when
configured, to check that ids are unique). Each row comes out with `text` (str), `reject` ("" or
the reason the row cannot be embedded), `replaced` (whether undecodable bytes were replaced) and,
when configured, `id` and `label`.
"""

import contextlib
import glob
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from icc.errors import ICCError, root_message

# File name endings read, and their format; CSV and JSONL may be compressed (pyarrow infers the codec).
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
# pyarrow parses CSV and JSONL in blocks that must hold a whole row: this bounds one text's size.
MAX_ROW_BYTES = 256 << 20
# The schema of a CSV or JSONL file up to this size is parsed in the driver from the file's first
# block (a Ray read task for it takes seconds to start on a small corpus); of a larger one, or of
# files under hive-style `key=value` directories (their keys become columns), in a Ray read task.
DRIVER_SCHEMA_BYTES = 64 << 20


def file_format(path: str) -> str | None:
    """The format of a corpus file by its name ("parquet", "csv", "json"), None for any other file."""
    name = Path(path).name.lower()
    for codec in COMPRESSIONS:
        if name.endswith(codec):
            fmt = FORMATS.get(Path(name[: -len(codec)]).suffix)
            return fmt if fmt != "parquet" else None  # Parquet compresses inside the file
    return FORMATS.get(Path(name).suffix)


def hidden(path: Path, root: Path) -> bool:
    """Whether `path` lies under an entry of `root` whose name starts with "." or "_" (`.git/`,
    `_temporary/`, `_SUCCESS`, ...): such entries are not part of a corpus."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def list_files(path: str) -> tuple[list[str], str]:
    """Expand a file, directory or glob into sorted files of one format: (files, format).

    A directory is read whole, but for hidden and `_`-prefixed entries (see `hidden`); any other
    file that is not Parquet, CSV or JSONL (compressed CSV and JSONL included) is an ICCError, so
    that no file is skipped without a word.
    """
    if any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    elif os.path.isdir(path):
        root = Path(path)
        files = sorted(str(p) for p in root.rglob("*") if p.is_file() and not hidden(p, root))
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ICCError(f"data.path not found: {path}")
    if not files:
        raise ICCError(f"no Parquet, CSV or JSONL files under data.path: {path}")
    unknown = [f for f in files if file_format(f) is None]
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ICCError(f"unsupported file type in data.path: {unknown[0]}{more} (use .parquet, .csv or .jsonl, "
                       "also .csv.gz, .jsonl.gz, ...; entries named .* or _* are ignored)")
    formats = {file_format(f) for f in files}
    if len(formats) > 1:
        raise ICCError(f"data.path mixes file formats ({', '.join(sorted(formats))}): {path}")
    return files, formats.pop()


def read_table(files: list[str], fmt: str):
    """Lazy Ray Dataset over `files`. CSV values may hold newlines inside quotes.

    Each read task runs in a fresh worker process (`max_calls=1`): a worker that ran one read task
    after another kept part of each one's memory, so its heap grew with the corpus
    (benchmarks/results/scale_memory.md).
    """
    import ray.data

    if fmt == "parquet":
        return ray.data.read_parquet(files, max_calls=1)
    if fmt == "csv":
        return ray.data.read_csv(files, **_csv_options(), max_calls=1)
    return ray.data.read_json(files, **_json_options(), max_calls=1)


def _csv_options() -> dict:
    """pyarrow's options for reading a corpus CSV file, here and in Ray's read tasks."""
    return {
        "read_options": pacsv.ReadOptions(block_size=MAX_ROW_BYTES),
        # A blank line is a row (an empty text, kept as a reject), as every other line is.
        "parse_options": pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        "convert_options": pacsv.ConvertOptions(strings_can_be_null=True),
    }


def _json_options() -> dict:
    """pyarrow's options for reading a corpus JSONL file: newline-delimited JSON (`lines=True`,
    pandas, would ignore the block size)."""
    import pyarrow.json as pajson

    return {"read_options": pajson.ReadOptions(block_size=MAX_ROW_BYTES)}


def read_schema(files: list[str], fmt: str, ds) -> pa.Schema | None:
    """The schema that `ds` (`read_table(files, fmt)`) has: that of the first file that holds a
    row, None when none does. Read in the driver where that is cheap (see DRIVER_SCHEMA_BYTES):
    Parquet footers, and the first block of each small CSV or JSONL file up to the first that
    holds a row; otherwise by `ds.schema()`, which reads in a Ray task."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if any("=" in part for file in files for part in Path(file).parent.parts):
        return ds.schema()
    for file in files:
        if fmt == "parquet":
            metadata = pq.read_metadata(file)
            if metadata.num_rows:
                return metadata.schema.to_arrow_schema()
            continue
        if os.path.getsize(file) > DRIVER_SCHEMA_BYTES:
            return ds.schema()
        open_file = pacsv.open_csv if fmt == "csv" else pajson.open_json
        with open_file(file, **(_csv_options() if fmt == "csv" else _json_options())) as reader:
            for batch in reader:
                if batch.num_rows:
                    return batch.schema
    return None


def read_after(files: list[str], fmt: str, skip_rows: int):
    """Lazy Ray Dataset of the rows of `read_table(files, fmt)` after its first `skip_rows`, in
    order, without reading the corpus first: the files wholly among the rows skipped are left out
    by their row counts (each file counted by a Ray read, in order, up to the one the rows skipped
    end in); that one file's rows after them come first, as one block (the only rows read before
    they are needed); the files after it stream as `read_table` reads them.

    `Dataset.union` with preserve_order takes one bundle from each input in turn: with the first
    input a single block, that is the first input's rows, then the second's in their order.
    """
    before = 0
    for last, file in enumerate(files):
        rows = read_table([file], fmt).count()
        if before + rows > skip_rows or last == len(files) - 1:
            break
        before += rows
    rest = read_table([file], fmt).split_at_indices([min(skip_rows - before, rows)])[1].repartition(1).materialize()
    return rest.union(read_table(files[last + 1:], fmt)) if last + 1 < len(files) else rest


def read_corpus(path: str, text_column: str, id_column: str | None = None, label_column: str | None = None,
                skip_rows: int = 0):
    """Ray Dataset of prepared rows (see module docstring); with `skip_rows`, of the rows after
    the first `skip_rows` (`read_after`: an embed stage resumed after the rows it has).

    Raises ICCError for a bad path, a file that cannot be parsed (truncated Parquet, malformed CSV
    or JSON, a text encoding other than UTF-8) as far as the schema shows it, a missing column, a
    text column that holds no text (numbers), and ids that are empty or repeat.
    """
    files, fmt = list_files(path)
    with _readable(path):
        ds = read_table(files, fmt)
        schema = read_schema(files, fmt, ds)
        columns = schema.names if schema is not None else []  # names that are not UTF-8 fail here
    if schema is None:  # no file holds a row
        raise ICCError(f"the corpus is empty: {path}")
    wanted = {"text": text_column, "id": id_column, "label": label_column}
    for role, name in wanted.items():
        if name and name not in columns:
            raise ICCError(f"{role} column '{name}' not in {path} (columns: {', '.join(columns)})")
    text_type = dict(zip(columns, schema.types))[text_column]
    if not _is_text_type(text_type):
        raise ICCError(
            f"text column '{text_column}' holds {text_type} values, not text: choose another data.text_column"
        )
    if id_column:
        with _readable(path):
            ids = _gather(ds.select_columns([id_column]))
        check_unique_ids(ids, id_column)
    if skip_rows:
        with _readable(path):
            ds = read_after(files, fmt, skip_rows)
    keep = {role: name for role, name in wanted.items() if name}
    return ds.select_columns(list(dict.fromkeys(keep.values()))).map_batches(
        prepare_batch, fn_kwargs={"columns": keep}, batch_format="pyarrow"
    )


def _gather(ds) -> pa.ChunkedArray:
    """The one column of a small-valued dataset, in the driver (ids: one value per row, which the
    driver holds later anyway)."""
    return pa.chunked_array([batch.column(0) for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None)])


def check_unique_ids(ids: pa.ChunkedArray, id_column: str) -> None:
    """ICCError if an id is empty or repeats."""
    if ids.null_count:
        raise ICCError(
            f"data.id_column '{id_column}' has {ids.null_count} empty ids: fill them or set data.id_column=null "
            "(row numbers)"
        )
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        example = repeated[0]
        raise ICCError(
            f"data.id_column '{id_column}' repeats {len(repeated)} ids (e.g. {example['values'].as_py()!r} "
            f"{example['counts'].as_py()} times): make them unique or set data.id_column=null (row numbers)"
        )


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_null(t) or any(
        check(t) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view,
                               pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    )


@contextlib.contextmanager
def _readable(path: str):
    """Turn a failure to parse the corpus files, here or in a Ray read task (an empty CSV file),
    into ICCError with the parser's first line."""
    from ray.exceptions import RayTaskError

    try:
        yield
    except (pa.ArrowException, OSError, UnicodeError, json.JSONDecodeError, RayTaskError) as e:
        raise ICCError(f"cannot read {path}: {root_message(e)}") from None


def prepare_batch(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Rename columns to their roles and clean the text column (see `clean_texts`)."""
    text = table.column(columns["text"])
    if pa.types.is_string(text.type) or pa.types.is_large_string(text.type):
        # The CSV reader may type a column as string from its first rows although later rows hold
        # bytes that are not UTF-8: read the bytes and let clean_texts decode them.
        text = text.cast(pa.large_binary() if pa.types.is_large_string(text.type) else pa.binary())
    texts, reject, replaced = clean_texts(text.to_pylist())
    out = {"text": texts, "reject": reject, "replaced": replaced}
    for role in ("id", "label"):
        if role in columns:
            out[role] = table.column(columns[role])
    return pa.table(out)


def clean_texts(values: list) -> tuple[list[str], list[str], list[bool]]:
    """Texts as str, with the reject reason ("" if fine) and whether bytes were replaced.

    Bytes are decoded as UTF-8 with undecodable bytes replaced by U+FFFD; other non-str values
    (numbers) are formatted with str(); None, NaN and whitespace-only texts are rejected. A text
    holding U+FFFD counts as replaced, whoever replaced its bytes (this, or the JSON reader).
    """
    texts, reject, replaced = [], [], []
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        text = "" if missing else str(value)
        texts.append(text)
        reject.append("" if text.strip() else "empty text")
        replaced.append("\ufffd" in text)
    return texts, reject, replaced
