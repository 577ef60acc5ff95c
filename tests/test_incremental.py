"""Scheduled incremental runs (`icc incremental`, `icc.corpus.incremental`): the first run fits, later ones assign only the
new partitions, re-runs are idempotent, and drift or schedule.refit=true refits on every partition; and the state
directory under faults: a run SIGKILLed during a refit, a second run on a state in use, a torn state.json."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow.csv
import pytest
from conftest import ROOT, TEXT, run_icc

from icc.cluster import make_clusterer
from icc.corpus.incremental import State, open_state, read_assignments, run_incremental
from icc.corpus.shares import check_shares_report, cluster_shares, write_shares_report
from icc.errors import ICCError

FIRST, ROWS = 160, 40  # rows of the first partition, of the later ones
COLUMNS = {"text_column": "text", "id_column": None, "label_column": "label"}
DRIFT = 0.4  # 40-row partitions of the same news drift by up to about 0.2 by chance
EMBEDDER = {"model": "all-MiniLM-L6-v2", "max_length": 32}
POOL = {"rows_per_batch": 64}


def write_partition(root, name, table):
    (root / name).mkdir(parents=True, exist_ok=True)
    pyarrow.csv.write_csv(table, root / name / "part.csv")


def schedule(data, state, **options):
    clusterer = make_clusterer("kmeans", k=4, seed=0)
    options.setdefault("drift_threshold", DRIFT)
    with open_state(state) as held:
        return run_incremental(held, data, COLUMNS, EMBEDDER, POOL, clusterer, shard_rows=32, **options)[1]


def snapshot(state):
    table = read_assignments(state)
    return table.select(["partition", "id", "cluster", "distance"]).to_pylist(), State.load(state).centroids()


def test_incremental_runs(ray_session, tmp_path):
    news = pyarrow.csv.read_csv(TEXT / "agnews_test.csv")
    data, state = tmp_path / "corpus", tmp_path / "state"
    write_partition(data, "date=2026-01-01", news.slice(0, FIRST))

    # The first run through the command line, the others in this process (the same code after the config).
    args = ["incremental", f"ray.address={ray_session}", "ray.progress_bars=false", f"data.path={data}",
            "data.label_column=label", "clusterer.k=4", "embedder.max_length=32", "embedder.pool.rows_per_batch=64",
            "output.shard_rows=32"]
    missing = run_icc(*args)
    assert missing.returncode == 2 and "schedule.state" in missing.stderr
    result = run_icc(*args, f"schedule.state={state}", f"output.dir={tmp_path / 'hydra'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "new ['date=2026-01-01']" in result.stdout
    (run_dir,) = (state / "runs").iterdir()
    first = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["pipeline"] == "incremental"
    assert first["action"] == "fit" and first["new_partitions"] == ["date=2026-01-01"]
    assert first["rows_embedded_this_run"] == FIRST and first["fit"]["rows"] == FIRST
    assert "cluster shares in state" in (state / "report.html").read_text()
    fitted = snapshot(state)

    again = schedule(data, state)  # nothing new: nothing embedded, nothing changes
    assert again["action"] == "none" and again["new_partitions"] == [] and again["rows_embedded_this_run"] == 0
    assert again["skipped_partitions"] == ["date=2026-01-01"]
    assert snapshot(state)[0] == fitted[0] and np.array_equal(snapshot(state)[1], fitted[1])

    write_partition(data, "date=2026-01-02", news.slice(FIRST, ROWS))
    second = schedule(data, state)
    assert second["action"] == "assign" and second["new_partitions"] == ["date=2026-01-02"]
    assert second["rows_embedded_this_run"] == ROWS and 0 <= second["drift"]["far_share"] <= DRIFT
    rows, centroids = snapshot(state)
    assert rows[:FIRST] == fitted[0] and np.array_equal(centroids, fitted[1])  # the old partition untouched
    assert len(rows) == FIRST + ROWS and len({(r["partition"], r["id"]) for r in rows}) == FIRST + ROWS
    assert os.path.exists(state / "runs" / second["run"] / "metrics.json")

    os.utime(data / "date=2026-01-02" / "part.csv")  # touched, same bytes: skipped
    assert schedule(data, state)["new_partitions"] == []
    write_partition(data, "date=2026-01-02", news.slice(FIRST + ROWS, ROWS))  # rewritten: new again, replaced
    rewritten = schedule(data, state)
    assert rewritten["new_partitions"] == ["date=2026-01-02"] and rewritten["rows_embedded_this_run"] == ROWS
    assert len(read_assignments(state)) == FIRST + ROWS

    refit = schedule(data, state, refit=True)
    assert refit["action"] == "refit" and refit["refit_reason"] == "schedule.refit=true"
    assert refit["rows_embedded_this_run"] == 0 and refit["fit"]["rows"] == FIRST + ROWS

    # Banking queries among news clusters: farther from the centroids and piled into one or two clusters
    # (measured: far_share 0.4 against 0.125 for news, size_tvd 0.67), a drift that refits.
    write_partition(data, "date=2026-01-03", pyarrow.csv.read_csv(TEXT / "banking77_test.csv").slice(0, ROWS))
    drifted = schedule(data, state)
    assert drifted["drift"]["far_share"] > 0.25 and drifted["drift"]["size_tvd"] > DRIFT
    assert drifted["action"] == "refit" and drifted["refit_reason"].startswith("drift:")
    assert drifted["fit"]["partitions"] == [f"date=2026-01-0{d}" for d in (1, 2, 3)]
    assert len(State.load(state).runs) == 7

    # The shares over time: one row per partition summing to 1; the banking partition piles into few clusters.
    shares = cluster_shares(state)
    assert list(shares.index) == [f"date=2026-01-0{d}" for d in (1, 2, 3)] and shares.shape[1] == 4
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert shares.loc["date=2026-01-03"].max() > shares.loc["date=2026-01-01"].max()
    page = write_shares_report(state).read_text()
    assert "<h2>Shares by partition</h2>" in page and "<h2>Runs</h2>" in page and "<td>date=2026-01-03</td>" in page


def test_a_report_icc_did_not_write_is_refused_before_any_work(tmp_path):
    (tmp_path / "report.html").write_text("mine")
    with pytest.raises(ICCError, match="holds report.html, which icc did not write"):
        check_shares_report(tmp_path)
    assert (tmp_path / "report.html").read_text() == "mine"


def test_files_beside_the_partitions_are_refused(tmp_path):
    """Before: a file at the top of data.path was silently ignored."""
    (tmp_path / "date=2026-01-01").mkdir()
    (tmp_path / "flat.csv").write_text("text\nhello\n")
    with pytest.raises(ICCError, match=r"data.path holds files beside its partitions \(flat.csv\)"):
        schedule(tmp_path, tmp_path / "state")
    (tmp_path / "flat.csv").unlink()
    with pytest.raises(ICCError, match="no partitions"):
        schedule(tmp_path / "date=2026-01-01", tmp_path / "state")


def test_an_unreadable_partition_is_recorded_and_blocks_no_run(ray_session, tmp_path):
    """Before: an empty new partition stopped every later run; a partition removed from data.path
    stayed in the fit forever."""
    news = pyarrow.csv.read_csv(TEXT / "agnews_test.csv")
    data, state = tmp_path / "corpus", tmp_path / "state"
    write_partition(data, "date=2026-01-01", news.slice(0, ROWS))
    write_partition(data, "date=2026-01-02", news.slice(ROWS, ROWS))
    (data / "date=2026-01-03").mkdir()
    (data / "date=2026-01-03" / "part.csv").write_text("")  # an empty file: nothing to read
    first = schedule(data, state)
    assert first["action"] == "fit" and first["new_partitions"] == ["date=2026-01-01", "date=2026-01-02"]
    assert list(first["rejected_partitions"]) == ["date=2026-01-03"]
    assert State.load(state).rejected["date=2026-01-03"]["reason"]
    again = schedule(data, state)  # recorded: not tried again until its files change
    assert again["rejected_partitions"] == {} and "date=2026-01-03" in again["skipped_partitions"]

    shutil.rmtree(data / "date=2026-01-02")
    refit = schedule(data, state, refit=True)
    assert refit["stored_partitions_not_in_data_path"] == ["date=2026-01-02"]
    assert refit["fit"]["partitions"] == ["date=2026-01-01"] and refit["fit"]["rows"] == ROWS
    assert sorted(State.load(state).partitions) == ["date=2026-01-01"]


# The state directory under faults (issue 17), through the command line: real runs, killed by signals.
PARTITION_ROWS = (120, 40, 40, 40)
SHARD_ROWS = 8  # many small shards: a refit's assign stage lasts long enough to be killed midway


def command(ray_address, data, state, *overrides) -> list[str]:
    return ["incremental", f"ray.address={ray_address}", "ray.progress_bars=false", f"data.path={data}",
            "data.label_column=label", "clusterer.k=4", "embedder.max_length=32", "embedder.pool.rows_per_batch=64",
            f"output.shard_rows={SHARD_ROWS}", f"schedule.state={state}", f"output.dir={state.parent / 'hydra'}",
            *overrides]


@pytest.fixture(scope="module")
def fitted(ray_address, tmp_path_factory):
    """(corpus, state): 4 partitions of AG News and the state of one run that fitted k=4 on them."""
    news = pyarrow.csv.read_csv(TEXT / "agnews_test.csv")
    base = tmp_path_factory.mktemp("incremental")
    data, state = base / "corpus", base / "state"
    for day, (start, rows) in enumerate(zip(np.cumsum((0, *PARTITION_ROWS[:-1])), PARTITION_ROWS), 1):
        write_partition(data, f"date=2026-01-0{day}", news.slice(int(start), rows))
    result = run_icc(*command(ray_address, data, state))
    assert result.returncode == 0, result.stderr[-3000:]
    return data, state


def copy_of(state, tmp_path):
    return shutil.copytree(state, tmp_path / "state")


def assert_refused(result, *parts):
    """Exit 2 with one line on stderr holding every one of `parts`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("icc: error: "), result.stderr[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]


