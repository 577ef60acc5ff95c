"""The driver's streaming pass over an embedded corpus: Parquet out, vectors kept for clustering.

Rows arrive in input order, batch by batch; texts go straight to `texts.parquet` and vectors to
`embeddings.parquet`, so the driver holds only the vectors (n, dim) and one value per row of
id, label and reject reason.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class EmbeddedCorpus:
    """ids, labels (or None), reject reasons ("" when embedded): (n,) each; vectors: (n_ok, dim)
    float32 for the rows with an empty reject reason, in row order."""

    ids: np.ndarray
    labels: np.ndarray | None
    reject: np.ndarray
    vectors: np.ndarray
    replaced: int
    truncated: int

    @property
    def ok(self) -> np.ndarray:
        return self.reject == ""


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 -> an Arrow column of fixed-size lists."""
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])


def vector_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """An Arrow column of fixed-size float32 lists -> (n, dim) float32, the inverse of `vector_array`."""
    column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), column.type.list_size)


def collect_embeddings(ds, out_dir: Path) -> EmbeddedCorpus:
    """Stream an embedded dataset (columns text, reject, replaced, vector, truncated and optional
    id, label) into `out_dir`/texts.parquet (id, text) and embeddings.parquet (id, vector; embedded
    rows only). Without an id column, ids are row numbers."""
    ids, labels, reject, vectors = [], [], [], []
    replaced = truncated = n_rows = 0
    writers: dict[str, pq.ParquetWriter] = {}

    def write(name: str, table: pa.Table) -> None:
        if name not in writers:
            writers[name] = pq.ParquetWriter(out_dir / f"{name}.parquet", table.schema)
        writers[name].write_table(table)

    try:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            n = len(batch["text"])
            batch_ids = batch["id"] if "id" in batch else np.arange(n_rows, n_rows + n)
            ok = batch["reject"] == ""
            write("texts", pa.table({"id": batch_ids, "text": batch["text"]}))
            if ok.any():
                write("embeddings", pa.table({"id": batch_ids[ok], "vector": vector_array(batch["vector"][ok])}))
            ids.append(batch_ids)
            labels.append(batch.get("label"))
            reject.append(batch["reject"])
            vectors.append(batch["vector"][ok])
            replaced += int(batch["replaced"].sum())
            truncated += int(batch["truncated"][ok].sum())
            n_rows += n
    finally:
        for writer in writers.values():
            writer.close()
    has_labels = bool(labels) and labels[0] is not None
    return EmbeddedCorpus(
        ids=np.concatenate(ids) if ids else np.array([]),
        labels=np.concatenate(labels) if has_labels else None,
        reject=np.concatenate(reject).astype(str) if reject else np.array([], dtype=str),
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32),
        replaced=replaced,
        truncated=truncated,
    )


def take_texts(path: Path, positions: np.ndarray) -> list[str]:
    """Texts at row `positions` of a texts.parquet, in the order given, streaming over the file."""
    positions = np.asarray(positions, dtype=np.int64)
    found = np.empty(len(positions), dtype=object)
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
        inside = (positions >= offset) & (positions < offset + batch.num_rows)
        found[inside] = batch.column(0).take(positions[inside] - offset).to_pylist()
        offset += batch.num_rows
    return found.tolist()
