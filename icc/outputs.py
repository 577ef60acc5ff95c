"""The corpus pipeline's tables: one row per input row, and one row per cluster."""

import numpy as np
import pyarrow as pa

from icc.data.embedded import vector_array

NOISE = "noise"


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
