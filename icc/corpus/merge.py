"""Merging clusters after a run: `icc merge run=DIR clusters=[3,7]` (`merge_run`) and `TextClusterer.merge`.

The merged clusters become one, with the smallest id of the group; the clusters after them move down
to keep the ids 0..k'-1 (k' = k - len(clusters) + 1), noise stays -1. The merged centroid is the
size-weighted mean of the merged centroids (the mean of its members where the centroids are means).

`merge_run` rewrites a complete run directory in place, holding its lock: its assignments (a new
generation of shards written beside the old one, then swapped in by renames), clusters.parquet
(names from the run's keyword labeler again; with labeler=llm the merged names joined by " / ",
the other clusters keep theirs),
hierarchy.parquet, metrics.json (k and the scores again, `merges` recorded) and report.html. It
refuses, before any change, a run that is incomplete or whose files icc did not write. `_SUCCESS`
is removed just before the swap and written last, so a merge killed midway leaves a run that
readers refuse (incomplete) rather than one that mixes the two generations.
"""

import numbers
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from icc.cluster.base import member_distances
from icc.corpus import rundir
from icc.data.parquet import parquet_files
from icc.errors import ICCError
from icc.files import write_json
from icc.metrics import external_metrics, internal_metrics
from icc.pipeline import METRICS

REWRITTEN = (rundir.ASSIGNMENTS, rundir.CLUSTERS, rundir.HIERARCHY, METRICS, rundir.REPORT)  # by a merge
STALE_METRICS = ("inertia", "internal_metrics_rows")  # of the clusters before a merge: dropped, not recomputed


def check_merge(clusters, k: int) -> list[int]:
    """`clusters` as a sorted list of distinct cluster ids, at least two, each in 0..k-1; ICCError otherwise."""
    if isinstance(clusters, (str, bytes)) or not hasattr(clusters, "__iter__"):
        raise ICCError(f"clusters must be a list of cluster ids, e.g. [3, 7], got {clusters!r}")
    ids = list(clusters)
    if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in ids):
        raise ICCError(f"clusters must be integer cluster ids, got {ids!r}")
    if len(set(ids)) < 2:
        raise ICCError(f"give at least two different clusters to merge, got {ids!r}")
    outside = [c for c in ids if not 0 <= c < k]
    if outside:
        raise ICCError(f"no cluster {', '.join(map(str, outside))}: the run has clusters 0..{k - 1}")
    return sorted(set(int(c) for c in ids))


def merge_mapping(k: int, clusters) -> np.ndarray:
    """(k,) int64: the id after the merge of each cluster 0..k-1 (see the module docstring)."""
    merged = check_merge(clusters, k)
    kept = np.ones(k, dtype=bool)
    kept[merged[1:]] = False
    mapping = np.cumsum(kept) - 1
    mapping[merged] = mapping[merged[0]]
    return mapping.astype(np.int64)


