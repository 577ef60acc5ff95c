"""What every pipeline needs around its stages: Ray start-up, user errors, timings, JSON outputs."""

import contextlib
import importlib.metadata
import json
import logging
import sys
import time
from pathlib import Path

from icc.errors import ICCError

PACKAGES = ["icc", "ray", "torch", "transformers", "peft", "deepspeed", "pyarrow", "scikit-learn", "faiss-cpu", "hydra-core"]


@contextlib.contextmanager
def user_errors():
    """Turn ICCError into one line on stderr and exit code 2, without a traceback."""
    try:
        yield
    except ICCError as e:
        print(f"icc: error: {e}", file=sys.stderr)
        sys.exit(2)


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
    """
    import ray
    from ray.data import ActorPoolStrategy

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus is None:
        num_gpus = 1 if cluster_gpus else 0
    if actors is None:
        actors = max(1, int(cluster_gpus // num_gpus)) if num_gpus else 1
    return {"compute": ActorPoolStrategy(size=actors), "num_gpus": num_gpus, "num_cpus": cpus_per_actor}


class StageTimer:
    """Wall-clock seconds per named stage: `with timer("embed"): ...`; `timer.seconds` is a dict."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 3)


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
