"""What a run says of each cluster besides its members: the texts nearest its centroid and its name.

`icc cluster`, `icc merge` and `icc.TextClusterer` describe clusters the same way: per cluster, the
`members_needed(labeler)` member texts nearest its centroid (nearest first) go to the labeler, and
the first `CENTRAL_TEXTS` of them are the cluster's central texts.
"""

from dataclasses import dataclass

import numpy as np

from icc.corpus.labeler import ClusterNames
from icc.corpus.rundir import central_members

CENTRAL_TEXTS = 5  # per cluster in clusters.parquet


@dataclass
class Described:
    """Per cluster 0..k-1: central_texts (nearest the centroid first) and what the labeler found
    (`labels`: names, representation, name sources; None without a labeler)."""

    central_texts: list[list[str]]
    labels: ClusterNames | None

    @property
    def names(self) -> list[str | None] | None:
        return self.labels.names if self.labels else None

    @property
    def representation(self) -> list[list[str]] | None:
        return self.labels.representation if self.labels else None


def members_needed(labeler) -> int:
    """Member texts per cluster, nearest the centroid first, that `describe` needs."""
    return max(CENTRAL_TEXTS, labeler.texts_per_cluster if labeler else 0)


def nearest_members(labels: np.ndarray, distances: np.ndarray, k: int, labeler) -> list[np.ndarray]:
    """Per cluster 0..k-1, the positions of its `members_needed(labeler)` members nearest its
    centroid, nearest first; labels, distances: (n,) per point (-1: noise)."""
    return central_members(labels, distances, k, members_needed(labeler))


def describe(member_texts: list[list[str]], labeler, centroids: np.ndarray) -> Described:
    """The central texts and names of the clusters whose member texts (nearest first) these are;
    centroids: (k, dim) in the run's embedding space (the keyword labeler re-ranks by them)."""
    labels = labeler.label(member_texts, centroids) if labeler else None
    return Described([texts[:CENTRAL_TEXTS] for texts in member_texts], labels)
