"""Clustering algorithms as scikit-learn estimators (`fit`, `predict`, `fit_predict`, `get_params`)."""

from icc.cluster.adapt import AdaptedKMeans
from icc.cluster.base import Clusterer, KClusterer
from icc.cluster.fuzzy import FuzzyCMeans
from icc.cluster.kmeans import KMeans
from icc.cluster.sklearn_wrappers import HDBSCAN, Agglomerative, Spectral
from icc.config import build
from icc.errors import ICCError

CLUSTERERS = {
    "kmeans": KMeans,
    "spectral": Spectral,
    "agglomerative": Agglomerative,
    "hdbscan": HDBSCAN,
    "fuzzy_cmeans": FuzzyCMeans,
    "adapted": AdaptedKMeans,
}

# Config keys (icc/conf/clusterer/*.yaml, bench presets) -> the estimators' parameter names.
CONFIG_KEYS = {"k": "n_clusters", "seed": "random_state"}


def takes_k(name: str) -> bool:
    """Whether the clusterer registered under `name` is told its number of clusters (config key k)."""
    return issubclass(CLUSTERERS[name], KClusterer)


def make_clusterer(name: str, **params) -> Clusterer:
    """Build the clusterer registered under `name` from config keys, and check its parameters.

    The keys are the estimator's parameters, but `k` for n_clusters and `seed` for random_state.
    A clusterer that finds k itself (hdbscan) takes `k: null` (what its config says) and no other k.
    """
    if name in CLUSTERERS and not takes_k(name):
        k = params.pop("k", None)
        if k is not None:
            raise ICCError(f"clusterer '{name}' finds the number of clusters itself: set k to null, got {k!r}")
    clusterer = build(CLUSTERERS, "clusterer", name, **{CONFIG_KEYS.get(key, key): v for key, v in params.items()})
    clusterer.check_params()
    return clusterer


__all__ = ["CLUSTERERS", "Clusterer", "KClusterer", "make_clusterer", "takes_k", "KMeans", "Spectral",
           "Agglomerative", "HDBSCAN", "FuzzyCMeans",
           "AdaptedKMeans"]
