"""scikit-learn's spectral, agglomerative (Ward) and HDBSCAN clustering behind our interface.

They have no `predict`: new points go to the nearest cluster mean (`Clusterer.assign`).
"""

import numpy as np
from sklearn import cluster as skc

from icc.cluster.base import Clusterer


class Spectral(Clusterer):
    """Spectral clustering on a k-nearest-neighbour graph of the vectors.

    assign_labels: "kmeans", "discretize" (the LLM-embeddings paper) or "cluster_qr".
    Memory and time grow quickly with n: fit on a sample for large corpora.
    """

    def __init__(self, k=8, n_neighbors: int = 10, assign_labels: str = "kmeans", seed: int = 0, **kwargs):
        super().__init__(k=k, seed=seed, **kwargs)
        self.n_neighbors = n_neighbors
        self.assign_labels = assign_labels

    def _fit(self, X: np.ndarray, k: int) -> np.ndarray:
        return skc.SpectralClustering(
            n_clusters=k, affinity="nearest_neighbors", n_neighbors=min(self.n_neighbors, len(X) - 1),
            assign_labels=self.assign_labels, random_state=self.seed,
        ).fit_predict(X)


class Agglomerative(Clusterer):
    """Agglomerative clustering with Ward linkage; O(n^2) memory."""

    def _fit(self, X: np.ndarray, k: int) -> np.ndarray:
        return skc.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)


class HDBSCAN(Clusterer):
    """HDBSCAN: finds the number of clusters itself; points in no cluster get label -1 (noise).

    k is ignored; it is accepted so that a config can set k for whichever clusterer it picks.
    """

    def __init__(self, min_cluster_size: int = 10, min_samples: int | None = None, seed: int = 0, k=None, **kwargs):
        super().__init__(k=None, seed=seed, **kwargs)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples

    def _fit(self, X: np.ndarray, k: None) -> np.ndarray:
        return skc.HDBSCAN(
            min_cluster_size=self.min_cluster_size, min_samples=self.min_samples, copy=True
        ).fit_predict(X)
