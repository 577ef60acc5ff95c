"""`icc.TextClusterer`: the whole job on a list of texts in one estimator (in this process, or on Ray when large).

    from icc import TextClusterer
    model = TextClusterer(n_clusters=6).fit(texts)
    model.cluster_info()                      # cluster, size, name, representation, central_texts
    labels, distances = model.transform(["where is my new card?"])
    model.search("card declined", k=5)        # in the query's nearest cluster
    model.merge([2, 4])                       # one cluster now

It embeds with `icc.models.embedder.TextEmbedder`, clusters with an `icc.cluster` estimator and
names with an `icc.corpus.labeler` labeler, and describes the clusters as `icc cluster` does
(`icc.corpus.describe`, `icc.corpus.hierarchy`, `icc.corpus.merge`).
"""

import dataclasses
import numbers

import numpy as np
import pyarrow.parquet as pq
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.utils.validation import check_is_fitted

from icc.errors import ICCError

LABELER_NAMES = ("keywords", "none")
SAVED_FROM = "memory://icc.TextClusterer"  # the data.path of a saved run: texts held in memory
REPORT_SETTINGS = {"max_points": 20000, "projection": "pca", "seed": 0}
BACKENDS = ("auto", "local", "ray")
RAY_ABOVE = 100_000  # texts beyond which backend="auto" fits with the icc cluster pipeline on Ray


