"""The progress lines of a pipeline's stages and the stderr that `icc` passes on (in-process, no Ray)."""

import io
import os
import threading

from icc.cli import forward_stderr
from icc.progress import StageProgress, describe


def test_a_piped_stage_is_one_line_with_rows_per_second_and_time_left():
    stream = io.StringIO()  # not a terminal
    progress = StageProgress("embed", total=300, stream=stream)
    for _ in range(3):
        progress.update(100)
    progress.close()
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().startswith("icc: embed 300 rows in ") and " rows/s" in stream.getvalue()
    assert describe(100, 2.0, total=300) == "100 rows in 2.0 s, 50.0 rows/s, 4 s left of 300 rows"
    assert describe(0, 0.84) == "0.8 s"
    quiet = io.StringIO()
    StageProgress("cluster", enabled=False, stream=quiet).close()
    assert quiet.getvalue() == ""


def test_icc_passes_the_pipelines_stderr_on_but_rays_known_false_alarm():
    read, write = os.pipe()
    target = io.BytesIO()
    forwarding = threading.Thread(target=forward_stderr, args=(read, target))
    forwarding.start()
    noise = (b"[2026-12-01 14:42:26,661 E 19884 19884] core_worker.cc:2465: Actor with class name: "
             b"'MapWorker(MapBatches(TextEmbedder))' and ID: 'f8b5' has constructor arguments in the object store "
             b"and max_restarts > 0. If the arguments in the object store go out of scope ...\n")
    kept = [b"icc: embed 299 rows in 12.0 s, 24.9 rows/s\n", b"[2026-12-01 14:43:00,000 E 1 1] raylet died\n",
            b"\rembed:  50%|", b"\rembed: 100%|\n"]
    for chunk in [kept[0], noise[:40], noise[40:], *kept[1:]]:  # a line may come in pieces
        os.write(write, chunk)
    os.close(write)
    forwarding.join(timeout=10)
    os.close(read)
    assert target.getvalue() == b"".join(kept)


def test_a_closed_stderr_does_not_stop_the_forwarding():
    """`icc cluster 2>&1 | head`: once nobody reads icc's stderr, the pipeline's bytes are still read
    (and dropped), so the pipeline never blocks on a full pipe."""
    source_read, source_write = os.pipe()
    target_read, target_write = os.pipe()
    os.close(target_read)  # the reader is gone: writing raises BrokenPipeError
    os.write(source_write, b"first line\n" * 100)
    os.close(source_write)
    with os.fdopen(target_write, "wb", buffering=0) as target:
        forward_stderr(source_read, target)  # returns, having read everything
    assert os.read(source_read, 1) == b""
    os.close(source_read)
