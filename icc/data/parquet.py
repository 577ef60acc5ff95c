"""Parquet outputs that are a directory of shards (`part-00000.parquet`, ...) or a single file,
read as one table, and (n, dim) float32 vectors as an Arrow column of fixed-size lists."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from icc.errors import ICCError


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 -> an Arrow column of fixed-size lists."""
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel(), pa.float32()),
                                             vectors.shape[1])


def vector_matrix(column) -> np.ndarray:
    """An Arrow column of fixed-size float32 lists -> (n, dim) float32, the inverse of `vector_array`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def parquet_files(path) -> list[Path]:
    """The Parquet files of an output: the file itself, or a directory's shards in order."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob("part-*.parquet"))
    if path.is_file():
        return [path]
    raise ICCError(f"missing {path}")


def read_output(path, columns: list[str] | None = None) -> pa.Table:
    """A whole output (file or directory of shards) as one table, rows in order."""
    files = parquet_files(path)
    tables = [pq.read_table(f, columns=columns) for f in files]
    if not tables:
        raise ICCError(f"no Parquet shards in {path}")
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def take_texts(path, positions: np.ndarray) -> list[str]:
    """Texts at row `positions` of a texts output (file or shards), in the order given, streaming."""
    positions = np.asarray(positions, dtype=np.int64)
    found = np.empty(len(positions), dtype=object)
    offset = 0
    for file in parquet_files(path):
        parquet = pq.ParquetFile(file)
        rows = parquet.metadata.num_rows
        if ((positions >= offset) & (positions < offset + rows)).any():
            for batch in parquet.iter_batches(batch_size=8192, columns=["text"]):
                inside = (positions >= offset) & (positions < offset + batch.num_rows)
                found[inside] = batch.column(0).take(positions[inside] - offset).to_pylist()
                offset += batch.num_rows
        else:
            offset += rows
    return found.tolist()


def write_table_atomic(path, table: pa.Table) -> None:
    """`table` as the Parquet file `path`, atomically (a reader sees the old file or the new one)."""
    from icc.files import write_atomic

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(Path(path), sink.getvalue().to_pybytes())
