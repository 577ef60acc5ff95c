"""One bench cell: cluster one embedding with one algorithm, score it, time it, measure its memory."""

import time

import numpy as np
import pandas as pd

from icc.cluster import make_clusterer, takes_k
from icc.errors import ICCError
from icc.memory import peak_rss_mib, reset_peak_rss
from icc.metrics import external_metrics, internal_metrics


def reduce_vectors(X: np.ndarray, dim: int, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, dim) float32 unit vectors: PCA to `dim` components, or the first `dim`
    coordinates ("truncate", as for Matryoshka embeddings); rows that reduce to zero stay zero."""
    if not 1 <= dim <= X.shape[1]:
        raise ICCError(f"cannot reduce {X.shape[1]}-dimensional vectors to {dim}")
    if method == "truncate":
        reduced = X[:, :dim]
    elif method == "pca":
        from sklearn.decomposition import PCA

        if dim > min(X.shape):
            raise ICCError(f"PCA to {dim} dimensions needs at least {dim} texts, got {len(X)}")
        reduced = PCA(n_components=dim, random_state=seed).fit_transform(X)
    else:
        raise ICCError(f"unknown reduction '{method}' (choose from pca, truncate)")
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return (reduced / np.where(norms > 0, norms, 1)).astype(np.float32)


def cluster_cell(X: np.ndarray, y_true: np.ndarray, embedded: np.ndarray, clusterer: dict, k: int, seed: int = 0) -> dict:
    """Cluster the embedded rows and score the labelled ones.

    X: (n_embedded, d) vectors of the rows where `embedded` (n,) is True; y_true: (n,) labels,
    None/NaN where a row has none (left out of the external metrics). Rows that were not embedded
    count as errors (cluster -1), as in `icc cluster`. Returns the metrics of `icc.metrics`,
    clusters_found, `cluster_s` (fit seconds) and `cluster_peak_rss_mb` (see `icc.memory`).
    """
    reset_peak_rss()
    start = time.perf_counter()
    params = {"seed": seed, **clusterer, "k": k if takes_k(clusterer["name"]) else None}  # hdbscan finds k itself
    labels = make_clusterer(**params).fit_predict(X)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    y_pred = np.full(len(y_true), -1, dtype=np.int64)
    y_pred[embedded] = labels
    labelled = pd.notna(y_true)
    return {
        **external_metrics(np.asarray(y_true)[labelled].astype(str), y_pred[labelled]),
        **internal_metrics(X, labels),
        "clusters_found": int(len(np.unique(labels[labels >= 0]))),
        "cluster_s": round(seconds, 3),
        "cluster_peak_rss_mb": round(peak, 1),
    }
