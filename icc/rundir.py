"""A finished `icc cluster` run, read back from its output directory (for search and the report).

texts, embeddings and assignments are directories of Parquet shards (`icc.data.embedded`), or
single Parquet files in runs written before the shards; both read the same.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from icc.data.embedded import read_output, take_texts, vector_matrix
from icc.errors import ICCError
from icc.outputs import NOISE
from icc.runtime import read_json

FILES = ("run.json", "metrics.json", "assignments.parquet", "embeddings.parquet", "texts.parquet", "clusters.parquet")


@dataclass
class ClusterRun:
    """The embedded rows of a run and its clusters.

    ids, rows (positions in the input and in texts.parquet), cluster (-1: noise): (n,) per
    embedded row, in input order; vectors: (n, dim) float32 unit vectors; centroids: (k, dim);
    sizes: (k,); names: k cluster names (None where the run had no labeler); embedder: the
    `embedder` entry of run.json (model, dim, max_length, ...); config: the run's resolved config.
    """

    dir: Path
    ids: np.ndarray
    rows: np.ndarray
    cluster: np.ndarray
    vectors: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    names: list[str | None]
    embedder: dict
    config: dict
    metrics: dict

    def texts(self, positions: np.ndarray) -> list[str]:
        """Texts of the embedded rows at `positions` (indices into ids/vectors), in that order."""
        return take_texts(self.dir / "texts.parquet", self.rows[np.asarray(positions, dtype=np.int64)])

    def positions(self, rows) -> np.ndarray:
        """Positions (indices into ids/vectors) of the embedded rows with these input row numbers."""
        return np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))

    def cluster_label(self, c: int) -> str:
        """"<c> <name>" for the legend and messages ("noise" for -1)."""
        if c < 0:
            return NOISE
        return f"{c} {self.names[c]}" if self.names[c] else str(c)


def load_run(run_dir) -> ClusterRun:
    """Read the outputs of `icc cluster` in `run_dir`; ICCError if the directory is missing or incomplete."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ICCError(f"run directory {run_dir} does not exist (give the output.dir of an icc cluster run)")
    missing = [name for name in FILES if not (run_dir / name).exists()]
    if missing:
        raise ICCError(f"{run_dir} is not a complete icc cluster run: missing {', '.join(missing)}")
    run, metrics = read_json(run_dir / "run.json"), read_json(run_dir / "metrics.json")
    if "embedder" not in run:
        raise ICCError(f"{run_dir / 'run.json'} has no embedder entry: not an icc cluster run")
    assignments = _read(run_dir / "assignments.parquet", ["cluster", "reason"])
    embeddings = _read(run_dir / "embeddings.parquet", ["id", "vector"])
    clusters = _read(run_dir / "clusters.parquet", None)
    reason = assignments["reason"].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero([r is None or r == NOISE for r in reason])
    if len(rows) != embeddings.num_rows:
        raise ICCError(f"{run_dir} is not a complete icc cluster run: {len(rows)} embedded rows in "
                       f"assignments.parquet, {embeddings.num_rows} in embeddings.parquet")
    k = clusters.num_rows
    names = clusters["name"].to_pylist() if "name" in clusters.column_names else [None] * k
    return ClusterRun(
        dir=run_dir,
        ids=embeddings["id"].to_numpy(zero_copy_only=False),
        rows=rows,
        cluster=assignments["cluster"].to_numpy()[rows],
        vectors=vector_matrix(embeddings["vector"]),
        centroids=vector_matrix(clusters["centroid"]),
        sizes=clusters["size"].to_numpy(),
        names=names,
        embedder=run["embedder"],
        config=run.get("config", {}),
        metrics=metrics,
    )


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    try:
        return read_output(path, columns)
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise ICCError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
