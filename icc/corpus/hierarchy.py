"""The clusters' hierarchy: Ward agglomerative clustering of the k centroids (BERTopic's
`hierarchical_topics`), written as `hierarchy.parquet` in the run directory.

hierarchy.parquet has k - 1 rows, one per merge, nearest pair first (none for k < 2):

    node      int64         the merged node's id, k + row (ids 0..k-1 are the clusters)
    left      int64         the ids of the two nodes merged (clusters or earlier nodes)
    right     int64
    distance  float64       Ward's linkage distance between them (in the embedding space)
    size      int64         texts in the clusters under the node
    clusters  list<int64>   the clusters under the node, ascending
"""

from pathlib import Path

import numpy as np
import pyarrow as pa

from icc.corpus.rundir import HIERARCHY
from icc.data.parquet import write_table_atomic


def hierarchy_table(centroids: np.ndarray, sizes: np.ndarray) -> pa.Table:
    """The merges of Ward linkage over the (k, d) centroids; sizes (k,): texts per cluster."""
    from scipy.cluster.hierarchy import linkage

    k = len(centroids)
    merges = linkage(np.asarray(centroids, dtype=np.float64), "ward") if k >= 2 else np.zeros((0, 4))
    under = [[c] for c in range(k)]  # the clusters under each node id
    for left, right, *_ in merges:
        under.append(sorted(under[int(left)] + under[int(right)]))
    sizes = np.asarray(sizes, dtype=np.int64)
    return pa.table({
        "node": pa.array(np.arange(k, k + len(merges)), pa.int64()),
        "left": pa.array(merges[:, 0].astype(np.int64)),
        "right": pa.array(merges[:, 1].astype(np.int64)),
        "distance": pa.array(merges[:, 2], pa.float64()),
        "size": pa.array([int(sizes[u].sum()) for u in under[k:]], pa.int64()),
        "clusters": pa.array(under[k:], pa.list_(pa.int64())),
    })


def write_hierarchy(out, table: pa.Table) -> None:
    """Write `hierarchy_table(...)` as the run's hierarchy.parquet, atomically."""
    write_table_atomic(Path(out) / HIERARCHY, table)
