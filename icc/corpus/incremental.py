"""Scheduled incremental runs: cluster the partitions of a corpus as they arrive, refit on drift.

`data.path` holds partitions: its sub-directories (e.g. `date=2026-01-01/`), each of files that
`read_corpus` reads. The state directory keeps what earlier runs made:

    state.json                  the partitions done {name: fingerprint, rows, embedded, run, assignments},
                                the ones rejected {name: fingerprint, reason, run}, the fit, the runs
    fits/<run id>.npy           (k, dim) float32 centroids of the fit that run made (state.json's fit.run)
    partitions/<name>/          the partition's embed shards (texts/embeddings.parquet, embed.json) and
                                assignments-<run id>.parquet (id, cluster, distance, reason): those that
                                run made (the partition's `assignments` in state.json)
    runs/<run id>/metrics.json  what each run did
    .icc.lock                   held by the run writing here (`icc.corpus.rundir.lock_dir`)

A partition is known by its name and the sha256 of its files' names and bytes, so a partition
whose files are rewritten with other rows is new again (re-embedded, its assignments replaced) and
one only touched is not. Files at the top of `data.path`, beside the partitions, are refused; entries
named `.*` or `_*` are ignored. A new partition that cannot be read (empty, unparsable) is recorded as
rejected with its reason and skipped, until its files change, so it never blocks later runs. A run
embeds the new partitions, then
- with no fit yet, fits the clusterer on every partition and assigns them all (`fit`);
- else assigns the new rows to the nearest stored centroid and measures drift on them:
  `far_share`, the share of rows farther from their centroid than `reference_distance` (the
  `far_quantile` quantile of that distance over the rows at fit time, so about 1 - far_quantile
  without drift), and `size_tvd`, the total variation distance between the clusters' shares of
  the rows at fit time and of the new rows (0: the same shares, 1: disjoint). When either passes
  `drift_threshold`, or on `refit`, it fits again on the stored embeddings of every partition
  and assigns them all again (`refit`); a partition no longer in `data.path` is dropped from the
  state then (until a refit it keeps its assignments, listed as `stored_partitions_not_in_data_path`).
Every row goes to its nearest centroid.

A run never changes a file that state.json names: it writes its centroids and assignments under its
own run id, then state.json by an atomic rename (the switch), and only then deletes the centroids
and assignments that state.json no longer names (`State.commit`). So a run killed at any point
leaves the state of the run before, whole; its re-run reuses the embeddings that were written
(`icc.corpus.embed_stage`). One run at a time holds the directory (`open_state`). A state.json
that is torn, corrupt or names files that are gone is an ICCError with the way out: `rebuild`
(schedule.rebuild=true) starts from an empty state, which re-uses every partition's embeddings
whose embed.json is complete and matches its files (`icc.corpus.embed_stage`), embeds the others,
and fits on them all: the assignments of an uninterrupted fit on the same partitions.
"""

import contextlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from icc.cluster.base import Clusterer
from icc.corpus.embed_stage import embed_corpus
from icc.corpus.rundir import ASSIGNMENTS, Manifest, forget, lock_dir, renew
from icc.corpus.sharded import Fitted, assign_shards, expand_contingency, fit_shards
from icc.corpus.shards import Shards, combine_shards
from icc.data.fingerprint import file_fingerprint
from icc.data.parquet import read_output
from icc.errors import ICCError
from icc.files import write_atomic, write_json
from icc.metrics import external_metrics
from icc.pipeline import METRICS, StageTimer

STATE = "state.json"
FITS = "fits"


