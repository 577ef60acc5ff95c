"""Fit a clusterer on an embedded corpus in shards and assign every row, without gathering the corpus.

`fit_shards`: the fit sample is the clusterer's `sample_fraction` of each embeddings shard
(`icc.corpus.shards.sample_mask`, so the same rows on every read). k-means too large for one
process (`KMeans.distributed`) runs over the sample's blocks in the object store (a Ray Data
dataset with one block per shard, `KMeans.fit_blocks`); every other fit is one Ray task that reads
the sample, fits in memory (faiss, scikit-learn) and returns the fitted clusterer.

`assign_shards`: one Ray task per shard, spread over the nodes, assigns its rows (sample rows keep
their fitted cluster), writes its `assignments.parquet` shard and returns statistics of bounded
size that the driver adds up as they arrive: cluster sizes, the members nearest each centroid,
label x cluster counts and a sample of at most about `metrics_rows` vectors for the internal metrics.
"""

import collections
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import ray

from icc.cluster.base import Clusterer, check_k
from icc.cluster.kmeans import KMeans
from icc.corpus.rundir import ASSIGNMENTS, assignments_table, central_members, renew
from icc.corpus.shards import Shards, read_vectors, sample_mask
from icc.errors import ICCError
from icc.ray_runtime import compute_threads, get


@dataclass
class Fitted:
    """A clusterer fitted on the shards: `fraction` of each shard's embedded rows was its sample;
    sample_labels: per shard, the fitted clusters of its sample rows (None where the clusters are
    the nearest centroids, which assigning reproduces)."""

    clusterer: Clusterer
    fraction: float
    sample_labels: list[np.ndarray] | None
    distributed: bool


@dataclass
class Assigned:
    """What the assignment pass adds up: sizes (k,), noise rows, central: per cluster the input
    row numbers of its `top` members nearest the centroid (nearest first), contingency
    {(label, cluster): rows} over the labelled rows, a sample of vectors (m, d) with their
    clusters (m,) for the internal metrics, and the Ray nodes that ran the shards' tasks."""

    sizes: np.ndarray
    noise: int
    central: list[np.ndarray]
    contingency: collections.Counter
    sample_vectors: np.ndarray
    sample_clusters: np.ndarray
    nodes: set


def fit_shards(clusterer: Clusterer, shards: Shards) -> Fitted:
    fraction = clusterer.sample_fraction(shards.n_embedded)
    seed = clusterer.random_state
    fit_rows = sum(int(sample_mask(n, fraction, seed, i).sum()) for i, n in enumerate(shards.embedded))
    n_clusters = getattr(clusterer, "n_clusters", "auto")  # HDBSCAN has none: it finds k itself
    if n_clusters != "auto":
        check_k(n_clusters, fit_rows)  # here, before any task: the user's error as one line
    if isinstance(clusterer, KMeans) and clusterer.distributed(fit_rows, shards.dim):
        blocks = vector_dataset(shards, fraction, seed).to_numpy_refs(column="vector")
        clusterer.fit_blocks(blocks, fit_rows)
        return Fitted(clusterer, fraction, None, True)
    clusterer, sample_labels = get(_fit_in_memory.remote(clusterer, shards, fraction))
    return Fitted(clusterer, fraction, sample_labels, False)


def vector_dataset(shards: Shards, fraction: float = 1.0, seed: int = 0):
    """Ray Dataset with a `vector` (d,) column: the `fraction` sample of each embeddings shard,
    one block per shard, read in parallel."""
    import ray.data

    items = [{"shard": i} for i, n in enumerate(shards.embedded) if n]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_shard_vectors, fn_kwargs={"shards": shards, "fraction": fraction, "seed": seed}, batch_size=1,
    )


def _read_shard_vectors(batch: dict, shards: Shards, fraction: float, seed: int) -> dict:
    return {"vector": read_vectors(shards, int(batch["shard"][0]), fraction, seed)}


@ray.remote(num_cpus=1)
def _fit_in_memory(clusterer: Clusterer, shards: Shards, fraction: float):
    parts = [read_vectors(shards, i, fraction, clusterer.random_state) for i in range(len(shards.rows))]
    if not any(len(p) for p in parts):
        raise ICCError(f"the fit sample is empty: raise clusterer.fit_fraction ({fraction:.3g} of "
                       f"{shards.n_embedded} rows)")
    with compute_threads(os.cpu_count()):  # the fit in memory computes on the whole node
        clusterer.fit_sample(np.concatenate(parts))
    labels, clusterer.labels_ = clusterer.labels_, None
    if clusterer.labels_are_nearest_centroid:
        return clusterer, None
    return clusterer, np.split(labels, np.cumsum([len(p) for p in parts])[:-1])


