"""Classical clusterers on the same episodes as the language model, told the same k.

Points: k-means (k-means++ seeding, best of 10), a Gaussian mixture (full covariances, k-means
initialised) and spectral clustering on a nearest-neighbour graph. Texts: k-means on sentence
embeddings (all-MiniLM-L6-v2 by default).
"""

import warnings

import numpy as np
from sklearn.mixture import GaussianMixture

from icc.cluster import KMeans, Spectral
from icc.models.embedder import TextEmbedder


def point_baselines(points, k: int, seed: int) -> dict[str, np.ndarray]:
    """{"kmeans", "gmm", "spectral"}: labels (n,) in [0, k) for points (n, d)."""
    X = np.asarray(points, dtype=np.float64)
    with warnings.catch_warnings():
        # a small episode's neighbour graph may be disconnected: spectral clustering still labels it
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        spectral = Spectral(n_clusters=k, n_neighbors=min(10, len(X) - 1), random_state=seed).fit_predict(X)
    return {
        "kmeans": KMeans(n_clusters=k, random_state=seed).fit_predict(X),
        "gmm": GaussianMixture(n_components=k, random_state=seed).fit_predict(X),
        "spectral": spectral,
    }


def text_baselines(texts: list[str], k: int, embedder: TextEmbedder, seed: int) -> dict[str, np.ndarray]:
    """{"kmeans_embeddings"}: k-means labels (n,) on the embeddings of n texts."""
    return {"kmeans_embeddings": KMeans(n_clusters=k, random_state=seed).fit_predict(embedder.embed(texts))}


def add_baselines(rows: list[dict], embedder_model: str, seed: int) -> None:
    """Add `pred_<method>` (n labels) of the baselines to each episode row: the point baselines
    for episodes of points, k-means on `embedder_model`'s embeddings for episodes of texts."""
    embedder = TextEmbedder(embedder_model) if any(r["texts"] is not None for r in rows) else None
    for row in rows:
        if row["texts"] is not None:
            predicted = text_baselines(row["texts"], row["k"], embedder, seed)
        else:
            predicted = point_baselines(row["points"], row["k"], seed)
        row.update({f"pred_{method}": labels.tolist() for method, labels in predicted.items()})
