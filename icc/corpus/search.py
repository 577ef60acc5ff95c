"""Cluster-filtered semantic search over an `icc cluster` run.

The query is assigned to its nearest centroid(s), as the clusterer assigns points, and ranked by
cosine similarity (inner product of unit vectors) among the members of those clusters only, which
keeps near-miss neighbours from other clusters out of the results.

    searcher = Searcher.load("outputs/cluster/2026-11-23_07-00-00")
    for hit in searcher.search("my card was declined", top_k=10):
        print(hit["score"], hit["name"], hit["text"])
"""

import faiss
import numpy as np

from icc.checks import check_positive_int
from icc.corpus.rundir import ClusterRun, load_run
from icc.errors import ICCError

FILTERS = ("cluster", "none")


class ClusterIndex:
    """Exact inner-product search over (n, dim) unit vectors, optionally restricted to clusters.

    cluster: (n,) cluster of each vector (-1: noise, found only without a filter);
    centroids: (k, dim), the clusterer's, for assigning queries to clusters.
    """

    def __init__(self, vectors: np.ndarray, cluster: np.ndarray, centroids: np.ndarray):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.cluster = np.asarray(cluster)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)
        self.centroids = faiss.IndexFlatL2(vectors.shape[1])
        self.centroids.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def nearest_clusters(self, query: np.ndarray, n: int = 1) -> np.ndarray:
        """The `n` clusters whose centroids are nearest `query` (dim,) in Euclidean distance, nearest first."""
        _, nearest = self.centroids.search(_row(query), min(n, self.centroids.ntotal))
        return nearest[0]

    def search(self, query: np.ndarray, top_k: int, clusters=None) -> tuple[np.ndarray, np.ndarray]:
        """The `top_k` vectors most similar to `query` (dim,): scores (m,) cosine, best first, and
        their positions (m,); m < top_k when the searched clusters have fewer members.
        clusters: cluster ids to search in, or None for all vectors."""
        params = None
        if clusters is not None:
            allowed = np.isin(self.cluster, np.asarray(clusters))
            self._bitmap = np.packbits(allowed, bitorder="little")  # the selector reads it during search
            params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(self._bitmap)))
        # One query gains little from OpenMP threads, and on a busy machine their spin-waiting made a
        # 100k-vector search 20x slower (430 ms instead of 23 ms on 2 cores).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, positions = self.index.search(_row(query), top_k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        found = positions[0] >= 0
        return scores[0][found], positions[0][found]


def check_search(top_k: int = 10, filter: str = "cluster", clusters: int = 1, preview_chars: int = 200) -> None:
    """ICCError for a `Searcher` setting (`icc search`'s top_k and search group) of the wrong type
    or range, before the run is loaded."""
    check_positive_int(top_k, "top_k")
    check_filter(filter, clusters)
    check_positive_int(preview_chars, "search.preview_chars")


def check_filter(filter: str = "cluster", clusters: int = 1) -> None:
    """ICCError unless `filter` is one of FILTERS and `clusters` a positive integer."""
    if filter not in FILTERS:
        raise ICCError(f"unknown search filter '{filter}' (choose from {', '.join(FILTERS)})")
    check_positive_int(clusters, "search.clusters")


def _row(query: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))


class Searcher:
    """Search an `icc cluster` run: its vectors in a `ClusterIndex`, queries embedded with the run's
    own embedder (loaded on first use), results with cluster names and text previews."""

    def __init__(self, run: ClusterRun, preview_chars: int = 200):
        check_positive_int(preview_chars, "search.preview_chars")
        self.run = run
        self.index = ClusterIndex(run.vectors, run.cluster, run.centroids)
        self.preview_chars = preview_chars
        self._embedder = None

    @classmethod
    def load(cls, run_dir, preview_chars: int = 200) -> "Searcher":
        return cls(load_run(run_dir), preview_chars)

    def embed(self, text: str) -> np.ndarray:
        """The query's (dim,) unit vector from the run's embedder, loaded as run.json records it
        (model, max_length, pooling, precision, ...: the run's whole `embedder` load group)."""
        if self._embedder is None:
            from icc.models.embedder import TextEmbedder

            self._embedder = TextEmbedder(**self.run.embedder)
        return self._embedder.embed([text])[0]

    def query_clusters(self, vector: np.ndarray, filter: str = "cluster", clusters: int = 1) -> np.ndarray | None:
        """The clusters searched for a query vector: its `clusters` nearest, or None (all) for filter=none."""
        check_filter(filter, clusters)
        return None if filter == "none" else self.index.nearest_clusters(vector, clusters)

    def search(self, query, top_k: int = 10, filter: str = "cluster", clusters: int = 1) -> list[dict]:
        """Results for a query text (or its (dim,) vector), best first: dicts with rank, id, row (in
        the input), score (cosine), cluster, name and text (a preview of `preview_chars`)."""
        check_positive_int(top_k, "top_k")
        vector = self.embed(query) if isinstance(query, str) else query
        scores, positions = self.index.search(vector, top_k, self.query_clusters(vector, filter, clusters))
        texts = self.run.texts(positions)
        return [
            {
                "rank": rank,
                "id": _plain(self.run.ids[p]),
                "row": int(self.run.rows[p]),
                "score": round(float(score), 4),
                "cluster": int(self.run.cluster[p]),
                "name": self.run.names[self.run.cluster[p]] if self.run.cluster[p] >= 0 else None,
                "text": " ".join(text.split())[: self.preview_chars],
            }
            for rank, (score, p, text) in enumerate(zip(scores, positions, texts), start=1)
        ]

    def rerank(self, query: str, hits: list[dict], reranker) -> list[dict]:
        """`hits` reordered by `reranker` (e.g. `icc.rerank.PairwiseReranker`) on their full texts,
        renumbered, each with its former rank as retrieval_rank."""
        texts = self.run.texts(self.run.positions([h["row"] for h in hits]))
        reordered = [hits[i] for i in reranker.rerank(query, texts)]
        return [{**hit, "rank": rank, "retrieval_rank": hit["rank"]} for rank, hit in enumerate(reordered, start=1)]


def _plain(value):
    """A numpy scalar id as a JSON-ready Python value."""
    return value.item() if isinstance(value, np.generic) else value
