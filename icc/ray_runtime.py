"""Ray for the pipelines: joining or starting a cluster, pools of model-holding actors, task results."""

import contextlib
import logging
import os
import signal
import socket
import threading
import warnings
from urllib.parse import urlsplit

from icc.checks import check_non_negative, check_positive_int
from icc.errors import ICCError

# Times a batch is retried after the actor running it died (see `actor_pool`).
ACTOR_TASK_RETRIES = 3
# Seconds to wait for the cluster to be joined to answer (Ray itself would retry for many minutes).
JOIN_TIMEOUT_S = 30
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def hide_hub_progress(verbose: bool = False) -> None:
    """Without `verbose`, HF_HUB_DISABLE_PROGRESS_BARS=1 unless set: no Hugging Face progress bars, such
    as transformers' "Loading weights", which it reads when imported: call it before a model loads."""
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def start_ray(address: str = "", num_cpus: int | None = None, progress_bars: bool = True,
              verbose: bool = False) -> None:
    """Join the Ray cluster at `address` ("auto": the running one, as `ray.init` finds it), or
    start a new local one (""): never one that `ray start` left recorded on the machine, which
    `ray.init(address=None)` would join (and hang on, when that cluster is gone). A cluster that
    does not answer within JOIN_TIMEOUT_S is an ICCError. Keeps the caller's SIGTERM handler.

    verbose: Ray's own output too: its INFO logs, Ray Data's execution plans (and with
    `progress_bars` its progress bars), and the workers' and actors' stdout and stderr
    (`log_to_driver`); without it a run prints Ray's warnings and errors only (workers' logs stay
    in Ray's session directory) and no Hugging Face progress bars (`hide_hub_progress`: transformers'
    "Loading weights" when the driver loads the keyword labeler's encoder). `progress_bars` is also
    the config key of icc's own progress line per stage (`icc.pipeline.StageTimer`)."""
    import ray
    from ray.data import DataContext

    hide_hub_progress(verbose)
    if not ray.is_initialized():
        if address:
            check_reachable(address)
        # A new local Ray enables token authentication (Ray's default since 2.59) and warns on
        # every start that it did: that warning is Ray's INFO, shown with `verbose` only.
        logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.INFO if verbose else logging.ERROR)
        local = {"num_cpus": num_cpus, "include_dashboard": False} if not address else {}
        sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(address=address or "local", logging_level=logging.INFO if verbose else logging.WARNING,
                 log_to_driver=verbose, **local)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)  # ray.init sets its own, which exits with code 15
    # Ray Data logs every execution at INFO and a warning that its progress bars are off.
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = verbose and progress_bars
    context.execution_options.preserve_order = True  # row numbers and outputs follow the input order


def check_reachable(address: str) -> None:
    """ICCError unless the Ray cluster at `address` (host:port, ray://host:port, or "auto": found
    as `ray.init` finds it) accepts a connection within JOIN_TIMEOUT_S."""
    from ray._private.services import canonicalize_bootstrap_address

    target = address
    try:
        if address == "auto":  # RAY_ADDRESS, else the cluster `ray start` recorded, else a running one
            target = os.environ.get("RAY_ADDRESS") or canonicalize_bootstrap_address(address)
        host, port = (urlsplit(target).netloc if "://" in target else target).rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=JOIN_TIMEOUT_S).close()
    except (OSError, ValueError) as e:  # ConnectionError: "auto" found no cluster
        raise ICCError(f"cannot reach the Ray cluster at {target}: {e}") from None


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

    check_pool(actors, num_gpus, cpus_per_actor)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus is None:
        num_gpus = 1 if cluster_gpus else 0
    if actors is None:
        actors = max(1, int(cluster_gpus // num_gpus)) if num_gpus else 1
    # Ray Data restarts a pool's actors without limit (max_restarts=-1) by default; its default
    # max_task_retries (-1) would retry a batch that kills its actor forever. max_task_retries has
    # no named `map_batches` parameter before Ray 2.64 (pyproject pins <2.64), so it goes in
    # `ray_remote_args`, whose deprecation warning (the only one this raises) is filtered here.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
    return {
        "compute": ActorPoolStrategy(size=actors),
        "num_gpus": num_gpus,
        "num_cpus": cpus_per_actor,
        "runtime_env": None if num_gpus else {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}},
        "max_task_retries": ACTOR_TASK_RETRIES,
    }


def check_pool(actors: int | None = None, num_gpus: float | None = None, cpus_per_actor: float = 1,
               num_threads: int | None = None) -> None:
    """ICCError for a pool setting (see `actor_pool`, `map_actors`) of the wrong type or range."""
    check_positive_int(actors, "actors", allow_none=True)
    check_non_negative(num_gpus, "num_gpus", allow_none=True)
    check_non_negative(cpus_per_actor, "cpus_per_actor")
    check_positive_int(num_threads, "num_threads", allow_none=True)


def get(ref):
    """ray.get that re-raises a task's ICCError as itself (one line for the user, no traceback)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ICCError):
            raise ICCError(str(e.cause)) from None
        raise


def map_actors(ds, actor_class: type, constructor_kwargs: dict, batch_size: int, actors: int | None = None,
               num_gpus: float | None = None, cpus_per_actor: float = 1, num_threads: int | None = None,
               **map_options):
    """`ds.map_batches` on a pool of `actor_class` actors, each built with `constructor_kwargs`.

    actors, num_gpus, cpus_per_actor: the pool (see `actor_pool`); num_threads: torch CPU threads
    of each actor (passed to its constructor). These four are a config's `<model>.pool` group.
    map_options: more `map_batches` arguments (batch_format, ...).
    """
    return ds.map_batches(
        actor_class,
        fn_constructor_kwargs={**constructor_kwargs, "num_threads": num_threads},
        batch_size=batch_size,
        **map_options,
        **actor_pool(actors, num_gpus, cpus_per_actor),
    )


@contextlib.contextmanager
def compute_threads(threads: int):
    """Inside: BLAS and OpenMP (threadpoolctl) and faiss on `threads` threads; set back after. Ray sets
    a worker's threads to the CPUs of the task it started for (1 for a num_cpus=1 task), and a reused
    worker keeps them, so a task that computes on more sets them itself."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        faiss.omp_set_num_threads(faiss_threads)
