"""Shared fixtures: the labelled data in ../shared/data and one real local Ray cluster per session."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEXT = SHARED / "text"
BIN = Path(sys.executable).parent

# The test cluster listens on loopback only; token auth would need the token in every subprocess.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """Address of a real Ray head started with `ray start --head` for this test session."""
    temp = tmp_path_factory.mktemp("ray")
    port = free_port()
    subprocess.run(
        [BIN / "ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        check=True, capture_output=True,
    )
    yield f"127.0.0.1:{port}"
    stop_ray_under(temp)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_ray_under(temp):
    """Kill the Ray cluster whose processes were started with `temp` as their temp dir, and their workers.

    Unlike `ray stop --force`, this leaves any other Ray on the machine (another test session) alone.
    """
    heads = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp) in arg for arg in p.info["cmdline"] or ())]
    family = {q for p in heads for q in (p, *p.children(recursive=True))}
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


@pytest.fixture(scope="session")
def ray_session(ray_address):
    """This process connected to the session's Ray cluster, with Ray Data set up as pipelines do."""
    from icc.ray_runtime import start_ray

    start_ray(address=ray_address, progress_bars=False)
    yield ray_address


def run_icc(*args, timeout=600):
    """Run the `icc` console script; returns the CompletedProcess (text output)."""
    return subprocess.run([BIN / "icc", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


BANKING_INTENTS = ["card_arrival", "change_pin", "exchange_rate", "terminate_account", "top_up_failed", "lost_or_stolen_phone"]


@pytest.fixture(scope="session")
def banking_run(ray_address, tmp_path_factory):
    """The output dir of `icc cluster` (labeler=llm, report on) on 240 Banking77 texts of 6 intents, k=6."""
    import pyarrow.compute as pc
    import pyarrow.csv

    base = tmp_path_factory.mktemp("banking")
    table = pyarrow.csv.read_csv(TEXT / "banking77_test.csv")
    parts = [table.filter(pc.equal(table["label"], intent)).slice(0, 40) for intent in BANKING_INTENTS]
    pyarrow.csv.write_csv(pyarrow.concat_tables(parts), base / "banking.csv")
    out = base / "run"
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false", f"data.path={base / 'banking.csv'}",
                     "clusterer.k=6", "labeler=llm", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out
