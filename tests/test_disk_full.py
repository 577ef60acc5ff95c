"""Disk full: `icc cluster` writing to a small tmpfs that fills up midway through embedding ends with
one line naming what it could not write (exit 2), leaves no torn JSON, and once space is freed the
same command resumes after the shards that were whole and ends as a run with room would.

Mounting needs root: the test is skipped, with the reason, where it cannot mount."""

import json
import os
import subprocess

import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from conftest import TEXT, run_icc

from icc.corpus.shards import Shards
from icc.errors import ICCError
from icc.files import disk_full_as_error, read_json, write_atomic, write_json

ROWS = 300  # about 0.5 MiB of shards (384 floats a row), 0.2 MiB more for the rest of the run
FREE_KIB = 256  # room left on the tmpfs for the first run: it fills up while embedding


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted at tmp_path/disk, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk) -> None:
    """Write a ballast file on `disk` until no byte more fits."""
    fd = os.open(disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(1024):  # 1024 x 64 KiB: well past the 2 MiB
            os.write(fd, b"\0" * (64 << 10))
    except OSError:
        return
    finally:
        os.close(fd)
    raise AssertionError("the disk did not fill up")


def test_a_write_that_finds_the_disk_full_keeps_the_old_file_and_leaves_no_part(small_disk):
    """Before: the temporary file of the failed write stayed beside the old one."""
    path = small_disk / "state.json"
    write_json(path, {"step": 1})
    fill(small_disk)
    with pytest.raises(ICCError, match=rf"no space left on the device to write {small_disk} .*No space left"):
        with disk_full_as_error(small_disk):
            write_atomic(path, b"x" * (1 << 20))
    assert read_json(path) == {"step": 1}
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast", "state.json"]


def test_a_full_disk_is_one_line_and_the_run_resumes_once_space_is_freed(ray_address, small_disk, tmp_path):
    corpus = tmp_path / "news.csv"
    pyarrow.csv.write_csv(pyarrow.csv.read_csv(TEXT / "agnews_test.csv").slice(0, ROWS), corpus)
    ballast = small_disk / "ballast"  # beside output.dir: what else fills the disk
    ballast.write_bytes(b"\0" * ((2048 - FREE_KIB) << 10))
    out = small_disk / "run"
    args = ["cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file", f"data.path={corpus}",
            "data.label_column=label", "clusterer.k=4", "labeler=none", "report.enabled=false",
            "embedder.max_length=32", "embedder.pool.rows_per_batch=16", "output.shard_rows=32", f"output.dir={out}"]

    full = run_icc(*args)
    errors = [line for line in full.stderr.splitlines() if line.startswith("icc: error:")]
    assert full.returncode == 2, full.stderr[-3000:]
    assert len(errors) == 1 and "no space left on the device to write" in errors[0] and str(out) in errors[0], errors
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    for name in ("embed.json", "_icc_manifest.json"):  # written atomically: whole, or not there
        if (out / name).exists():
            json.loads((out / name).read_text())
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    cut = Shards.load(out, partial=True)
    assert cut is not None and not cut.complete and 0 < cut.n_rows < ROWS

    ballast.unlink()
    resumed = run_icc(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == ROWS and metrics["rows_embedded_this_run"] <= ROWS - cut.n_rows
    assignments = pq.read_table(out / "assignments.parquet")
    assert assignments["id"].to_pylist() == list(range(ROWS)) and (out / "_SUCCESS").exists()
