"""The run directory of `icc cluster` (`icc.corpus.rundir`): icc deletes only what it wrote, refuses
an output.dir that holds the input, files of others, a run with other settings or another run in
progress (one line, exit 2, before any work), marks a complete run with `_SUCCESS`, and rebuilds a
torn embed.json from the shards."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, TEXT, run_icc

from icc.corpus.rundir import LOCK_HOLDER, MANIFEST, SUCCESS, load_run
from icc.corpus.shards import resume_shards
from icc.errors import ICCError

ROWS = 60


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    """The first ROWS rows of AG News as a CSV file, and the first 1200 (a run still embedding after seconds)."""
    base = tmp_path_factory.mktemp("news")
    table = pyarrow.csv.read_csv(TEXT / "agnews_test.csv")
    pyarrow.csv.write_csv(table.slice(0, ROWS), base / "news.csv")
    pyarrow.csv.write_csv(table.slice(0, 1200), base / "long.csv")
    return base


def command(ray_address, corpus, out, *overrides) -> list[str]:
    return ["cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file", f"data.path={corpus}",
            "clusterer.k=4", "labeler=none", "report.enabled=false", "embedder.max_length=32", f"output.dir={out}",
            *overrides]


@pytest.fixture(scope="module")
def finished(ray_address, news, tmp_path_factory):
    """The output.dir of a finished run on news.csv."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run_icc(*command(ray_address, news / "news.csv", out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def assert_refused(result, *phrases) -> str:
    """The run ended with one `icc: error:` line holding `phrases`, exit 2, no traceback; returns the line."""
    line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode == 2 and line.startswith("icc: error: ") and "Traceback" not in result.stderr, \
        result.stderr[-3000:]
    assert all(phrase in line for phrase in phrases), line
    return line


def contents(directory) -> dict:
    """{relative path: bytes} of every file under `directory`."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_input_inside_output_dir_is_refused_and_kept(ray_address, news, tmp_path):
    pq.write_table(pyarrow.csv.read_csv(news / "news.csv"), tmp_path / "texts.parquet")
    before = (tmp_path / "texts.parquet").read_bytes()
    result = run_icc(*command(ray_address, tmp_path / "texts.parquet", tmp_path))
    assert_refused(result, "inside output.dir", "its own input")
    assert (tmp_path / "texts.parquet").read_bytes() == before
    assert not (tmp_path / "embeddings.parquet").exists()


def test_files_icc_did_not_write_are_refused_and_kept(ray_address, news, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "assignments.parquet").write_bytes(b"someone else's")
    result = run_icc(*command(ray_address, news / "news.csv", out))
    assert_refused(result, "icc did not write", "assignments.parquet")
    assert (out / "assignments.parquet").read_bytes() == b"someone else's"
    assert not (out / "texts.parquet").exists()


def test_rerun_with_other_settings_is_refused_until_overwrite(ray_address, news, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    assert (run / SUCCESS).exists() and load_run(run).vectors.shape == (ROWS, 384)
    kept = contents(run / "embeddings.parquet")

    typo = run_icc(*command(ray_address, news / "news.csv", run, "data.text_column=bdy"))
    assert_refused(typo, "other settings", "data.text_column 'text' -> 'bdy'", "output.overwrite=true")
    assert contents(run / "embeddings.parquet") == kept and (run / SUCCESS).exists()

    replaced = run_icc(*command(ray_address, news / "news.csv", run, "embedder.max_length=16", "output.overwrite=true"))
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["rows_embedded_this_run"] == ROWS
    assert json.loads((run / "run.json").read_text())["embedder"]["max_length"] == 16
    assert contents(run / "embeddings.parquet") != kept and (run / SUCCESS).exists()


def test_a_run_without_success_is_not_read_as_complete(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    (run / SUCCESS).unlink()
    with pytest.raises(ICCError, match="not a complete icc cluster run: missing _SUCCESS"):
        load_run(run)


def test_torn_embed_json_is_rebuilt_from_the_shards(ray_address, news, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    manifest = (run / "embed.json").read_text()
    (run / "embed.json").write_text(manifest[: len(manifest) // 2])
    result = run_icc(*command(ray_address, news / "news.csv", run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["rows_embedded_this_run"] == 0
    rebuilt, original = json.loads((run / "embed.json").read_text()), json.loads(manifest)
    assert rebuilt == original and (run / SUCCESS).exists()


def test_torn_embed_json_no_manifest_vouches_for_is_one_line(finished, tmp_path):
    """Where the directory's manifest records no settings (an incremental partition), nothing says
    what made the shards: one line with a way out, and nothing deleted."""
    run = copy_of(finished, tmp_path)
    (run / "embed.json").write_text("{\"rows\": [6")
    (run / MANIFEST).write_text(json.dumps({"entries": json.loads((run / MANIFEST).read_text())["entries"]}))
    with pytest.raises(ICCError, match=r"embed.json is corrupt .*output.overwrite=true or remove"):
        resume_shards(run, "any key")
    assert load_run(run).vectors.shape == (ROWS, 384)


def test_library_never_deletes_what_icc_did_not_write(tmp_path):
    (tmp_path / "texts.parquet").write_bytes(b"the input")
    with pytest.raises(ICCError, match="texts.parquet, which icc did not write"):
        resume_shards(tmp_path, "a key")
    assert (tmp_path / "texts.parquet").read_bytes() == b"the input"


def test_second_run_on_an_output_dir_refuses_at_once_and_a_killed_runs_lock_is_taken_over(
        ray_address, news, finished, tmp_path):
    run = copy_of(finished, tmp_path)
    assert (run / SUCCESS).exists()
    args = command(ray_address, news / "long.csv", run, "output.overwrite=true", "embedder.pool.rows_per_batch=16")
    # the pipeline's own process (what `icc` runs as its child): the lock's holder, and what is killed
    first = subprocess.Popen([sys.executable, "-m", "pipelines.cluster", *args[1:]], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and not holds_lock(run, first.pid):
            time.sleep(0.05)
        assert holds_lock(run, first.pid), "the first run did not take the lock"
        assert not (run / SUCCESS).exists()  # removed first: the directory holds no complete run now

        start = time.monotonic()
        second = run_icc(*args)
        assert_refused(second, "in use by another icc run", f"pid {first.pid} on {socket.gethostname()}")
        assert time.monotonic() - start < 60
        assert first.poll() is None, "the first run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.wait()
    assert not (run / SUCCESS).exists()
    # The OS released the killed run's lock: the next run takes it and gets as far as its settings.
    third = run_icc(*command(ray_address, news / "long.csv", run, "data.text_column=bdy"))
    assert_refused(third, "other settings", "data.text_column")


def holds_lock(run, pid: int) -> bool:
    try:
        return json.loads((run / LOCK_HOLDER).read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False