def relabel(labels: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """(n,) labels after the merge; -1 (noise, rejected) stays -1."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, mapping[np.maximum(labels, 0)], -1)


def merged_centroids(centroids: np.ndarray, sizes: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """(k', d) float32: each new cluster's centroid, the size-weighted mean of the (k, d) centroids merged into it."""
    k_new = int(mapping.max()) + 1
    sums = np.zeros((k_new, centroids.shape[1]), dtype=np.float64)
    weights = np.maximum(np.asarray(sizes, dtype=np.float64), 1e-12)  # an empty cluster keeps its centroid
    np.add.at(sums, mapping, centroids * weights[:, None])
    return (sums / np.bincount(mapping, weights=weights, minlength=k_new)[:, None]).astype(np.float32)


def merge_run(run_dir, clusters) -> dict:
    """Merge `clusters` of the complete `icc cluster` run in `run_dir` (see the module docstring);
    returns its new metrics."""
    from icc.corpus.describe import describe, nearest_members
    from icc.corpus.hierarchy import hierarchy_table, write_hierarchy
    from icc.corpus.labeler import make_labeler
    from icc.corpus.report import write_report

    out = Path(run_dir)
    if not out.is_dir():
        rundir.load_run(out)  # the one-line reason, before the lock would create a file there
    with rundir.lock_dir(out, "run"):  # read under the lock too: a merge just before this one is in what it reads
        run = rundir.load_run(out)
        merged = check_merge(clusters, len(run.sizes))
        mapping = merge_mapping(len(run.sizes), merged)
        manifest = rundir.Manifest.load(out)
        foreign = [name for name in REWRITTEN if (out / name).exists() and name not in manifest.entries]
        if foreign:
            raise ICCError(f"{out} holds {', '.join(foreign)}, which icc did not write: refusing to rewrite them")
        manifest.entries = sorted(set(manifest.entries) | set(REWRITTEN))  # a run older than hierarchy.parquet
        manifest.save()
        labeler_config = run.config.get("labeler", {"name": "none"})
        keywords = labeler_config["name"] == "keywords"
        labeler = make_labeler(**labeler_config, embedder=run.embedder) if keywords else None
        centroids = merged_centroids(run.centroids, run.sizes, mapping)
        labels = relabel(run.cluster, mapping)
        distances = member_distances(run.vectors, labels, centroids)
        staged = _stage_assignments(out, labels, distances)
        members = nearest_members(labels, distances, len(centroids), labeler)
        described = describe(rundir.texts_at_rows(out, [run.rows[m] for m in members]), labeler, centroids)
        labels_found = described.labels or _names_after_merge(run, mapping)
        sizes = np.bincount(labels[labels >= 0], minlength=len(centroids))
        merges = [*run.metrics.get("merges", []), {"clusters": merged, "into": merged[0]}]  # in the ids before it
        metrics = {key: value for key, value in run.metrics.items() if key not in STALE_METRICS}
        metrics.update({"k": len(centroids), "merges": merges, **_scores(run, labels)})
        (out / rundir.SUCCESS).unlink()
        os.replace(out / rundir.ASSIGNMENTS, staged.with_name(staged.name + ".old"))
        os.replace(staged, out / rundir.ASSIGNMENTS)
        shutil.rmtree(staged.with_name(staged.name + ".old"))
        rundir.write_clusters(out, rundir.clusters_table(centroids, sizes, described.central_texts, labels_found))
        write_hierarchy(out, hierarchy_table(centroids, sizes))
        write_json(out / METRICS, metrics)
        report = run.config.get("report", {})
        if report.get("enabled") and (out / rundir.REPORT).exists():
            write_report(rundir.load_run(out, finished=False), out / rundir.REPORT,
                         **{key: value for key, value in report.items() if key != "enabled"})
        rundir.mark_complete(out)
    return metrics


def _stage_assignments(out: Path, labels: np.ndarray, distances: np.ndarray) -> Path:
    """The run's assignments shards with the merged clusters and distances of its (n,) embedded
    rows (noise stays noise, so every reason stays), written into a hidden directory beside
    assignments.parquet; returns that directory."""
    staged = out / f".{rundir.ASSIGNMENTS}.merge"
    for leftover in (staged, staged.with_name(staged.name + ".old")):  # of a merge killed midway
        if leftover.exists():
            shutil.rmtree(leftover)
    staged.mkdir()
    start = 0
    for file in parquet_files(out / rundir.ASSIGNMENTS):
        table = pq.read_table(file)
        embedded = np.asarray(pc.fill_null(pc.equal(table["reason"], rundir.NOISE), True))  # rejected rows: False
        n = int(embedded.sum())
        cluster, distance = table["cluster"].to_numpy().copy(), table["distance"].to_numpy(zero_copy_only=False).copy()
        cluster[embedded], distance[embedded] = labels[start:start + n], distances[start:start + n]
        table = table.set_column(table.schema.get_field_index("cluster"), "cluster", pa.array(cluster))
        table = table.set_column(table.schema.get_field_index("distance"), "distance",
                                 pa.array(distance, pa.float32(), from_pandas=True))
        if "membership" in table.column_names:  # fuzzy memberships of the clusters before the merge
            table = table.drop_columns(["membership"])
        pq.write_table(table, staged / file.name)
        start += n
    return staged


def _names_after_merge(run: "rundir.ClusterRun", mapping: np.ndarray):
    """The names of a run whose labeler a merge does not run again (an LLM's, or none): per new
    cluster, an untouched one keeps its name, keywords and name source; a merged one gets the names
    merged into it joined by " / " (name_source "merged"; None if none had one) and no keywords."""
    from icc.corpus.labeler import ClusterNames

    names, representation, source = [], [], []
    for new in range(int(mapping.max()) + 1):
        old = np.flatnonzero(mapping == new)
        if len(old) == 1:
            names.append(run.names[old[0]])
            representation.append(run.representation[old[0]])
            source.append(run.name_source[old[0]])
        else:
            joined = " / ".join(run.names[c] for c in old if run.names[c]) or None
            names.append(joined)
            representation.append(None)
            source.append("merged" if joined else None)
    return ClusterNames(names, representation, source)


def _scores(run: "rundir.ClusterRun", labels: np.ndarray) -> dict:
    """The run's quality scores for the merged (n,) labels: internal ones, and external ones where texts have labels."""
    scores = internal_metrics(run.vectors, labels)
    truth = run.labels()
    if truth is not None:
        known = np.array([t is not None for t in truth])
        scores.update(external_metrics(truth[known].astype(str), labels[known]))
    return scores
