"""The output directory of an `icc cluster` run: the one place that names its files, builds its
tables and reads it back (for search and the report).

    texts.parquet/        every input row: id, text, reject, replaced, truncated[, label]   (Parquet shards)
    embeddings.parquet/   the embedded rows: id, vector                                    (Parquet shards)
    embed.json            the embed stage's manifest (`icc.corpus.shards.Shards`), complete when written last
    assignments.parquet/  every input row: id, cluster, distance[, membership], reason      (Parquet shards)
    clusters.parquet      one row per cluster: cluster, size, centroid, central_texts, name, representation, name_source
    hierarchy.parquet     the clusters' merge tree (`icc.corpus.hierarchy`)
    metrics.json          what the run measured; run.json: its config and package versions
    report.html           the map of the clusters; search_report.html: the map of a search
    _SUCCESS              written last: the run is complete (a re-run removes it first)
    _icc_manifest.json    the entries icc created here and what the run was made from (`Manifest`)
    .icc.lock             held by the run writing here; .icc.lock.holder: its pid and host

Shard i (`part_name(i)`) of the three shard directories holds the same input rows.

icc deletes or replaces only the entries that a directory's manifest lists (`renew`), so a
directory that holds anything else is never emptied. `open_run` holds the run directory for one
`icc cluster` run: it refuses, with one line and before any work, an output.dir that holds the
input or files icc did not write, one in use by another run, and one holding a run made with other
settings (unless overwrite).
"""

import contextlib
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from icc.data.parquet import parquet_files, read_output, take_texts, vector_array, vector_matrix, write_table_atomic
from icc.errors import ICCError
from icc.files import read_json, write_atomic, write_json
from icc.models.embedder import loadable_settings
from icc.pipeline import METRICS, RUN_RECORD

if TYPE_CHECKING:  # the labeler module loads torch; a run directory is read without it
    from icc.corpus.labeler import ClusterNames

TEXTS = "texts.parquet"
EMBEDDINGS = "embeddings.parquet"
EMBED_MANIFEST = "embed.json"
ASSIGNMENTS = "assignments.parquet"
CLUSTERS = "clusters.parquet"
HIERARCHY = "hierarchy.parquet"
REPORT = "report.html"
SEARCH_REPORT = "search_report.html"
SUCCESS = "_SUCCESS"
MANIFEST = "_icc_manifest.json"
LOCK, LOCK_HOLDER = ".icc.lock", ".icc.lock.holder"
HYDRA_LOG = "cluster.log"  # Hydra's log (and its hidden .hydra/), written before the run starts
COMPLETE_RUN = (RUN_RECORD, METRICS, ASSIGNMENTS, EMBEDDINGS, TEXTS, CLUSTERS, SUCCESS)
RUN_ENTRIES = (TEXTS, EMBEDDINGS, EMBED_MANIFEST, ASSIGNMENTS, CLUSTERS, HIERARCHY, METRICS, RUN_RECORD, REPORT,
               SEARCH_REPORT, SUCCESS)  # what icc cluster (and icc search) may write in a run directory
NOISE = "noise"  # the reason of an embedded row in no cluster


def part_name(shard: int) -> str:
    """The file name of shard `shard` inside a shard directory."""
    return f"part-{shard:05d}.parquet"


@dataclass
class Manifest:
    """`_icc_manifest.json` of a directory icc writes into: entries, the names icc created there
    (the only ones it deletes or replaces); settings, what the run there was made from
    ({setting: value}, see `icc.corpus.embed_stage.embed_settings`; {} where not recorded)."""

    dir: Path
    entries: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory) -> "Manifest":
        """The manifest of `directory`, empty where it has none; ICCError if it is not JSON."""
        path = Path(directory) / MANIFEST
        record = read_json(path) if path.is_file() else {}
        return cls(dir=Path(directory), entries=record.get("entries", []), settings=record.get("settings", {}))

    def save(self) -> None:
        write_json(self.dir / MANIFEST, {"entries": sorted(self.entries), "settings": self.settings})

    def foreign(self) -> list[str]:
        """The entries of the directory that icc did not write (hidden ones aside), sorted."""
        return sorted(name for name in os.listdir(self.dir)
                      if not name.startswith(".") and name not in self.entries + [MANIFEST, HYDRA_LOG])