def assign_shards(fitted: Fitted, shards: Shards, top: int, metrics_rows: int = 10_000) -> Assigned:
    """Assign every row of `shards` (see the module docstring); assignments go to
    shards.dir/assignments.parquet/part-*.parquet, replacing those icc wrote there before
    (ICCError, before any task, where icc did not write them)."""
    clusterer = fitted.clusterer
    k = len(clusterer.cluster_centers_)
    renew(shards.dir, ASSIGNMENTS)  # no shard of an earlier run stays
    (shards.dir / ASSIGNMENTS).mkdir()
    metrics_fraction = min(1.0, metrics_rows / max(shards.n_embedded, 1))
    clusterer_ref = ray.put(clusterer)
    first_rows = shards.first_rows()
    pending = [
        _assign_shard.remote(clusterer_ref, shards, i, int(first_rows[i]), fitted.fraction,
                             fitted.sample_labels[i] if fitted.sample_labels else None, top, metrics_fraction)
        for i in range(len(shards.rows))
    ]
    total = Assigned(np.zeros(k, np.int64), 0, [np.zeros(0, np.int64)] * k, collections.Counter(), None, None, set())
    best = [np.zeros(0, np.float32)] * k  # distances of total.central
    vectors, clusters = [], []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        part = get(done[0])
        total.sizes += part["sizes"]
        total.noise += part["noise"]
        total.contingency.update(part["contingency"])
        total.nodes.add(part["node"])
        vectors.append(part["sample_vectors"])
        clusters.append(part["sample_clusters"])
        for c in range(k):
            rows = np.concatenate([total.central[c], part["central_rows"][c]])
            distances = np.concatenate([best[c], part["central_distances"][c]])
            keep = np.lexsort((rows, distances))[:top]
            total.central[c], best[c] = rows[keep], distances[keep]
    total.sample_vectors, total.sample_clusters = np.concatenate(vectors), np.concatenate(clusters)
    return total


# SPREAD: the shards are files, not objects on a node, so nothing is gained by Ray's default of
# filling the driver's node first; short tasks would otherwise all run there.
@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def _assign_shard(clusterer: Clusterer, shards: Shards, shard: int, first_row: int, fraction: float,
                  sample_labels: np.ndarray | None, top: int, metrics_fraction: float) -> dict:
    columns = ["id", "reject"] + (["label"] if shards.has_labels else [])
    rows = pq.read_table(shards.texts(shard), columns=columns)
    vectors = read_vectors(shards, shard)
    k = len(clusterer.cluster_centers_)
    if len(vectors):
        labels, distances = clusterer.predict_with_distances(vectors)
    else:
        labels, distances = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if sample_labels is not None:
        sampled = sample_mask(len(vectors), fraction, clusterer.random_state, shard)
        labels[sampled] = sample_labels
        fixed = sampled & (labels >= 0)
        distances[fixed] = np.linalg.norm(vectors[fixed] - clusterer.cluster_centers_[labels[fixed]], axis=1)
    membership = clusterer.membership(vectors).max(axis=1) if hasattr(clusterer, "membership") and len(vectors) else None
    reject = rows["reject"].to_numpy(zero_copy_only=False).astype(str)
    table = assignments_table(rows["id"], reject, labels, distances, membership)
    pq.write_table(table, shards.dir / ASSIGNMENTS / shards.texts(shard).name)
    embedded_rows = first_row + np.flatnonzero(reject == "")
    central = central_members(labels, distances, k, top)
    contingency = collections.Counter()
    if shards.has_labels:
        cluster = table["cluster"].to_numpy()
        for label, c in zip(rows["label"].to_pylist(), cluster.tolist()):
            if label is not None:
                contingency[(label, c)] += 1
    in_metrics = sample_mask(len(vectors), metrics_fraction, clusterer.random_state + 1, shard)
    return {
        "sizes": np.bincount(labels[labels >= 0], minlength=k),
        "noise": int((labels == -1).sum()),
        "central_rows": [embedded_rows[c] for c in central],
        "central_distances": [distances[c] for c in central],
        "contingency": contingency,
        "sample_vectors": vectors[in_metrics],
        "sample_clusters": labels[in_metrics],
        "node": ray.get_runtime_context().get_node_id(),
    }


def expand_contingency(contingency: collections.Counter) -> tuple[np.ndarray, np.ndarray]:
    """(labels, clusters) arrays with one entry per counted row, for metrics that take label arrays."""
    pairs = list(contingency.items())
    labels = np.repeat(np.array([label for (label, _), _ in pairs], dtype=object), [n for _, n in pairs])
    clusters = np.repeat(np.array([c for (_, c), _ in pairs], dtype=np.int64), [n for _, n in pairs])
    return labels.astype(str), clusters