def start(args):
    """The pipeline's own process for `icc <args>` (what `icc` runs as its child): the lock's holder, and what is killed."""
    return subprocess.Popen([sys.executable, "-m", f"pipelines.{args[0]}", *args[1:]], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(job, ready, timeout=120):
    """Wait until `ready()` while `job` runs; assert that it did and that the job still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None and not ready():
        time.sleep(0.002)
    assert ready() and job.poll() is None, "the run ended before it got there"


def lock_holder(state) -> int | None:
    try:
        return json.loads((state / ".icc.lock.holder").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_run_killed_during_refit_leaves_the_state_before_and_its_rerun_ends_as_an_uninterrupted_one(
        ray_address, fitted, tmp_path):
    """Before: the refit rewrote each partition's assignments in place, so the kill left cluster ids
    of two fits mixed (and a partition's assignments cut short) under the old state.json, for good."""
    data, fitted_state = fitted
    state, clean = copy_of(fitted_state, tmp_path), shutil.copytree(fitted_state, tmp_path / "clean")
    before = snapshot(state)
    refit = command(ray_address, data, state, "schedule.refit=true", "clusterer.k=5")
    since = time.time_ns()

    def refit_assigning():  # a shard of the refit's assignments is written
        for shard in state.glob("partitions/*/assignments*/part-*.parquet"):
            try:
                if shard.stat().st_mtime_ns > since:
                    return True
            except OSError:  # renamed or removed meanwhile
                pass
        return False

    job = start(refit)
    try:
        wait_for(job, refit_assigning)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        job.kill()
        job.wait()
    rows, centroids = snapshot(state)
    assert rows == before[0] and np.array_equal(centroids, before[1])  # the state of the run before, whole
    assert any(len(list(p.glob("assignments*"))) > 1 for p in (state / "partitions").iterdir())  # cut off midway
    assert lock_holder(state) == job.pid  # the killed run's lock file stays, naming it

    rerun = run_icc(*refit)  # takes over the dead run's lock
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    uninterrupted = run_icc(*command(ray_address, data, clean, "schedule.refit=true", "clusterer.k=5"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    rows, centroids = snapshot(state)
    clean_rows, clean_centroids = snapshot(clean)
    assert rows == clean_rows and np.array_equal(centroids, clean_centroids) and len(centroids) == 5
    assert State.load(state).fit["rows"] == sum(PARTITION_ROWS)
    # What the killed run wrote and the fit before are deleted once the re-run's state.json names its own.
    assert [len(list(p.glob("assignments*"))) for p in (state / "partitions").iterdir()] == [1] * len(PARTITION_ROWS)
    assert len(list((state / "fits").glob("*.npy"))) == 1


def test_second_run_on_a_state_in_use_refuses_at_once_and_a_killed_runs_lock_is_taken_over(
        ray_address, fitted, tmp_path):
    """Before: two runs on one state wrote it at the same time."""
    data, fitted_state = fitted
    state = copy_of(fitted_state, tmp_path)
    args = command(ray_address, data, state, "schedule.refit=true")
    first = start(args)
    try:
        wait_for(first, lambda: lock_holder(state) == first.pid)
        first.send_signal(signal.SIGSTOP)  # holds the lock, as a long run does
        second = run_icc(*args)
        assert_refused(second, f"schedule.state {state} is in use by another icc run",
                       f"pid {first.pid} on {socket.gethostname()}")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.wait()
    assert len(State.load(state).runs) == 1  # neither run changed the state
    third = run_icc(*args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert State.load(state).runs[-1]["action"] == "refit"


def test_torn_state_json_is_one_line_with_the_way_out_and_rebuild_restores_the_fit(ray_address, fitted, tmp_path):
    """Before: a JSONDecodeError traceback, and no way on but deleting the state (and every embedding)."""
    data, fitted_state = fitted
    state = copy_of(fitted_state, tmp_path)
    before = snapshot(state)
    shutil.rmtree(State.load(state).assignments("date=2026-01-02"))
    with pytest.raises(ICCError, match="state.json names files that are gone .*schedule.rebuild=true"):
        read_assignments(state)
    text = (state / "state.json").read_text()
    (state / "state.json").write_text(text[: len(text) // 2])  # torn mid-write (by a copy, say)

    refused = run_icc(*command(ray_address, data, state))
    assert_refused(refused, f"{state / 'state.json'} is torn or corrupt", "schedule.rebuild=true")

    rebuilt = run_icc(*command(ray_address, data, state, "schedule.rebuild=true"))
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    (run,) = State.load(state).runs
    metrics = json.loads((state / "runs" / run["run"] / "metrics.json").read_text())
    assert metrics["action"] == "fit" and metrics["rows_embedded_this_run"] == 0  # every partition's shards verified
    rows, centroids = snapshot(state)
    assert rows == before[0] and np.array_equal(centroids, before[1])
