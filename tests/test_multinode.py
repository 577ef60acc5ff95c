"""Multi-node on one machine, through the real job-submission path: a Ray head and a second node
started with `ray start`, `icc cluster` submitted with `ray job submit --working-dir`, its outputs checked.

The second node declares one GPU. It is a logical one (Ray schedules on it; torch finds no CUDA and
runs on the CPU), so the job takes the path it takes on a GPU cluster: one embedding actor per GPU,
placed on the GPU node, with tokenisation in CPU tasks before it.

The cluster runs with Ray's token authentication on, as the README's job submission expects: the
nodes and every client (`ray job submit`, `ray list`) are given the token (RAY_AUTH_TOKEN) and
RAY_AUTH_MODE=token; the rest of the test session runs without it (tests/conftest.py)."""

import json
import os
import secrets
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import BIN, ROOT, TEXT, free_port, stop_ray_under

TOKEN_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def with_token() -> dict:
    """The environment of a node or client of the test cluster: this one's, with the token."""
    return {**os.environ, **TOKEN_AUTH}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """Dashboard URL of a head and a worker node of two logical CPUs each (so that a node still has
    a free CPU while the embedding actor holds one), the worker with one logical GPU; stopped afterwards."""
    temp = tmp_path_factory.mktemp("ray2")
    port, dashboard = free_port(), free_port()
    common = ["--num-cpus=2", "--object-store-memory=400000000", "--disable-usage-stats"]

    def agent_ports():  # each node's dashboard agent (it runs submitted jobs) on ports of its own, not the defaults
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}"]

    try:
        subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *agent_ports(), *common],
                       check=True, capture_output=True, timeout=180, env=with_token())
        subprocess.run([BIN / "ray", "start", f"--address=127.0.0.1:{port}", "--num-gpus=1", *agent_ports(), *common],
                       check=True, capture_output=True, timeout=180, env=with_token())
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        stop_ray_under(temp)


def test_icc_cluster_as_a_ray_job_on_two_nodes(two_nodes, tmp_path):
    dashboard = two_nodes
    out = tmp_path / "run"
    # --working-dir uploads the repository (Ray leaves out what .gitignore lists: .venv, outputs, runs);
    # the job runs the pipeline from the upload with this venv's Python, and joins the cluster it runs on.
    submit = [BIN / "ray", "job", "submit", f"--address={dashboard}", f"--working-dir={ROOT}", "--",
              sys.executable, "-m", "pipelines.cluster", "ray.address=auto", "ray.progress_bars=false", "data=file",
              f"data.path={TEXT / 'cstr.csv'}", "data.label_column=label", "clusterer.k=4", "labeler=none",
              "report.enabled=false", "output.shard_rows=64", "embedder.pool.rows_per_batch=32", f"output.dir={out}"]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(submit, capture_output=True, text=True, timeout=600, env=with_token())
        # The head's job agent registers a few seconds after `ray start` returns.
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "succeeded" in result.stdout
    # and a client without the token is refused
    refused = subprocess.run([BIN / "ray", "job", "list", f"--address={dashboard}"], capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr
    assert "Uploading package" in result.stdout + result.stderr or "working_dir" in result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nodes"] == 2  # the shards were assigned on both nodes
    assert metrics["rows"] == 299 and metrics["acc"] >= 0.75
    assignments = pq.read_table(out / "assignments.parquet")
    assert assignments["id"].to_pylist() == list(range(299)) and len(list((out / "assignments.parquet").iterdir())) > 1
    # One actor per GPU, on the GPU node; the texts were tokenised by CPU tasks (embedder.pool.tokenize=auto).
    gpu_node = next(n["node_id"] for n in ray_state("nodes", dashboard) if n["resources_total"].get("GPU"))
    embedders = [a for a in ray_state("actors", dashboard) if "TextEmbedder" in a["class_name"]]
    assert embedders and all(a["required_resources"].get("GPU") == 1 and a["node_id"] == gpu_node for a in embedders)
    assert any("tokenize_batch" in task["name"] for task in ray_state("tasks", dashboard))


def ray_state(kind: str, dashboard: str) -> list[dict]:
    """`ray list <kind> --detail` of the cluster at `dashboard`, as dicts."""
    listed = subprocess.run([BIN / "ray", "list", kind, f"--address={dashboard}", "--detail", "--format=json",
                             "--limit=10000"], check=True, capture_output=True, text=True, timeout=120, env=with_token())
    return json.loads(listed.stdout)
