"""What every pipeline needs around its stages: Ray start-up, user errors, timings, JSON outputs."""

import contextlib
import importlib.metadata
import json
import logging
import resource
import sys
import time
from pathlib import Path

from icc.errors import ICCError

# Times a batch is retried after the actor running it died (see `actor_pool`).
ACTOR_TASK_RETRIES = 3
PACKAGES = ["icc", "ray", "torch", "transformers", "peft", "deepspeed", "pyarrow", "scikit-learn", "faiss-cpu", "hydra-core"]


@contextlib.contextmanager
def user_errors():
    """Turn ICCError (raised here or inside a Ray task or actor) and a failure of a Ray Data read
    task (a file that cannot be parsed) into one line on stderr and exit code 2, without a traceback."""
    try:
        yield
    except Exception as e:
        message = _user_error_message(e)
        if message is None:
            raise
        print(f"icc: error: {message}", file=sys.stderr)
        sys.exit(2)


def _user_error_message(error: Exception) -> str | None:
    from ray.exceptions import RayTaskError

    if isinstance(error, ICCError):  # a RayTaskError wrapping an ICCError is an ICCError too
        return root_message(error)
    # The first line names the task's process after Ray Data's operators: "ray::ReadCSV->MapBatches(...)".
    if isinstance(error, RayTaskError) and "ray::Read" in str(error).lstrip().split("\n", 1)[0]:
        return f"cannot read the input data: {root_message(error)}"
    return None


def root_message(error: BaseException) -> str:
    """The first line of `error`'s message; for a Ray task error, of the exception raised in the task."""
    while isinstance(getattr(error, "cause", None), BaseException) and error.cause is not error:
        error = error.cause
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def start_ray(address: str = "", num_cpus: int | None = None, progress_bars: bool = True) -> None:
    """Join the Ray cluster at `address` ("auto": the running one) or start a local one ("")."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        local = {"num_cpus": num_cpus, "include_dashboard": False} if not address else {}
        ray.init(address=address or None, logging_level=logging.WARNING, **local)
    context = DataContext.get_current()
    context.enable_progress_bars = progress_bars
    context.execution_options.preserve_order = True  # row numbers and outputs follow the input order


def actor_pool(actors: int | None = None, num_gpus: float | None = None, cpus_per_actor: float = 1) -> dict:
    """`map_batches` keyword arguments for a pool of model-holding actors.

    With GPUs in the cluster, each actor takes `num_gpus` (default 1) and there is one actor per
    GPU unless `actors` is set; without GPUs, `actors` (default 1) CPU actors.

    Faults: an actor whose process dies (killed, out of memory, node lost) is restarted without
    limit -- it holds nothing but its model, which it loads again -- and each batch it was running
    is retried on the restarted actor up to ACTOR_TASK_RETRIES times, so no row is lost; a batch
    that kills its actor every time fails the job instead of looping forever.

    Actors that hold no GPU see none (Ray leaves a GPU node's GPUs visible to them, and their
    models would all pick the first one), so they run on the CPU wherever they are placed.
    """
    import ray
    from ray.data import ActorPoolStrategy

    if actors is not None and (not isinstance(actors, int) or isinstance(actors, bool) or actors < 1):
        raise ICCError(f"actors must be a positive integer or null, got {actors!r}")
    for name, value in (("num_gpus", num_gpus), ("cpus_per_actor", cpus_per_actor)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise ICCError(f"{name} must be a non-negative number, got {value!r}")
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus is None:
        num_gpus = 1 if cluster_gpus else 0
    if actors is None:
        actors = max(1, int(cluster_gpus // num_gpus)) if num_gpus else 1
    pool = {
        "compute": ActorPoolStrategy(size=actors),
        "num_gpus": num_gpus,
        "num_cpus": cpus_per_actor,
        "max_restarts": -1,
        "max_task_retries": ACTOR_TASK_RETRIES,
    }
    if not num_gpus:
        pool["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    return pool


class StageTimer:
    """Wall-clock seconds per named stage: `with timer("embed"): ...`; `timer.seconds` is a dict.

    `timer.peak_rss_mib` {stage: MiB}: this process's peak resident memory at the end of each
    stage, so the first stage whose value is higher than the one before raised the peak.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, int] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 3)
            self.peak_rss_mib[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ICCError(f"missing {path}") from None
    except json.JSONDecodeError as e:
        raise ICCError(f"{path} is not valid JSON: {e}") from None
