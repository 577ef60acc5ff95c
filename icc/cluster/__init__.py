"""Clustering algorithms behind one estimator interface (`fit`, `predict`, `fit_predict`)."""

from icc.cluster.base import Clusterer
from icc.cluster.fuzzy import FuzzyCMeans
from icc.cluster.kmeans import KMeans
from icc.cluster.sklearn_wrappers import HDBSCAN, Agglomerative, Spectral

CLUSTERERS = {
    "kmeans": KMeans,
    "spectral": Spectral,
    "agglomerative": Agglomerative,
    "hdbscan": HDBSCAN,
    "fuzzy_cmeans": FuzzyCMeans,
}


def make_clusterer(name: str, **params) -> Clusterer:
    """Build the clusterer registered under `name` with its keyword parameters."""
    from icc.errors import ICCError

    if name not in CLUSTERERS:
        raise ICCError(f"unknown clusterer '{name}' (choose from {', '.join(CLUSTERERS)})")
    try:
        return CLUSTERERS[name](**params)
    except TypeError as e:
        raise ICCError(f"bad parameters for clusterer '{name}': {e}") from None


__all__ = ["CLUSTERERS", "Clusterer", "make_clusterer", "KMeans", "Spectral", "Agglomerative", "HDBSCAN", "FuzzyCMeans"]
