"""Starting, validating and stopping a run (issue 17): a bad setting stops it in seconds before any
work, a Ray cluster that is gone never makes it hang, SIGINT / SIGTERM stop it at once with exit
code 130 / 143, leaving what the next run resumes."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from conftest import BIN, ROOT, TEXT, free_port, run_icc, stop_ray_under

from icc.corpus.rundir import EMBED_MANIFEST
from icc.errors import RayDied
from icc.pipeline import StageTimer

CSTR = TEXT / "cstr.csv"  # 299 texts
SMALL_RUN = ["ray.progress_bars=false", "data=file", "labeler=none", "report.enabled=false"]


@pytest.mark.parametrize("override, message", [
    ("clusterer.k=-3", "k must be between 2 and the number of texts, got -3"),
    ("clusterer.k=many", "k must be an integer or 'auto', got 'many'"),
    ("embedder.pool.batch_size=abc", "batch_size must be a positive integer or null, got 'abc'"),
    ("clusterer.kk=5", "unknown key clusterer.kk (did you mean clusterer.k, "),
    ("embedder.dtype=bfloat16", "embedder.dtype is now embedder.precision (choose from auto, "),
])
def test_a_bad_setting_stops_the_run_before_any_work(ray_address, tmp_path, override, message):
    out = tmp_path / "run"
    start = time.monotonic()
    result = run_icc("cluster", f"ray.address={ray_address}", *SMALL_RUN, f"data.path={CSTR}", override,
                     f"output.dir={out}", timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(f"icc: error: {message}")
    assert not (out / "embeddings.parquet").exists()
    assert time.monotonic() - start < 60


@pytest.fixture
def stale_ray_tmpdir():
    """A RAY_TMPDIR whose ray/ray_current_cluster records a cluster that is gone (a port no one
    listens on), as `ray start` leaves it once that cluster died. Short (Ray's socket paths must fit)."""
    temp = tempfile.mkdtemp(prefix="icc-ray-", dir="/tmp")
    os.makedirs(os.path.join(temp, "ray"))
    dead = f"127.0.0.1:{free_port()}"
    with open(os.path.join(temp, "ray", "ray_current_cluster"), "w") as f:
        f.write(dead)
    env = {**os.environ, "RAY_TMPDIR": temp}
    env.pop("RAY_ADDRESS", None)
    yield env, dead
    stop_ray_under(temp)
    shutil.rmtree(temp, ignore_errors=True)


def test_a_local_ray_ignores_a_recorded_cluster_that_is_gone(stale_ray_tmpdir):
    env, dead = stale_ray_tmpdir
    script = "import ray; from icc.ray_runtime import start_ray; start_ray(''); print(ray.get_runtime_context().gcs_address)"
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() and result.stdout.strip() != dead  # a new local instance, not the recorded one


@pytest.mark.parametrize("via", ["ray.address", "RAY_ADDRESS"])
def test_joining_a_cluster_that_is_gone_fails_at_once(stale_ray_tmpdir, tmp_path, via):
    """ray.address=<dead>, or auto with RAY_ADDRESS=<dead> (what a job's driver is given). (auto with
    only the stale record is not tested: Ray's auto prefers a cluster running on the machine, if
    there is exactly one, to the recorded one, so the outcome depends on other users' clusters.)"""
    env, dead = stale_ray_tmpdir
    address = dead
    if via == "RAY_ADDRESS":
        env["RAY_ADDRESS"], address = dead, "auto"
    start = time.monotonic()
    result = subprocess.run([BIN / "icc", "cluster", f"ray.address={address}", *SMALL_RUN, f"data.path={CSTR}",
                             "clusterer.k=4", f"output.dir={tmp_path / 'run'}"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(f"icc: error: cannot reach the Ray cluster at {dead}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 60


def embedding_run(ray_address: str, out) -> list:
    """An `icc cluster` command line that joins `ray_address` and embeds 3,080 texts in shards of 256 rows."""
    return [BIN / "icc", "cluster", f"ray.address={ray_address}", *SMALL_RUN, f"data.path={TEXT / 'banking77_test.csv'}",
            "clusterer.k=10", "output.shard_rows=256", "embedder.pool.rows_per_batch=64", f"output.dir={out}"]


def kill_run(run: subprocess.Popen) -> None:
    """SIGKILL `icc` if it still runs, and the pipeline's process it runs, with the Ray that one started."""
    if run.poll() is None:
        for process in [*psutil.Process(run.pid).children(recursive=True), psutil.Process(run.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        run.wait()


@contextlib.contextmanager
def mid_embedding(command: list, out):
    """The process running `command` once its first shard is written whole; killed afterwards if still running."""
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / EMBED_MANIFEST).exists():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:] if run.poll() else "no shard"
            time.sleep(0.5)
        yield run
    finally:
        kill_run(run)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_at_once_and_the_next_run_resumes(ray_address, tmp_path, signum, code):
    out = tmp_path / "run"
    command = embedding_run(ray_address, out)
    with mid_embedding(command, out) as run:
        run.send_signal(signum)
        stopped = time.monotonic()
        _, stderr = run.communicate(timeout=30)
        assert time.monotonic() - stopped < 20
        assert run.returncode == code, stderr[-3000:]
        assert f"icc: stopped by {signal.Signals(signum).name}" in stderr
    if signum == signal.SIGTERM:  # the next run embeds only what the stopped one left
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["rows"] == 3080 and 0 < metrics["rows_embedded_this_run"] < 3080


def test_a_killed_icc_takes_its_pipeline_with_it(ray_address, tmp_path):
    """`icc` runs the pipeline as its child: SIGKILL of `icc` (a scheduler's, the OOM killer's) kills
    the child too, so no run goes on unseen, holding output.dir's lock. Before, the child ran on."""
    out = tmp_path / "run"
    with mid_embedding(embedding_run(ray_address, out), out) as run:
        [pipeline] = psutil.Process(run.pid).children()
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        pipeline.wait(timeout=30)  # psutil.TimeoutExpired if it lives on
    assert not pipeline.is_running()


def test_a_raylet_that_dies_mid_run_ends_with_one_line_naming_the_stage(tmp_path):
    """The run starts its own local Ray (ray.address=""), whose raylet is a process of this run's
    tree. Killed mid-embedding, either the driver's core worker exits from C++ (`icc` says so from
    the stage file) or Ray raises in the driver (an actor unavailable, the raylet died: the stage
    says so); it depends on what the driver was doing. (Ray's log lines go to a file: a pipe no one
    reads while the run starts its own Ray could fill and stall it.)"""
    out, log = tmp_path / "run", tempfile.TemporaryFile("w+")
    run = subprocess.Popen(embedding_run("", out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / EMBED_MANIFEST).exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert run.poll() is None, log.seek(0) or log.read()[-3000:]
        raylets = [p for p in psutil.Process(run.pid).children(recursive=True) if p.name() == "raylet"]
        assert len(raylets) == 1
        raylets[0].kill()
        run.wait(timeout=300)
    finally:
        kill_run(run)
    log.seek(0)
    stderr = log.read()
    errors = [line for line in stderr.splitlines() if line.startswith("icc: error:")]
    assert run.returncode == 1, stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("icc: error: Ray died during stage embed ("), stderr[-3000:]


def test_a_ray_death_raised_in_a_stage_names_the_stage():
    """When the driver is waiting on Ray as its raylet dies, Ray raises instead of exiting: the stage
    turns it into one line for `user_errors` (exit code 1)."""
    from ray.exceptions import LocalRayletDiedError

    timer = StageTimer()
    with pytest.raises(RayDied, match=r"^Ray died during stage cluster \(LocalRayletDiedError: The task's local"):
        with timer("cluster"):
            raise LocalRayletDiedError()
    assert "cluster" in timer.seconds
