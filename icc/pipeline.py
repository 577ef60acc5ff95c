"""What every pipeline shares around its stages: the Hydra entry point with one-line user errors,
stage timings, and the run record (`run.json`: the resolved config and the package versions)."""

import contextlib
import importlib.metadata
import os
import time
from pathlib import Path

from icc.config import CONFIG_DIR
from icc.errors import user_errors
from icc.files import write_json
from icc.memory import peak_rss_mib

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
        with user_errors():  # the overrides, applied before `app` runs
            app()

    return main


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
            self.peak_rss_mib[stage] = int(peak_rss_mib())


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
