"""Where models run: device and dtype resolution, and CPU actor pools that never touch a GPU."""

import os

import numpy as np
import pytest
import torch

from icc.errors import ICCError
from icc.models.device import compute_dtype, resolve_device
from icc.ray_runtime import actor_pool


def test_dtype_auto_is_float32_on_cpu_and_names_are_checked():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    assert compute_dtype("auto", cpu) == torch.float32
    assert compute_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ICCError, match="unknown dtype 'fp8'"):
        compute_dtype("fp8", cpu)


def test_actors_without_a_gpu_see_none(ray_session):
    """Ray 2.60 leaves a GPU node's GPUs visible to workers that hold none: the pool hides them,
    so that a CPU actor placed on a GPU node does not put its model on the first GPU."""
    import ray.data

    class VisibleGPUs:  # defined here, so that Ray pickles it by value for the workers
        """Each row gets the CUDA_VISIBLE_DEVICES its actor process sees (None: unset)."""

        def __call__(self, batch: dict) -> dict:
            batch["visible"] = np.array([os.environ.get("CUDA_VISIBLE_DEVICES")] * len(batch["id"]), dtype=object)
            return batch

    rows = ray.data.range(4).map_batches(VisibleGPUs, batch_size=2, **actor_pool()).take_all()
    assert [row["visible"] for row in rows] == [""] * 4


def test_an_unresolved_precision_never_reaches_cpu_actors(ray_session, monkeypatch):
    """A driver that took the actors for GPU ones (it sees a GPU, the Ray cluster offers none) left
    precision "auto" for the GPU to decide: CPU actors would each pick their own (bf16 where AMX, fp32
    elsewhere), mixing vectors in a run, so the stage stops first. (No GPU here: the driver's view of
    one is what `gpus_visible` reads from /dev, set for the case.)"""
    import ray.data

    from icc.corpus import embed_stage

    settings = {"model": "all-MiniLM-L6-v2", "precision": "auto"}
    embed_stage.embed_dataset(ray.data.range(2), settings)  # this machine sees no GPU: its CPUs decide
    monkeypatch.setattr(embed_stage, "gpus_visible", lambda: True)
    with pytest.raises(ICCError, match="set embedder.pool.num_gpus .* and output.overwrite=true"):
        embed_stage.embed_dataset(ray.data.range(2), settings)
    embed_stage.embed_dataset(ray.data.range(2), settings, num_gpus=0)  # told: CPU actors, auto as they resolve
