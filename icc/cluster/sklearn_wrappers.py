"""scikit-learn's spectral, agglomerative (Ward) and HDBSCAN clustering behind our interface.

They have no `predict`: new points go to the nearest cluster mean or by a vote of their nearest
sample points (`Clusterer.predict`).
"""

import numpy as np
from sklearn import cluster as skc

from icc.checks import check_bool
from icc.cluster.base import Clusterer, KClusterer, check_vectors, cluster_means, nearest_centroid


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

    min_cluster_size, min_samples: scikit-learn's HDBSCAN's.
    reduce_outliers: True moves every noise point, fitted or predicted, to the cluster of the
        nearest centroid (BERTopic's `reduce_outliers` by embeddings); the centroids stay the means
        of the clusters HDBSCAN found. After fit, `outliers_reduced_`: the fitted points moved
        (None when False).
    Other parameters: see `Clusterer`.
    """

    def __init__(self, min_cluster_size=10, min_samples=None, *, reduce_outliers=False, random_state=0,
                 fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(random_state=random_state, fit_fraction=fit_fraction, max_fit_rows=max_fit_rows,
                         assign=assign, knn_k=knn_k)
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.reduce_outliers = reduce_outliers

    def check_params(self) -> None:
        super().check_params()
        check_bool(self.reduce_outliers, "reduce_outliers")

    def _fit(self, X: np.ndarray, k: None) -> tuple[np.ndarray, np.ndarray]:
        hdbscan = skc.HDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples, copy=True)
        labels = hdbscan.fit_predict(X)
        centers = cluster_means(X, labels)
        noise = labels < 0
        self.outliers_reduced_ = int(noise.sum()) if self.reduce_outliers and len(centers) else None
        if self.outliers_reduced_:
            labels[noise] = nearest_centroid(centers, X[noise])
        return labels, centers

    def predict_with_distances(self, X) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = super().predict_with_distances(X)
        noise = labels < 0
        if self.reduce_outliers and noise.any() and len(self.cluster_centers_):
            labels[noise] = nearest_centroid(self.cluster_centers_, check_vectors(X)[noise])  # distances: to it already
        return labels, distances