def renew(directory, *names: str) -> None:
    """Make `names` in `directory` icc's afresh, before writing them: delete those icc wrote
    earlier, refuse (ICCError) to touch any that icc did not write, and record them in the
    directory's manifest."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    foreign = [name for name in names if (directory / name).exists() and name not in manifest.entries]
    if foreign:
        raise ICCError(f"{directory} holds {', '.join(foreign)}, which icc did not write: refusing to replace "
                       f"{'it' if len(foreign) == 1 else 'them'}; choose another output directory")
    for name in names:
        _delete(directory / name)
    if not set(names) <= set(manifest.entries):
        directory.mkdir(parents=True, exist_ok=True)
        manifest.entries = sorted(set(manifest.entries) | set(names))
        manifest.save()


def forget(directory, *names: str) -> None:
    """Delete `names` in `directory` that its manifest lists as icc's and drop them from it (the
    reverse of `renew`); a name the manifest does not list is left alone."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    listed = [name for name in names if name in manifest.entries]
    for name in listed:
        _delete(directory / name)
    if listed:
        manifest.entries = [name for name in manifest.entries if name not in listed]
        manifest.save()


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@contextlib.contextmanager
def open_run(out, data_path: str, settings: dict, overwrite: bool = False):
    """Hold `out` for one `icc cluster` run made from `settings` ({setting: value}) of the corpus
    at `data_path`, and record it in the manifest. Refuses (ICCError, before anything in `out`
    changes) an `out` that holds the input or lies inside it, holds files icc did not write, is in
    use by another run, or holds a run with other settings (named) unless `overwrite`, which
    deletes every entry icc wrote there. Removes `_SUCCESS` (`mark_complete` writes it last)."""
    out, settings = Path(out), json.loads(json.dumps(settings, default=str))  # as the manifest holds them
    _check_apart(out, data_path)
    out.mkdir(parents=True, exist_ok=True)
    with lock_dir(out):
        manifest = Manifest.load(out)
        foreign = manifest.foreign()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ICCError(f"output.dir {out} holds files icc did not write ({shown}): choose a new or empty output.dir")
        recorded = manifest.settings or settings  # a directory with no run recorded differs in nothing
        changed = [f"{key} {_short(recorded.get(key))} -> {_short(settings.get(key))}"
                   for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key)]
        if changed and not overwrite:
            raise ICCError(f"output.dir {out} holds a run made with other settings: {'; '.join(changed)}. "
                           f"Re-run with output.overwrite=true to replace it, or choose another output.dir")
        if overwrite:
            renew(out, *manifest.entries)
        manifest.entries = sorted(set(manifest.entries) | set(RUN_ENTRIES))
        manifest.settings = settings
        manifest.save()
        _delete(out / SUCCESS)
        yield


def mark_complete(out) -> None:
    """Write `_SUCCESS`, the last file of a complete run."""
    write_atomic(Path(out) / SUCCESS, b"")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_apart(out: Path, data_path: str) -> None:
    """ICCError if the corpus at `data_path` (file, directory or glob) lies inside `out`, or `out` inside it."""
    if "://" in data_path:
        return
    parts = Path(data_path).parts
    root = Path(*parts[:next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))])
    root, out = root.resolve(), out.resolve()
    if root.is_relative_to(out):
        raise ICCError(f"data.path {data_path} is inside output.dir {out}: icc would replace its own input; "
                       f"choose another output.dir")
    if root.is_dir() and out.is_relative_to(root):
        raise ICCError(f"output.dir {out} is inside data.path {data_path}: its outputs would be read as input; "
                       f"choose an output.dir outside it")