class TextClusterer(ClusterMixin, BaseEstimator):
    """Embed, cluster and name texts: a scikit-learn estimator (`get_params`, `set_params`, `clone`).

    n_clusters: an integer >= 2, "auto" (the best silhouette in the clusterer's `k_range`) or None:
        "auto" for the clusterers told k, nothing for hdbscan (it finds k itself).
    embedder: a model name (`icc.models.hub`: "all-MiniLM-L6-v2", a HF id, a local directory) or a
        dict of `TextEmbedder` keyword arguments (model, max_length, pooling, device, ...).
    clusterer: a name of `icc.cluster.CLUSTERERS` ("kmeans", "spectral", "agglomerative", "hdbscan",
        "fuzzy_cmeans"), built with its defaults, n_clusters and random_state; or an `icc.cluster`
        estimator (then n_clusters must be None: it has its own), cloned at each fit.
    labeler: "keywords" (c-TF-IDF), "none" / None, or a labeler object with `label(cluster_texts, centroids)`
        and `texts_per_cluster` (e.g. `icc.corpus.labeler.LLMLabeler`, which needs Ray started).
    random_state: the clusterer's seed.
    backend: "local" (embed and cluster in this process, no Ray), "ray" (fit runs the `icc cluster`
        pipeline, `python -m pipelines.cluster`, on Ray: the actor pool embeds, Ray tasks cluster;
        the clusterer and labeler by name only), or "auto": "ray" beyond `RAY_ABOVE` texts.
    run_dir: where backend "ray" writes its run directory (None: a new temporary directory);
    ray_address: the Ray cluster it joins ("auto", "host:port"; None: a local Ray for the run).

    After `fit(texts)` on n texts: `labels_` (n,) int64 (-1: noise), `distances_` (n,) float32 to
    the own centroid (nan for noise), `names_` (k names, None where none), `cluster_centers_`
    (k, dim), `sizes_` (k,), `vectors_` (n, dim) unit vectors, `truncated_` (n,) bool (cut at the
    embedder's max_length), `texts_`, `hierarchy_` (a pyarrow table, `icc.corpus.hierarchy`),
    `clusterer_`, `embedder_` (the loaded `TextEmbedder`) and `labeler_`.

    `save(dir)` writes an `icc cluster` run directory (`icc search`, `icc merge` and `load` read
    it); `report(path)` writes the run's HTML map.
    """

    def __init__(self, n_clusters=None, *, embedder="all-MiniLM-L6-v2", clusterer="kmeans", labeler="keywords",
                 random_state=0, backend="auto", run_dir=None, ray_address=None):
        self.n_clusters = n_clusters
        self.embedder = embedder
        self.clusterer = clusterer
        self.labeler = labeler
        self.random_state = random_state
        self.backend = backend
        self.run_dir = run_dir
        self.ray_address = ray_address

    def _embedder_kwargs(self) -> dict:
        from icc.models.embedder import check_embedder, check_renamed

        kwargs = {"model": self.embedder} if isinstance(self.embedder, str) else self.embedder
        if not isinstance(kwargs, dict) or "model" not in kwargs:
            raise ICCError(f"embedder must be a model name or a dict with a 'model' key, got {self.embedder!r}")
        check_renamed(kwargs)
        check_embedder(**{key: value for key, value in kwargs.items() if key in embedder_load_keys()})
        return kwargs

    def _make_clusterer(self):
        from icc.cluster import CLUSTERERS, Clusterer, make_clusterer, takes_k

        if isinstance(self.clusterer, Clusterer):
            if self.n_clusters is not None:
                raise ICCError("n_clusters is given by the clusterer estimator passed: leave n_clusters None")
            clusterer = clone(self.clusterer)
            clusterer.check_params()
            return clusterer
        if not isinstance(self.clusterer, str):
            raise ICCError(f"clusterer must be a name ({', '.join(CLUSTERERS)}) or an icc.cluster estimator, "
                           f"got {self.clusterer!r}")
        params = {"seed": self.random_state}
        if self.clusterer in CLUSTERERS and takes_k(self.clusterer):
            params["k"] = "auto" if self.n_clusters is None else self.n_clusters
        elif self.n_clusters is not None:
            params["k"] = self.n_clusters  # refused by make_clusterer, in its words
        return make_clusterer(self.clusterer, **params)

    def _make_labeler(self, embedder: dict):
        """The labeler; a named one re-ranks its keywords with the same encoder (`embedder` kwargs)."""
        from icc.corpus.labeler import make_labeler

        if self.labeler is None or isinstance(self.labeler, str):
            if self.labeler not in (None, *LABELER_NAMES):
                raise ICCError(f"labeler must be one of {', '.join(LABELER_NAMES)}, None or a labeler object "
                               f"(e.g. icc.corpus.labeler.LLMLabeler), got {self.labeler!r}")
            return make_labeler(self.labeler or "none", embedder=embedder)
        if not (hasattr(self.labeler, "label") and hasattr(self.labeler, "texts_per_cluster")):
            raise ICCError(f"labeler {self.labeler!r} has no label(cluster_texts, centroids) and texts_per_cluster")
        return self.labeler

    def _share_encoder(self) -> None:
        """Let a named labeler (made with `embedder_`'s settings) re-rank with `embedder_` rather than
        load the model a second time."""
        from icc.corpus.labeler import KeywordLabeler

        if isinstance(self.labeler, str) and isinstance(self.labeler_, KeywordLabeler):
            self.labeler_.use_encoder(self.embedder_)

    def fit(self, texts, y=None):
        """Embed, cluster and name `texts` (a list of non-empty strings, at least 2); y is ignored."""
        from icc.cluster.base import check_k
        from icc.models.embedder import TextEmbedder

        texts = check_texts(texts)
        if self.backend not in BACKENDS:
            raise ICCError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        embedder_kwargs, clusterer = self._embedder_kwargs(), self._make_clusterer()
        labeler = self._make_labeler(embedder_kwargs)
        if getattr(clusterer, "n_clusters", "auto") != "auto":
            check_k(clusterer.n_clusters, len(texts))  # before the model loads
        if self.backend == "ray" or (self.backend == "auto" and len(texts) > RAY_ABOVE):
            return self._fit_on_ray(texts, embedder_kwargs)
        self.embedder_ = TextEmbedder(**embedder_kwargs)
        self.vectors_, tokens = self.embedder_.embed_with_lengths(texts)
        self.truncated_ = tokens >= self.embedder_.max_length
        self.texts_ = texts
        self.clusterer_, self.labeler_ = clusterer.fit(self.vectors_), labeler
        self._share_encoder()
        self._describe(self.clusterer_.labels_, self.clusterer_.cluster_centers_)
        return self

    def _fit_on_ray(self, texts: list[str], embedder_kwargs: dict):
        """Fit by the `icc cluster` pipeline on Ray over `texts` written to a Parquet file, then read its run."""
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        import pyarrow as pa

        from icc.cluster import make_clusterer, takes_k
        from icc.corpus.rundir import load_run

        if not isinstance(self.clusterer, str) or not (self.labeler is None or isinstance(self.labeler, str)):
            raise ICCError('backend="ray" takes the clusterer and the labeler by name, not as objects')
        k = "auto" if self.n_clusters is None else self.n_clusters
        with tempfile.TemporaryDirectory(prefix="icc-texts-") as texts_dir, \
                tempfile.TemporaryDirectory(prefix="icc-run-") as scratch:
            source, out = Path(texts_dir) / "texts.parquet", Path(self.run_dir or Path(scratch) / "run")
            pq.write_table(pa.table({"text": texts}), source)
            overrides = ["data=file", f"data.path={source}", "data.text_column=text", "data.label_column=null",
                         f"clusterer={self.clusterer}", *([f"clusterer.k={k}"] if takes_k(self.clusterer) else []),
                         f"clusterer.seed={self.random_state}", f"labeler={self.labeler or 'none'}",
                         f"ray.address={self.ray_address or ''}", "report.enabled=false", f"output.dir={out}",
                         *[f"embedder.{key}={'null' if value is None else value}"
                           for key, value in embedder_kwargs.items() if key in embedder_load_keys()]]
            done = subprocess.run([sys.executable, "-m", "pipelines.cluster", *overrides])
            if done.returncode != 0:
                raise ICCError(f"the icc cluster pipeline stopped with exit code {done.returncode} (its run: {out})")
            run = load_run(out)
            self._restore(run, make_clusterer(**run.config["clusterer"]))  # as the pipeline ran it (its yaml)
        return self

    def _restore(self, run, clusterer) -> None:
        """Set the fitted attributes from an `icc cluster` run directory read by `load_run`: its texts,
        vectors, centroids, central texts and names (as saved, the labeler not run again); `clusterer` (unfitted, as the run made it) gets the centroids (and
        every point as its kNN sample with assign="knn"), so `transform` assigns as after a fit."""
        from icc.corpus.describe import Described
        from icc.corpus.labeler import ClusterNames
        from icc.models.embedder import TextEmbedder

        self.labeler_, self.embedder_ = self._make_labeler(run.embedder), TextEmbedder(**run.embedder)
        self._share_encoder()
        self.texts_, self.vectors_ = run.texts(np.arange(len(run.rows))), run.vectors
        self.truncated_ = np.zeros(len(run.rows), bool)
        self.clusterer_ = clusterer
        self.clusterer_.cluster_centers_, self.clusterer_.n_features_in_ = run.centroids, run.vectors.shape[1]
        self.clusterer_.fit_rows_ = len(run.rows)
        self.clusterer_.sample_ = (run.vectors, run.cluster) if self.clusterer_.assign == "knn" else None
        self._set_clusters(run.cluster, run.centroids)
        labels = ClusterNames(run.names, run.representation, run.name_source) if any(run.names) else None
        self.described_ = Described(run.central_texts, labels)  # as the run named them (an LLM, say): not again
        self.names_ = run.names

    def _set_clusters(self, labels: np.ndarray, centers: np.ndarray) -> None:
        """Set labels_, cluster_centers_ and what follows from them: sizes_, distances_, hierarchy_."""
        from icc.cluster.base import member_distances
        from icc.corpus.hierarchy import hierarchy_table

        self.labels_, self.cluster_centers_ = np.asarray(labels, dtype=np.int64), centers
        self.sizes_ = np.bincount(self.labels_[self.labels_ >= 0], minlength=len(centers))
        self.distances_ = member_distances(self.vectors_, self.labels_, centers)
        self.hierarchy_ = hierarchy_table(centers, self.sizes_)

    def _describe(self, labels: np.ndarray, centers: np.ndarray) -> None:
        """`_set_clusters`, then the central texts and names of the clusters by `labeler_`."""
        from icc.corpus.describe import describe, nearest_members

        self._set_clusters(labels, centers)
        members = nearest_members(self.labels_, self.distances_, len(centers), self.labeler_)
        self.described_ = describe([[self.texts_[i] for i in idx] for idx in members], self.labeler_, centers)
        self.names_ = self.described_.names or [None] * len(centers)

    def fit_predict(self, texts, y=None) -> np.ndarray:
        """`fit(texts)` and its `labels_`."""
        return self.fit(texts).labels_

    def transform(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """The cluster of each new text as the clusterer assigns points (-1: noise) and its
        Euclidean distance to that cluster's centroid (unit vectors: at most 2): (n,) int64, (n,) float32."""
        check_is_fitted(self, "labels_")
        return self.clusterer_.predict_with_distances(self.embedder_.embed(check_texts(texts, fewest=1)))

    def predict(self, texts) -> np.ndarray:
        """(n,) int64: the cluster of each new text (`transform`'s first part)."""
        return self.transform(texts)[0]

    def cluster_info(self):
        """A pandas DataFrame, one row per cluster, largest first, as BERTopic's `get_topic_info()`:
        cluster, size, name, representation (the keyword labeler's words, else None), central_texts
        (nearest the centroid first); a row for cluster -1 (noise, no name) when there is noise."""
        import pandas as pd

        check_is_fitted(self, "labels_")
        k = len(self.sizes_)
        words = self.described_.representation or [None] * k
        rows = [{"cluster": c, "size": int(self.sizes_[c]), "name": self.names_[c], "representation": words[c],
                 "central_texts": self.described_.central_texts[c]} for c in range(k)]
        noise = int((self.labels_ < 0).sum())
        if noise:
            rows.append({"cluster": -1, "size": noise, "name": None, "representation": None, "central_texts": []})
        return pd.DataFrame(rows).sort_values("size", ascending=False, kind="stable").reset_index(drop=True)

    def search(self, query: str, cluster=None, k: int = 10):
        """The `k` fitted texts most similar to `query` (cosine), best first, as a DataFrame: rank,
        index (into the fitted texts), score, cluster, name, text. cluster: None searches the
        query's nearest cluster (as `icc search`), an id or a list of ids those clusters, "all" every text."""
        import pandas as pd

        from icc.checks import check_positive_int
        from icc.corpus.search import ClusterIndex

        check_is_fitted(self, "labels_")
        check_positive_int(k, "k")
        if not isinstance(query, str) or not query.strip():
            raise ICCError(f"query must be a non-empty string, got {query!r}")
        vector = self.embedder_.embed([query])[0]
        index = ClusterIndex(self.vectors_, self.labels_, self.cluster_centers_)
        if cluster is None:
            clusters = index.nearest_clusters(vector) if len(self.cluster_centers_) else None
        elif isinstance(cluster, str) and cluster == "all":
            clusters = None
        else:
            clusters = self._check_clusters(cluster)
        scores, positions = index.search(vector, k, clusters)
        return pd.DataFrame({
            "rank": np.arange(1, len(positions) + 1), "index": positions, "score": scores,
            "cluster": self.labels_[positions],
            "name": [self.names_[c] if c >= 0 else None for c in self.labels_[positions]],
            "text": [self.texts_[p] for p in positions],
        })

    def _check_clusters(self, cluster) -> list[int]:
        """`search`'s cluster argument (an id or a list of ids) as a list of ids; ICCError if any is not a cluster."""
        k = len(self.sizes_)
        if isinstance(cluster, numbers.Integral):
            cluster = [cluster]
        ids = list(cluster) if hasattr(cluster, "__iter__") else []
        if not ids or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < k for c in ids):
            raise ICCError(f"cluster must be None, 'all', or cluster ids in 0..{k - 1}, got {cluster!r}")
        return [int(c) for c in ids]

    def merge(self, clusters):
        """Merge `clusters` (ids, at least two) into one, renumbered as `icc merge` does
        (`icc.corpus.merge`), and name the clusters again; later `transform` calls assign to the
        merged clusters. Returns self."""
        from icc.corpus.merge import merge_mapping, merged_centroids, relabel

        check_is_fitted(self, "labels_")
        mapping = merge_mapping(len(self.sizes_), clusters)
        centers = merged_centroids(self.cluster_centers_, self.sizes_, mapping)
        self.clusterer_.cluster_centers_ = centers
        if getattr(self.clusterer_, "sample_", None) is not None:  # assign="knn": the sample votes
            sample_vectors, sample_labels = self.clusterer_.sample_
            self.clusterer_.sample_ = (sample_vectors, relabel(sample_labels, mapping))
        self._describe(relabel(self.labels_, mapping), centers)
        return self


    def save(self, directory, overwrite: bool = False):
        """Write the fitted model as an `icc cluster` run directory (`icc.corpus.rundir`, one shard):
        texts, embeddings, assignments, clusters, hierarchy, metrics.json, run.json (with this
        estimator's parameters) and _SUCCESS. Refuses, before writing, a directory holding files icc
        did not write, or another run unless `overwrite`. Returns the directory as a Path."""
        from pathlib import Path

        from omegaconf import OmegaConf

        from icc.corpus import rundir
        from icc.corpus.hierarchy import write_hierarchy
        from icc.corpus.shards import write_embedded
        from icc.metrics import internal_metrics
        from icc.pipeline import write_run_record

        check_is_fitted(self, "labels_")
        out, n = Path(directory), len(self.texts_)
        reject = np.full(n, "", dtype=object)
        params = self._saved_params()  # before anything is written: a clusterer it cannot save is refused
        with rundir.open_run(out, SAVED_FROM, {"saved_by": SAVED_FROM}, overwrite=overwrite):
            write_embedded(_Batches({"text": np.array(self.texts_, dtype=object), "reject": reject,
                                     "replaced": np.zeros(n, bool), "truncated": self.truncated_,
                                     "vector": self.vectors_}), out)
            rundir.renew(out, rundir.ASSIGNMENTS)
            (out / rundir.ASSIGNMENTS).mkdir()
            table = rundir.assignments_table(np.arange(n), reject.astype(str), self.labels_, self.distances_)
            pq.write_table(table, out / rundir.ASSIGNMENTS / rundir.part_name(0))
            labels = self.described_.labels and dataclasses.replace(self.described_.labels, names=self.names_)
            rundir.write_clusters(out, rundir.clusters_table(self.cluster_centers_, self.sizes_,
                                                             self.described_.central_texts, labels))
            write_hierarchy(out, self.hierarchy_)
            metrics = {"rows": n, "embedded": n, "rejected": 0, "k": len(self.sizes_),
                       "noise": int((self.labels_ < 0).sum()), **internal_metrics(self.vectors_, self.labels_)}
            config = {"text_clusterer": params, "report": {"enabled": True, **REPORT_SETTINGS},
                      "labeler": {"name": self.labeler if isinstance(self.labeler, str) else "none"}}
            vectors = {"dim": self.vectors_.shape[1], "normalized": True}
            write_run_record(out, "text_clusterer", OmegaConf.create(config), metrics,
                             embedder=self._embedder_kwargs(), vectors=vectors)
            rundir.mark_complete(out)
        return out

    def _saved_params(self) -> dict:
        """`get_params()` as JSON: a clusterer estimator as {"name": its registry name, **its parameters};
        a labeler object as "none" (it is not saved; its names are)."""
        from icc.cluster import CLUSTERERS

        params = self.get_params()
        if not isinstance(self.clusterer, str):
            name = next((key for key, cls in CLUSTERERS.items() if type(self.clusterer) is cls), None)
            if name is None:
                raise ICCError(f"cannot save a {type(self.clusterer).__name__}: not a clusterer of icc.cluster.CLUSTERERS")
            params["clusterer"] = {"name": name, **self.clusterer.get_params()}
        if not (self.labeler is None or isinstance(self.labeler, str)):
            params["labeler"] = "none"
        return params

    @classmethod
    def load(cls, directory) -> "TextClusterer":
        """The model saved in `directory` by `save` (or merged there by `icc merge`): its parameters,
        texts, vectors, clusters and names; the clusterer holds the saved centroids (and every saved
        point as its kNN sample with assign="knn"), so `transform` assigns as after the fit."""
        from icc.cluster import make_clusterer
        from icc.corpus.rundir import load_run

        run = load_run(directory)
        params = run.config.get("text_clusterer")
        if params is None:
            raise ICCError(f"{directory} was not written by TextClusterer.save (an icc cluster run: use icc search)")
        if isinstance(params["clusterer"], dict):
            clusterer = params["clusterer"]
            params["clusterer"] = make_clusterer(clusterer.pop("name"), **clusterer)
        model = cls(**params)
        model._restore(run, model._make_clusterer())
        return model

    def report(self, path):
        """Write the HTML map of the clusters (`icc.corpus.report`) to `path`; returns it as a Path."""
        import tempfile
        from pathlib import Path

        from icc.corpus.report import write_report
        from icc.corpus.rundir import load_run

        with tempfile.TemporaryDirectory(prefix="icc-report-") as directory:
            return write_report(load_run(self.save(Path(directory) / "run")), path, **REPORT_SETTINGS)


class _Batches:
    """One numpy batch where `icc.corpus.shards.write_embedded` reads a Ray Dataset's batches."""

    def __init__(self, batch: dict):
        self.batch = batch

    def iter_batches(self, **kwargs):
        yield self.batch


def embedder_load_keys() -> tuple[str, ...]:
    """The `TextEmbedder` settings that shape the vectors (`check_embedder`'s parameters), the
    `embedder` config group's load keys."""
    import inspect

    from icc.models.embedder import check_embedder

    return tuple(inspect.signature(check_embedder).parameters)


def check_texts(texts, fewest: int = 2) -> list[str]:
    """`texts` as a list of strings; ICCError, naming the first bad entry, unless it is a sequence
    of at least `fewest` strings with some non-space character each."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__len__") or not hasattr(texts, "__iter__"):
        raise ICCError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if len(texts) < fewest:
        raise ICCError(f"texts must hold at least {fewest} text{'s' if fewest > 1 else ''}, got {len(texts)}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ICCError(f"texts[{i}] is not a string: {type(text).__name__} {text!r:.40}")
        if not text.strip():
            raise ICCError(f"texts[{i}] is empty")
    return texts
