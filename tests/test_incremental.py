"""Scheduled incremental runs (`icc incremental`, `icc.corpus.incremental`): the first run fits, later ones assign only the
new partitions, re-runs are idempotent, and drift or schedule.refit=true refits on every partition."""

import json
import os
import shutil

import numpy as np
import pyarrow.csv
import pytest
from conftest import TEXT, run_icc

from icc.cluster import make_clusterer
from icc.corpus.incremental import State, read_assignments, run_incremental
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
    return run_incremental(data, state, COLUMNS, EMBEDDER, POOL, clusterer, shard_rows=32, **options)[1]


def snapshot(state):
    table = read_assignments(state)
    return table.select(["partition", "id", "cluster", "distance"]).to_pylist(), State(state).centroids()


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


def test_files_beside_the_partitions_are_refused(tmp_path):
    """Before: a file at the top of data.path was silently ignored."""
    (tmp_path / "date=2026-01-01").mkdir()
    (tmp_path / "flat.csv").write_text("text\nhello\n")
    with pytest.raises(ICCError, match=r"data.path holds files beside its partitions \(flat.csv\)"):
        run_incremental(tmp_path, tmp_path / "state", COLUMNS, EMBEDDER, POOL, make_clusterer("kmeans", k=2), 32)
    (tmp_path / "flat.csv").unlink()
    with pytest.raises(ICCError, match="no partitions"):
        run_incremental(tmp_path / "date=2026-01-01", tmp_path / "state", COLUMNS, EMBEDDER, POOL,
                        make_clusterer("kmeans", k=2), 32)


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
