"""scikit-learn's spectral, agglomerative (Ward) and HDBSCAN clustering behind our interface.

They have no `predict`: new points go to the nearest cluster mean or by a vote of their nearest
sample points (`Clusterer.predict`).
"""

import numpy as np
from sklearn import cluster as skc

from icc.cluster.base import Clusterer, KClusterer


class Spectral(KClusterer):
    """Spectral clustering on a k-nearest-neighbour graph of the vectors.

    n_neighbors: the graph's neighbours per point (at most the points fitted on, less one).
    assign_labels: "kmeans", "discretize" (the LLM-embeddings paper) or "cluster_qr".
    Memory and time grow quickly with n: fit on a sample for large corpora (`max_fit_rows`).
    Other parameters: see `KClusterer` and `Clusterer`.
    """

    def __init__(self, n_clusters=8, *, n_neighbors=10, assign_labels="kmeans", random_state=0, k_range=(2, 20),
                 auto_sample=5000, fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(n_clusters, k_range=k_range, auto_sample=auto_sample, random_state=random_state,
                         fit_fraction=fit_fraction, max_fit_rows=max_fit_rows, assign=assign, knn_k=knn_k)
        self.n_neighbors = n_neighbors
        self.assign_labels = assign_labels

    def _fit(self, X: np.ndarray, k: int) -> tuple[np.ndarray, None]:
        labels = skc.SpectralClustering(
            n_clusters=k, affinity="nearest_neighbors", n_neighbors=min(self.n_neighbors, len(X) - 1),
            assign_labels=self.assign_labels, random_state=self.random_state,
        ).fit_predict(X)
        return labels, None


class Agglomerative(KClusterer):
    """Agglomerative clustering with Ward linkage; O(n^2) memory. Parameters: see `KClusterer`."""

    def _fit(self, X: np.ndarray, k: int) -> tuple[np.ndarray, None]:
        return skc.AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X), None


class HDBSCAN(Clusterer):
    """HDBSCAN: finds the number of clusters itself, so it has no n_clusters; points in no cluster
    get label -1 (noise). When every point is noise, `labels_` is all -1, `cluster_centers_` is
    (0, d) and `predict` gives -1.

    min_cluster_size, min_samples: scikit-learn's HDBSCAN's. Other parameters: see `Clusterer`.
    """

    def __init__(self, min_cluster_size=10, min_samples=None, *, random_state=0, fit_fraction=1.0,
                 max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(random_state=random_state, fit_fraction=fit_fraction, max_fit_rows=max_fit_rows,
                         assign=assign, knn_k=knn_k)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples

    def _fit(self, X: np.ndarray, k: None) -> tuple[np.ndarray, None]:
        hdbscan = skc.HDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples, copy=True)
        return hdbscan.fit_predict(X), None