@dataclass
class State:
    """state.json of a state directory (see the module docstring)."""

    dir: Path
    partitions: dict[str, dict] = field(default_factory=dict)
    rejected: dict[str, dict] = field(default_factory=dict)
    fit: dict | None = None
    runs: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir) -> "State":
        """The state in `state_dir` (empty where it has no state.json); ICCError with the way out
        where state.json is torn or corrupt, or a file it names is gone."""
        path = Path(state_dir) / STATE
        if not path.is_file():
            return cls(dir=Path(state_dir))
        try:
            state = cls(dir=Path(state_dir), **json.loads(path.read_text()))
            missing = [p for p in state._named_files() if not p.exists()]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ICCError(f"{path} is torn or corrupt ({type(e).__name__}: {str(e).splitlines()[0]}): "
                           f"{_way_out(state_dir)}") from None
        if missing:
            raise ICCError(f"{path} names files that are gone ({', '.join(map(str, missing[:3]))}): "
                           f"{_way_out(state_dir)}")
        return state

    def _named_files(self) -> list[Path]:
        """The centroids and assignments that state.json names."""
        centroids = [self._centroids_path()] if self.fit is not None else []
        return centroids + [self.assignments(name) for name in self.partitions]

    def commit(self, centroids: np.ndarray | None = None) -> None:
        """Switch to what this run wrote: write the centroids of its new fit (`fit`), then state.json
        by an atomic rename, then delete the centroids and assignments that state.json no longer names."""
        if centroids is not None:
            buffer = io.BytesIO()
            np.save(buffer, centroids.astype(np.float32))
            renew(self.dir / FITS, self._centroids_path().name)
            write_atomic(self._centroids_path(), buffer.getvalue())
        write_json(self.dir / STATE, {key: value for key, value in asdict(self).items() if key != "dir"})
        for name in self.partitions:
            _prune(self.partition_dir(name), "assignments", self.assignments(name).name)
        if self.fit is not None:
            _prune(self.dir / FITS, "", self._centroids_path().name)

    def accept(self, name: str, fingerprint: str, shards: Shards, run: str) -> None:
        """Record partition `name` as embedded (its `shards`) by `run` (its assignments: `assigned`)."""
        self.rejected.pop(name, None)
        self.partitions[name] = {"fingerprint": fingerprint, "rows": shards.n_rows, "embedded": shards.n_embedded,
                                 "run": run}

    def reject(self, name: str, fingerprint: str, reason: str, run: str) -> None:
        """Record partition `name` as unreadable for `reason`: skipped until its fingerprint changes."""
        self.partitions.pop(name, None)
        self.rejected[name] = {"fingerprint": fingerprint, "reason": reason, "run": run}

    def assigned(self, name: str, run: str) -> None:
        """Make partition `name`'s assignments those that `run` wrote (from the next `commit`)."""
        self.partitions[name]["assignments"] = run

    def partition_dir(self, name: str) -> Path:
        return self.dir / "partitions" / name

    def assignments(self, name: str) -> Path:
        """The directory of partition `name`'s current assignments (Parquet shards)."""
        return self.partition_dir(name) / _assignments_name(self.partitions[name]["assignments"])

    def centroids(self) -> np.ndarray:
        """(k, dim) float32 centroids of the current fit."""
        return np.load(self._centroids_path(), allow_pickle=False)

    def _centroids_path(self) -> Path:
        return self.dir / FITS / f"{self.fit['run']}.npy"


def _assignments_name(run: str) -> str:
    return f"assignments-{run}.parquet"


def _prune(directory: Path, prefix: str, keep: str) -> None:
    """Delete the entries named `prefix`... that icc wrote in `directory` (its manifest lists them), but `keep`."""
    forget(directory, *[name for name in Manifest.load(directory).entries if name.startswith(prefix) and name != keep])


def _way_out(state_dir) -> str:
    return (f"re-run with schedule.rebuild=true to rebuild the state from the partitions' embeddings that verify "
            f"(then a fit on them all), or remove {state_dir} to start afresh")


