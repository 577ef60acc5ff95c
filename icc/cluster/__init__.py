"""Clustering algorithms behind one estimator interface (`fit`, `predict`, `fit_predict`)."""

from icc.cluster.base import Clusterer
from icc.cluster.fuzzy import FuzzyCMeans
from icc.cluster.kmeans import KMeans
from icc.cluster.sklearn_wrappers import HDBSCAN, Agglomerative, Spectral
from icc.config import build

CLUSTERERS = {
    "kmeans": KMeans,
    "spectral": Spectral,
    "agglomerative": Agglomerative,
    "hdbscan": HDBSCAN,
    "fuzzy_cmeans": FuzzyCMeans,
}


def make_clusterer(name: str, **params) -> Clusterer:
    """Build the clusterer registered under `name` with its keyword parameters."""
    return build(CLUSTERERS, "clusterer", name, **params)


__all__ = ["CLUSTERERS", "Clusterer", "make_clusterer", "KMeans", "Spectral", "Agglomerative", "HDBSCAN", "FuzzyCMeans"]
