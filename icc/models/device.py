"""Where a model runs: its device, the dtype it computes in, and torch's CPU threads.

An encoder's precision (`PRECISIONS`, the config's `embedder.precision`) is resolved here without
torch (`resolve_precision`), so that the driver records what its actors will compute in.

torch is imported by the functions that need it, so that a process that only checks settings
(the driver of `icc cluster`) does not load it.
"""

import os
from typing import TYPE_CHECKING

from icc.errors import ICCError

if TYPE_CHECKING:  # annotations only
    import torch

DTYPES = ("bfloat16", "float16", "float32")  # torch dtype names
# int8 Linear layers: torch dynamic quantisation ("int8") or an ONNX Runtime graph ("onnx-int8",
# `icc.models.onnx_encoder`); both on the CPU only.
CPU_ONLY = ("int8", "onnx-int8")
PRECISIONS = ("auto", *DTYPES, *CPU_ONLY)


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


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else ICCError."""
    if precision not in PRECISIONS:
        raise ICCError(f"unknown embedder.precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    return precision


def resolve_precision(precision: str, gpu: bool) -> str:
    """What an encoder on a GPU (`gpu`) or a CPU computes in for `precision`: a named one as is;
    "auto" on a GPU stays "auto" (autocast to bf16, or fp16 where the GPU lacks it: decided on the
    GPU, `compute_dtype`); on a CPU it is the fastest precision that kept clustering ACC within 0.01
    of float32 wherever it was measured (benchmarks/results/cpu_precision.md): "bfloat16" where the
    CPU has AMX-BF16 matrix units (`cpu_has_amx_bf16`), else "float32" (bf16 without AMX is slower)."""
    if check_precision(precision) != "auto" or gpu:
        return precision
    return "bfloat16" if cpu_has_amx_bf16() else "float32"


def cpu_has_amx_bf16() -> bool:
    """Whether this machine's CPU has AMX-BF16 tiles: the `amx_bf16` flag of /proc/cpuinfo, which
    the Linux kernel lists only where it enabled them (False where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False


def gpus_visible() -> bool:
    """Whether this process could see an NVIDIA GPU, found without torch or CUDA: a device node
    /dev/nvidia<N>, unless CUDA_VISIBLE_DEVICES hides them all ("" or "-1")."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    try:
        names = os.listdir("/dev")
    except OSError:
        return False
    return any(name.startswith("nvidia") and name[len("nvidia"):].isdigit() for name in names)


def use_threads(num_threads: int | None, device: "torch.device") -> None:
    """Set torch's CPU threads to `num_threads`; by default all cores for a model on the CPU.

    Ray pins a worker's torch to as many threads as it holds CPUs (1 by default), which suits a
    model on a GPU and starves one on a CPU node.
    """
    import torch

    if num_threads or device.type == "cpu":
        torch.set_num_threads(num_threads or os.cpu_count())