@contextlib.contextmanager
def open_state(state_dir, rebuild: bool = False):
    """Hold the state directory for one run and yield its `State` (empty with `rebuild`). ICCError,
    before any work, where another process holds it (naming that one), or state.json is torn or
    corrupt (without `rebuild`)."""
    state_dir = Path(state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        raise ICCError(f"schedule.state {state_dir} is a file: give a directory (new or kept by icc incremental)")
    state_dir.mkdir(parents=True, exist_ok=True)
    with lock_dir(state_dir, "schedule.state"):
        yield State(dir=state_dir) if rebuild else State.load(state_dir)


def find_partitions(path) -> dict[str, Path]:
    """The partitions under `path`: {sub-directory name: path}, sorted by name."""
    path = Path(path)
    if not path.is_dir():
        raise ICCError(f"icc incremental reads a directory of partitions; data.path is not one: {path}")
    entries = [p for p in sorted(path.iterdir()) if not p.name.startswith((".", "_"))]
    loose = [p.name for p in entries if not p.is_dir()]
    if loose:
        raise ICCError(f"data.path holds files beside its partitions ({', '.join(loose[:3])}): icc incremental reads "
                       f"only sub-directories; move them into a partition (e.g. {path / 'date=2026-01-01'}/)")
    partitions = {p.name: p for p in entries}
    if not partitions:
        raise ICCError(f"no partitions (sub-directories such as date=2026-01-01/) in data.path: {path}")
    return partitions


@dataclass
class Assignment:
    """What assigning some partitions gave: per embedded row its cluster and distance to the
    centroid (n,), cluster sizes (k,) and label x cluster counts (for ACC/ARI when labelled)."""

    clusters: np.ndarray
    distances: np.ndarray
    sizes: np.ndarray
    contingency: dict


def assign_partitions(state: State, names: list[str], centroids: np.ndarray, run: str) -> Assignment:
    """Assign every row of the partitions `names` to its nearest centroid, as `run`'s assignments of
    each (assignments-<run>.parquet, written beside those state.json names, which stay until `commit`)."""
    nearest = Clusterer()
    nearest.cluster_centers_ = centroids
    fitted = Fitted(nearest, fraction=1.0, sample_labels=None, distributed=False)
    clusters, distances, contingency = [], [], {}
    sizes = np.zeros(len(centroids), np.int64)
    for name in names:
        shards = Shards.load(state.partition_dir(name))
        assigned = assign_shards(fitted, shards, top=0)  # to assignments.parquet, then renamed whole
        sizes += assigned.sizes
        for pair, count in assigned.contingency.items():
            contingency[pair] = contingency.get(pair, 0) + count
        target = _assignments_name(run)
        renew(shards.dir, target)  # a cut-off run's leftover of the same name, which state.json never named
        os.replace(shards.dir / ASSIGNMENTS, shards.dir / target)
        state.assigned(name, run)
        table = read_output(state.assignments(name), ["cluster", "distance"])
        cluster = table["cluster"].to_numpy()
        clusters.append(cluster[cluster >= 0])
        distances.append(table["distance"].to_numpy(zero_copy_only=False)[cluster >= 0])
    return Assignment(np.concatenate(clusters), np.concatenate(distances), sizes, contingency)


def drift(assignment: Assignment, fit: dict) -> dict:
    """far_share and size_tvd of newly assigned rows against the fit (see the module docstring)."""
    n = len(assignment.clusters)
    shares = assignment.sizes / max(n, 1)
    return {
        "rows": n,
        "far_share": float((assignment.distances > fit["reference_distance"]).mean()) if n else 0.0,
        "size_tvd": float(0.5 * np.abs(shares - np.asarray(fit["shares"])).sum()) if n else 0.0,
    }


def scores(assignment: Assignment) -> dict:
    """ACC, ARI and NMI of the assigned rows against their labels ({} when unlabelled)."""
    if not assignment.contingency:
        return {}
    found = external_metrics(*expand_contingency(assignment.contingency))
    return {name: found[name] for name in ("acc", "ari", "nmi")}


def run_incremental(state: State, data_path, columns: dict, embedder: dict, pool: dict, clusterer: Clusterer,
                    shard_rows: int, refit: bool = False, drift_threshold: float = 0.25,
                    far_quantile: float = 0.95) -> tuple[Path, dict]:
    """One scheduled run on `state`, held by `open_state` (see the module docstring); Ray must be
    started. columns, embedder, pool: as for `icc.corpus.embed_stage.embed_corpus`; clusterer:
    unfitted, used when (re)fitting. Returns the run's directory and its metrics (also in its metrics.json)."""
    if not 0 < far_quantile < 1:
        raise ICCError(f"schedule.far_quantile must be in (0, 1), got {far_quantile!r}")
    partitions = find_partitions(data_path)
    timer = StageTimer()
    run_id = f"{len(state.runs) + 1:05d}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    run_dir = state.dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprints = {name: _fingerprint(path) for name, path in partitions.items()}
    known = {name: record["fingerprint"] for name, record in (*state.partitions.items(), *state.rejected.items())}
    new = [name for name in partitions if known.get(name) != fingerprints[name]]
    metrics = {
        "run": run_id,
        "new_partitions": new,
        "skipped_partitions": [name for name in partitions if name not in new],
        "stored_partitions_not_in_data_path": sorted(set(state.partitions) - set(partitions)),
        "rows_embedded_this_run": 0,
        "rejected_partitions": {},
    }
    with timer("embed"):
        for name in new:
            try:
                shards, embedded_now = embed_corpus(str(partitions[name]), columns, embedder, pool,
                                                    state.partition_dir(name), shard_rows, fingerprints[name])
            except ICCError as e:  # this partition cannot be read: the others go on
                state.reject(name, fingerprints[name], str(e), run_id)
                metrics["rejected_partitions"][name] = str(e)
                continue
            state.accept(name, fingerprints[name], shards, run_id)
            metrics["rows_embedded_this_run"] += embedded_now
    new = [name for name in new if name in state.partitions]
    metrics["new_partitions"] = new
    metrics["new_rows"] = sum(state.partitions[name]["rows"] for name in new)

    action, reason = ("fit", "no fit yet") if state.fit is None else ("refit", "schedule.refit=true") if refit else (None, "")
    if action is None and new:
        with timer("assign"):
            assignment = assign_partitions(state, new, state.centroids(), run_id)
        metrics["drift"] = drift(assignment, state.fit)
        metrics.update(scores(assignment))
        passed = [f"{stat} {metrics['drift'][stat]:.3f} > {drift_threshold}" for stat in ("far_share", "size_tvd")
                  if metrics["drift"][stat] > drift_threshold]
        action, reason = ("refit", "drift: " + ", ".join(passed)) if passed else ("assign", "")
    centroids = None
    if action in ("fit", "refit"):
        names = sorted(set(state.partitions) & set(partitions))  # one gone from data.path leaves the state
        state.partitions = {name: state.partitions[name] for name in names}
        if not names:
            raise ICCError(f"no partition of {data_path} could be read: {metrics['rejected_partitions']}")
        with timer("fit"):
            fitted = fit_shards(clusterer, combine_shards([Shards.load(state.partition_dir(n)) for n in names]))
            centroids = fitted.clusterer.cluster_centers_
        with timer("assign_all"):
            assignment = assign_partitions(state, names, centroids, run_id)
        state.fit = {"run": run_id, "k": len(centroids), "rows": len(assignment.clusters),
                     "fit_rows": int(fitted.clusterer.fit_rows_), "partitions": names, "far_quantile": far_quantile,
                     "reference_distance": float(np.quantile(assignment.distances, far_quantile)),
                     "shares": (assignment.sizes / max(len(assignment.clusters), 1)).tolist()}
        if action == "fit":
            metrics.update(scores(assignment))
        else:
            metrics["all_rows_after_refit"] = scores(assignment)
    metrics.update({"action": action or "none", "refit_reason": reason, "fit": state.fit, "seconds": timer.seconds})
    write_json(run_dir / METRICS, metrics)
    state.runs.append({"run": run_id, "action": metrics["action"], "new_partitions": new})
    state.commit(centroids)
    return run_dir, metrics


def _fingerprint(partition: Path) -> str:
    """The partition's `file_fingerprint`, or, for one with no corpus file to read, of its listing
    (so that it is recorded as rejected once, and read again when its files change)."""
    try:
        return file_fingerprint(str(partition))
    except ICCError:
        return "unreadable:" + ",".join(sorted(p.name for p in partition.rglob("*")))


def read_assignments(state_dir) -> pa.Table:
    """The assignments of every stored partition that state.json names, with a `partition` column,
    in partition order."""
    state = State.load(state_dir)
    tables = []
    for name in sorted(state.partitions):
        table = read_output(state.assignments(name))
        tables.append(table.append_column("partition", pa.array([name] * table.num_rows, pa.string())))
    if not tables:
        raise ICCError(f"no partitions assigned in {state_dir}")
    return pa.concat_tables(tables)


def print_summary(run_dir: Path, metrics: dict) -> None:
    """One line: the new and skipped partitions, what the run did and why, the drift it measured."""
    drift = metrics.get("drift", {})
    print(f"\nicc incremental: new {metrics['new_partitions'] or 'none'}, skipped "
          f"{len(metrics['skipped_partitions'])}, {metrics['action']} {metrics['refit_reason']}".rstrip()
          + "".join(f", {name}={drift[name]:.3f}" for name in ("far_share", "size_tvd") if name in drift)
          + f" -> {run_dir}")
