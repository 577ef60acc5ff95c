"""Where a model runs: its device, the dtype it computes in, and torch's CPU threads.

torch is imported by the functions that need it, so that a process that only checks settings
(the driver of `icc cluster`) does not load it.
"""

import os
from typing import TYPE_CHECKING

from icc.errors import ICCError

if TYPE_CHECKING:  # annotations only
    import torch

DTYPES = ("bfloat16", "float16", "float32")  # torch dtype names


def resolve_device(device: str | None) -> "torch.device":
    """`device`, or cuda when this process sees a GPU, else cpu. (The Ray actors that hold no GPU
    see none: `icc.runtime.actor_pool`.)"""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_dtype(dtype: str) -> str:
    """`dtype` if it is "auto" or one of DTYPES, else ICCError."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ICCError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return dtype


def compute_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """The dtype named, or for "auto": bfloat16 on a GPU with bf16 tensor cores, float16 on an
    older GPU (where bf16 would only be emulated), float32 on a CPU."""
    import torch

    if check_dtype(dtype) == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return getattr(torch, dtype)


def use_threads(num_threads: int | None, device: "torch.device") -> None:
    """Set torch's CPU threads to `num_threads`; by default all cores for a model on the CPU.

    Ray pins a worker's torch to as many threads as it holds CPUs (1 by default), which suits a
    model on a GPU and starves one on a CPU node.
    """
    import torch

    if num_threads or device.type == "cpu":
        torch.set_num_threads(num_threads or os.cpu_count())