@contextlib.contextmanager
def lock_dir(out: Path, setting: str = "output.dir"):
    """Hold the lock of directory `out` (given as `setting`) while the block runs; ICCError naming the holder
    if another process holds it. The OS releases the lock of a process that dies, so the lock of a
    killed run is taken over."""
    lock = FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = read_json(out / LOCK_HOLDER)
            by = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (ICCError, KeyError, TypeError):
            by = "holder unknown"
        raise ICCError(f"{setting} {out} is in use by another icc run ({by}): wait for it to end, "
                       f"or choose another {setting}") from None
    try:
        write_json(out / LOCK_HOLDER, {"pid": os.getpid(), "host": socket.gethostname(),
                                       "since": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"})
        yield
    finally:
        lock.release()


def assignments_table(ids, reject: np.ndarray, labels: np.ndarray, distances: np.ndarray,
                      membership: np.ndarray | None = None) -> pa.Table:
    """One row per input row: id, cluster (-1 when rejected or noise), distance to the cluster's
    centroid, membership (fuzzy clusterers only) and reason (null unless cluster is -1).

    ids, reject: (n,) per input row, reject "" for the embedded rows; labels, distances,
    membership: (n_ok,) for the embedded rows, in row order.
    """
    n, ok = len(ids), reject == ""
    cluster = np.full(n, -1, dtype=np.int64)
    cluster[ok] = labels
    distance = np.full(n, np.nan, dtype=np.float32)
    distance[ok] = np.where(labels >= 0, distances, np.nan)
    reason = np.where(ok, np.where(cluster == -1, NOISE, ""), reject)
    columns = {
        "id": ids,
        "cluster": cluster,
        "distance": pa.array(distance, from_pandas=True),
        "reason": pa.array(np.where(reason == "", None, reason).tolist(), pa.string()),
    }
    if membership is not None:
        full = np.full(n, np.nan, dtype=np.float32)
        full[ok] = membership
        columns["membership"] = pa.array(full, from_pandas=True)
    return pa.table(columns)


def central_members(labels: np.ndarray, distances: np.ndarray, k: int, top: int = 5) -> list[np.ndarray]:
    """For each cluster 0..k-1, the indices of its `top` members nearest its centroid, nearest first."""
    members = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        members.append(idx[np.argsort(distances[idx], kind="stable")[:top]])
    return members


def clusters_table(centers: np.ndarray, sizes: np.ndarray, central_texts: list[list[str]],
                   labels: "ClusterNames | None" = None) -> pa.Table:
    """One row per cluster: cluster id, size, centroid (dim floats), texts nearest the centroid, and
    from the labeler's `labels` (nulls without one): name, representation (its keywords, best
    first) and name_source ("keywords" or "llm": an LLM name that fell back shows "keywords";
    "merged": names joined by `icc merge`)."""
    k = len(centers)
    return pa.table({
        "cluster": np.arange(k, dtype=np.int64),
        "size": sizes.astype(np.int64),
        "centroid": vector_array(np.asarray(centers, dtype=np.float32)),
        "central_texts": pa.array(central_texts, pa.list_(pa.string())),
        "name": pa.array(labels.names if labels else [None] * k, pa.string()),
        "representation": pa.array(labels.representation if labels else [None] * k, pa.list_(pa.string())),
        "name_source": pa.array(labels.source if labels else [None] * k, pa.string()),
    })


def texts_at_rows(out, rows_per_cluster: list[np.ndarray]) -> list[list[str]]:
    """For each cluster, the texts of its input rows `rows_per_cluster[c]` (in that order), read
    from the run's texts shards in one streaming pass."""
    texts = take_texts(Path(out) / TEXTS, np.concatenate(rows_per_cluster))
    splits = np.cumsum([len(rows) for rows in rows_per_cluster])[:-1]
    return [list(t) for t in np.split(np.array(texts, dtype=object), splits)]


def write_clusters(out, table: pa.Table) -> None:
    """Write `clusters_table(...)` as the run's clusters.parquet, atomically."""
    write_table_atomic(Path(out) / CLUSTERS, table)


@dataclass
class ClusterRun:
    """The embedded rows of a run and its clusters.

    ids, rows (positions in the input and in texts.parquet), cluster (-1: noise): (n,) per
    embedded row, in input order; vectors: (n, dim) float32 unit vectors; centroids: (k, dim);
    sizes: (k,); names: k cluster names (None where the run had no labeler); central_texts: per
    cluster, its texts nearest the centroid, nearest first; representation: per cluster, its
    keywords, best first (None: the run had no labeler or predates them); name_source: what gave
    each name (`clusters_table`; None where none or the run predates it); embedder: the
    `embedder` entry of run.json, what loads the run's encoder (`TextEmbedder` keyword arguments:
    model, max_length, pooling, ...); config: the run's resolved config.
    """

    dir: Path
    ids: np.ndarray
    rows: np.ndarray
    cluster: np.ndarray
    vectors: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    names: list[str | None]
    central_texts: list[list[str]]
    representation: list[list[str] | None]
    name_source: list[str | None]
    embedder: dict
    config: dict
    metrics: dict

    def texts(self, positions: np.ndarray) -> list[str]:
        """Texts of the embedded rows at `positions` (indices into ids/vectors), in that order."""
        return take_texts(self.dir / TEXTS, self.rows[np.asarray(positions, dtype=np.int64)])

    def labels(self) -> np.ndarray | None:
        """(n,) the label of each embedded row (None where it has none); None for a corpus without labels."""
        files = parquet_files(self.dir / TEXTS)
        if "label" not in pq.read_schema(files[0]).names:
            return None
        return read_output(self.dir / TEXTS, ["label"])["label"].to_numpy(zero_copy_only=False)[self.rows]

    def positions(self, rows) -> np.ndarray:
        """Positions (indices into ids/vectors) of the embedded rows with these input row numbers."""
        return np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))

    def cluster_label(self, c: int) -> str:
        """"<c> <name>" for the legend and messages ("noise" for -1)."""
        if c < 0:
            return NOISE
        return f"{c} {self.names[c]}" if self.names[c] else str(c)


