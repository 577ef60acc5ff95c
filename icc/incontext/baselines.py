"""Classical clusterers on the same episodes as the language model, told the same k.

Points: k-means (k-means++ seeding, best of 10), a Gaussian mixture (full covariances, k-means
initialised) and spectral clustering on a nearest-neighbour graph. Texts: k-means on sentence
embeddings (all-MiniLM-L6-v2 by default). Every episode also gets the two answers that need no
clustering at all, the floor an LLM's answer must beat: `chance` (labels drawn uniformly from
0..k-1) and `one_cluster` (every item in cluster 0, the majority answer a model learns first).
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


def uninformed_answers(n: int, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """{"chance", "one_cluster"}: labels (n,) that ignore the items: uniform in [0, k), and all 0."""
    return {"chance": rng.integers(0, k, size=n), "one_cluster": np.zeros(n, dtype=np.int64)}


def add_baselines(rows: list[dict], embedder_model: str, seed: int) -> None:
    """Add `pred_<method>` (n labels) of the baselines to each episode row: the point baselines
    for episodes of points, k-means on `embedder_model`'s embeddings for episodes of texts, and
    the `uninformed_answers` (chance drawn from `seed`) for every episode."""
    embedder = TextEmbedder(embedder_model) if any(r["texts"] is not None for r in rows) else None
    rng = np.random.default_rng(seed)
    for row in rows:
        if row["texts"] is not None:
            predicted = text_baselines(row["texts"], row["k"], embedder, seed)
        else:
            predicted = point_baselines(row["points"], row["k"], seed)
        predicted |= uninformed_answers(row["n"], row["k"], rng)
        row.update({f"pred_{method}": labels.tolist() for method, labels in predicted.items()})
