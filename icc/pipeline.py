"""What every pipeline shares around its stages: the Hydra entry point with one-line user errors,
stage timings, and the run record (`run.json`: the resolved config and the package versions).

Run by `icc` (icc.cli), a pipeline keeps the name of its running stage in the file that the
environment variable STAGE_FILE names, and removes that file when Python shuts down: a file left
behind tells `icc` that the process ended without Python's shutdown (Ray's core worker exits from
C++ when its raylet dies) and in which stage.
"""

import atexit
import contextlib
import importlib.metadata
import os
import sys
import time
from pathlib import Path

from icc.config import CONFIG_DIR
from icc.errors import ICCError, RayDied, user_errors
from icc.files import write_atomic, write_json
from icc.memory import peak_rss_mib
from icc.progress import StageProgress, describe

STAGE_FILE = "ICC_STAGE_FILE"  # environment variable: the file `icc` reads the running stage from
_stages: list[str] = []  # the running stages, innermost last
_stage_file: list[str] = []  # this process's stage file (set by `hydra_main`), if any

RUN_RECORD = "run.json"  # every pipeline's output directory has one, and most a METRICS
METRICS = "metrics.json"
PACKAGES = ["icc", "ray", "torch", "transformers", "peft", "deepspeed", "pyarrow", "scikit-learn", "faiss-cpu", "hydra-core"]


def hydra_main(config_name: str, run):
    """The `main()` of a pipeline: Hydra composes `icc/conf/<config_name>.yaml` with the command
    line's overrides and calls `run(cfg)`; an ICCError or an override Hydra cannot apply ends it
    with one line and exit code 2, SIGINT / SIGTERM with exit code 130 / 143 (`user_errors`)."""
    import hydra

    @hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")
    def app(cfg) -> None:
        with user_errors():  # here, or Hydra would add a line of its own
            run(cfg)

    def main() -> None:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises a bad override instead of printing it and exiting 1
        path = os.environ.pop(STAGE_FILE, None)  # popped: Ray processes started from here do not write it
        if path:
            _stage_file.append(path)
            atexit.register(Path(path).unlink, missing_ok=True)
        try:
            with user_errors():  # the overrides, applied before `app` runs
                app()
        except SystemExit as e:
            _exit_now(e.code)
        _exit_now(0)

    return main


def _exit_now(code) -> None:
    """Exit as Python's shutdown would (atexit handlers: `ray.shutdown`, the stage file; buffers
    flushed), without its last step: freeing every module's objects, which takes seconds once
    torch, transformers and scikit-learn are loaded (2.7 s of a 299-text `icc cluster`). After a run
    that finished, Ray is shut down first: Ray's own exit handler waits 0.5 s for threads still at
    work, which only a run that failed mid-stage has (a Ray Data executor that meets a shut-down
    worker ends the process with exit code 1)."""
    if code in (0, None) and "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


class StageTimer:
    """Wall-clock seconds per named stage: `with timer("embed") as progress: ...`; `timer.seconds`
    is a dict. `progress` is the stage's progress line on stderr (`icc.progress.StageProgress`,
    shown when the timer's `progress` is true): `progress.update(rows)` as the stage does rows.

    `timer.peak_rss_mib` {stage: MiB}: this process's peak resident memory at the end of each
    stage, so the first stage whose value is higher than the one before raised the peak.
    """

    def __init__(self, progress: bool = False):
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, int] = {}

    def started(self) -> None:
        """Record (and show) as stage "start-up" the seconds from this process's start to now: the
        imports, the config, the checks and the Ray start, before the first stage."""
        import psutil

        self.seconds["start-up"] = round(time.time() - psutil.Process().create_time(), 3)
        if self.progress:
            print(f"icc: start-up {describe(0, self.seconds['start-up'])}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def __call__(self, stage: str, rows: bool = False, total: int | None = None):
        """rows: whether the stage tells its progress of the rows it does; total: the rows it
        will do, if known (the progress line's time left)."""
        start = time.perf_counter()
        _stages.append(stage)
        _show_stage(after=None)
        progress = StageProgress(stage, total, enabled=self.progress, rows=rows)
        try:
            yield progress
            progress.close()
        except Exception as e:
            if _ray_died(e):
                raise RayDied(stage, e) from e
            raise
        finally:
            _stages.pop()
            _show_stage(after=stage)
            self.seconds[stage] = round(time.perf_counter() - start, 3)
            self.peak_rss_mib[stage] = int(peak_rss_mib())


def _ray_died(error: Exception) -> bool:
    """Whether `error` is Ray saying that a raylet, a node, a worker or an actor it could not
    restart is gone, or objects with them (a Python exception, raised when the driver was waiting on
    Ray as it died; when the driver's core worker exits from C++ instead, `icc` reports it), and
    not an ICCError raised in a task or actor (bad input: exit code 2)."""
    from ray.exceptions import (
        LocalRayletDiedError,
        NodeDiedError,
        ObjectLostError,
        RayActorError,
        RaySystemError,
        WorkerCrashedError,
    )

    causes = [error]
    while isinstance(getattr(causes[-1], "cause", None), BaseException) and causes[-1].cause not in causes:
        causes.append(causes[-1].cause)
    died = (LocalRayletDiedError, NodeDiedError, ObjectLostError, RayActorError, RaySystemError, WorkerCrashedError)
    return isinstance(error, died) and not any(isinstance(cause, ICCError) for cause in causes)


def _show_stage(after: str | None) -> None:
    """Write the innermost running stage (or "after <the stage that just ended>") to the stage file, if any."""
    if _stage_file:
        write_atomic(_stage_file[0], _stages[-1] if _stages else f"after {after}")


def package_versions() -> dict[str, str | None]:
    """{distribution: version, None where it is not installed} for the packages a result depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_record(out, pipeline: str, cfg, metrics: dict | None = None, **extra) -> None:
    """Write `out/run.json`: the pipeline's name, its resolved config, `extra` entries and the
    package versions; and with `metrics`, `out/metrics.json`."""
    from omegaconf import OmegaConf

    if metrics is not None:
        write_json(Path(out) / METRICS, metrics)
    write_json(Path(out) / RUN_RECORD, {"pipeline": pipeline, "config": OmegaConf.to_container(cfg, resolve=True),
                                        **extra, "versions": package_versions()})