def load_run(run_dir, finished: bool = True) -> ClusterRun:
    """Read the outputs of `icc cluster` in `run_dir`; ICCError if the directory is missing or
    incomplete (without `_SUCCESS` too, unless `finished` is False: the run reading its own outputs)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ICCError(f"run directory {run_dir} does not exist (give the output.dir of an icc cluster run)")
    missing = [name for name in COMPLETE_RUN if not (run_dir / name).exists() and (finished or name != SUCCESS)]
    if missing:
        raise ICCError(f"{run_dir} is not a complete icc cluster run: missing {', '.join(missing)}")
    run, metrics = read_json(run_dir / RUN_RECORD), read_json(run_dir / METRICS)
    if "embedder" not in run:
        raise ICCError(f"{run_dir / RUN_RECORD} has no embedder entry: not an icc cluster run")
    assignments = _read(run_dir / ASSIGNMENTS, ["cluster", "reason"])
    embeddings = _read(run_dir / EMBEDDINGS, ["id", "vector"])
    clusters = _read(run_dir / CLUSTERS, None)
    reason = assignments["reason"].to_numpy(zero_copy_only=False)
    rows = np.flatnonzero([r is None or r == NOISE for r in reason])
    if len(rows) != embeddings.num_rows:
        raise ICCError(f"{run_dir} is not a complete icc cluster run: {len(rows)} embedded rows in "
                       f"assignments.parquet, {embeddings.num_rows} in embeddings.parquet")
    k = clusters.num_rows
    def column(name: str) -> list:
        return clusters[name].to_pylist() if name in clusters.column_names else [None] * k

    return ClusterRun(
        dir=run_dir,
        ids=embeddings["id"].to_numpy(zero_copy_only=False),
        rows=rows,
        cluster=assignments["cluster"].to_numpy()[rows],
        vectors=vector_matrix(embeddings["vector"]),
        centroids=vector_matrix(clusters["centroid"]),
        sizes=clusters["size"].to_numpy(),
        names=column("name"),
        central_texts=clusters["central_texts"].to_pylist(),
        representation=column("representation"),
        name_source=column("name_source"),
        embedder=loadable_settings(run["embedder"]),
        config=run.get("config", {}),
        metrics=metrics,
    )


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    try:
        return read_output(path, columns)
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise ICCError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
