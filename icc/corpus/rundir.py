"""The output directory of an `icc cluster` run: the one place that names its files, builds its
tables and reads it back (for search and the report).

    texts.parquet/        every input row: id, text, reject, replaced, truncated[, label]   (Parquet shards)
    embeddings.parquet/   the embedded rows: id, vector                                    (Parquet shards)
    embed.json            the embed stage's manifest (`icc.corpus.shards.Shards`), complete when written last
    assignments.parquet/  every input row: id, cluster, distance[, membership], reason      (Parquet shards)
    clusters.parquet      one row per cluster: cluster, size, centroid, central_texts, name
    metrics.json          what the run measured; run.json: its config and package versions
    report.html           the map of the clusters; search_report.html: the map of a search

Shard i (`part_name(i)`) of the three shard directories holds the same input rows.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from icc.data.parquet import read_output, take_texts, vector_array, vector_matrix
from icc.errors import ICCError
from icc.files import read_json
from icc.pipeline import METRICS, RUN_RECORD

TEXTS = "texts.parquet"
EMBEDDINGS = "embeddings.parquet"
EMBED_MANIFEST = "embed.json"
ASSIGNMENTS = "assignments.parquet"
CLUSTERS = "clusters.parquet"
REPORT = "report.html"
SEARCH_REPORT = "search_report.html"
COMPLETE_RUN = (RUN_RECORD, METRICS, ASSIGNMENTS, EMBEDDINGS, TEXTS, CLUSTERS)
NOISE = "noise"  # the reason of an embedded row in no cluster


def part_name(shard: int) -> str:
    """The file name of shard `shard` inside a shard directory."""
    return f"part-{shard:05d}.parquet"



def assignments_table(ids, reject: np.ndarray, labels: np.ndarray, distances: np.ndarray,
                      membership: np.ndarray | None = None) -> pa.Table:
    """One row per input row: id, cluster (-1 when rejected or noise), distance to the cluster's
    centroid, membership (fuzzy clusterers only) and reason (null unless cluster is -1).

    ids, reject: (n,) per input row, reject "" for the embedded rows; labels, distances,
    membership: (n_ok,) for the embedded rows, in row order.
    """
    n, ok = len(ids), reject == ""
    cluster = np.full(n, -1, dtype=np.int64)
    cluster[ok] = labels
    distance = np.full(n, np.nan, dtype=np.float32)
    distance[ok] = np.where(labels >= 0, distances, np.nan)
    reason = np.where(ok, np.where(cluster == -1, NOISE, ""), reject)
    columns = {
        "id": ids,
        "cluster": cluster,
        "distance": pa.array(distance, from_pandas=True),
        "reason": pa.array(np.where(reason == "", None, reason).tolist(), pa.string()),
    }
    if membership is not None:
        full = np.full(n, np.nan, dtype=np.float32)
        full[ok] = membership
        columns["membership"] = pa.array(full, from_pandas=True)
    return pa.table(columns)


def central_members(labels: np.ndarray, distances: np.ndarray, k: int, top: int = 5) -> list[np.ndarray]:
    """For each cluster 0..k-1, the indices of its `top` members nearest its centroid, nearest first."""
    members = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        members.append(idx[np.argsort(distances[idx], kind="stable")[:top]])
    return members


def clusters_table(centers: np.ndarray, sizes: np.ndarray, central_texts: list[list[str]],
                   names: list[str | None] | None = None) -> pa.Table:
    """One row per cluster: cluster id, size, centroid (dim floats), texts nearest the centroid and
    name (null without a labeler)."""
    return pa.table({
        "cluster": np.arange(len(centers), dtype=np.int64),
        "size": sizes.astype(np.int64),
        "centroid": vector_array(np.asarray(centers, dtype=np.float32)),
        "central_texts": pa.array(central_texts, pa.list_(pa.string())),
        "name": pa.array(names or [None] * len(centers), pa.string()),
    })


def texts_at_rows(out, rows_per_cluster: list[np.ndarray]) -> list[list[str]]:
    """For each cluster, the texts of its input rows `rows_per_cluster[c]` (in that order), read
    from the run's texts shards in one streaming pass."""
    texts = take_texts(Path(out) / TEXTS, np.concatenate(rows_per_cluster))
    splits = np.cumsum([len(rows) for rows in rows_per_cluster])[:-1]
    return [list(t) for t in np.split(np.array(texts, dtype=object), splits)]


def write_clusters(out, table: pa.Table) -> None:
    """Write `clusters_table(...)` as the run's clusters.parquet."""
    pq.write_table(table, Path(out) / CLUSTERS)


@dataclass
class ClusterRun:
    """The embedded rows of a run and its clusters.

    ids, rows (positions in the input and in texts.parquet), cluster (-1: noise): (n,) per
    embedded row, in input order; vectors: (n, dim) float32 unit vectors; centroids: (k, dim);
    sizes: (k,); names: k cluster names (None where the run had no labeler); embedder: the
    `embedder` entry of run.json, what loads the run's encoder (`TextEmbedder` keyword arguments:
    model, max_length, pooling, ...); config: the run's resolved config.
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
        return take_texts(self.dir / TEXTS, self.rows[np.asarray(positions, dtype=np.int64)])

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
    missing = [name for name in COMPLETE_RUN if not (run_dir / name).exists()]
    if missing:
        raise ICCError(f"{run_dir} is not a complete icc cluster run: missing {', '.join(missing)}")
    run, metrics = read_json(run_dir / RUN_RECORD), read_json(run_dir / METRICS)
    if "embedder" not in run:
        raise ICCError(f"{run_dir / RUN_RECORD} has no embedder entry: not an icc cluster run")
    assignments = _read(run_dir / ASSIGNMENTS, ["cluster", "reason"])
    embeddings = _read(run_dir / EMBEDDINGS, ["id", "vector"])
    clusters = _read(run_dir / CLUSTERS, None)
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
