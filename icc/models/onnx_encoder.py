"""An encoder as an ONNX Runtime int8 graph (`embedder.precision=onnx-int8`), on the CPU.

The Hugging Face model in a local directory is exported to ONNX once (torch's TorchScript-based
exporter, dynamic batch and sequence axes), its MatMul weights quantised to int8 with one scale
per output channel and its activations per batch (`onnxruntime.quantization.quantize_dynamic`,
QInt8 weights: QUInt8 weights ran 0.55x as fast here, per-tensor scales lost 4x the cosine),
and the result cached under `icc.models.hub.cache_dir()`/models/onnx-int8/<key>, the key hashing
the model's files, this recipe and the onnx/onnxruntime versions. Nothing is downloaded. A cache
entry is used only if icc wrote it (its `icc-onnx.json` names the key); anything else there is
an ICCError, never overwritten.

`OnnxEncoder` stands where `TextEmbedder` holds a torch model: called with input_ids and
attention_mask (b, t) int64 tensors, it returns `last_hidden_state` (b, t, hidden) float32.
Needs the optional extra `icc[onnx]` (onnx, onnxruntime).
"""

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace

from icc.data.fingerprint import file_sha256
from icc.errors import ICCError
from icc.models.hub import cache_dir, is_local

RECIPE = {"export": "torchscript opset 17", "weights": "QInt8", "per_channel": True}  # what a cache entry holds
MODEL_FILE, RECORD_FILE = "model.onnx", "icc-onnx.json"
NEEDS_INSTALL = "embedder.precision=onnx-int8 needs onnxruntime and onnx: pip install 'icc[onnx]'"


def check_onnx_int8(model: str) -> None:
    """ICCError, before any work, unless onnx and onnxruntime are installed and `model` loads without
    a model hub (`icc.models.hub.is_local`): the conversion never downloads."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")):
        raise ICCError(NEEDS_INSTALL)
    if not is_local(model):
        check_local(model)


class OnnxEncoder:
    """The int8 ONNX Runtime graph of the model at `path` (a local directory), cached (see the
    module docstring); `num_threads` ONNX Runtime threads in one inference (None: all cores);
    `load`: `from_pretrained` keyword arguments (`icc.models.hub.load_kwargs`)."""

    def __init__(self, path: str, num_threads: int | None = None, **load):
        try:
            import onnxruntime
        except ImportError:
            raise ICCError(NEEDS_INSTALL) from None
        from transformers import AutoConfig

        self.config = AutoConfig.from_pretrained(path, trust_remote_code=load.get("trust_remote_code", False))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count()
        self.session = onnxruntime.InferenceSession(str(cached_int8_model(path, **load)), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, input_ids, attention_mask) -> SimpleNamespace:
        """`last_hidden_state` (b, t, hidden) float32 of torch int64 tensors (b, t)."""
        import torch

        hidden = self.session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})[0]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


def cached_int8_model(path: str, **load) -> Path:
    """The cached int8 ONNX file of the model at `path`, made first where there is none (`load`:
    `from_pretrained` keyword arguments)."""
    import onnx
    import onnxruntime

    check_local(path)
    key = hashlib.sha256(json.dumps({"model": model_fingerprint(path), "recipe": RECIPE, "onnx": onnx.__version__,
                                     "onnxruntime": onnxruntime.__version__}, sort_keys=True).encode()).hexdigest()[:24]
    target = cache_dir() / "models" / "onnx-int8" / key
    if target.exists():
        if not (written_by_icc(target, key) and (target / MODEL_FILE).is_file()):
            raise ICCError(f"{target} holds files icc did not write: remove it, or set ICC_CACHE to another directory")
        return target / MODEL_FILE
    partial = target.with_name(f"{key}.partial-{uuid.uuid4().hex}")  # this process's own, as the umask makes it
    partial.mkdir(parents=True)
    try:
        export_int8(path, partial / MODEL_FILE, **load)
        (partial / RECORD_FILE).write_text(json.dumps({"key": key, "source": path, **RECIPE}, indent=2) + "\n")
        partial.rename(target)
    except OSError:
        if not (target / RECORD_FILE).is_file():  # not another process caching it first
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target / MODEL_FILE


def written_by_icc(entry: Path, key: str) -> bool:
    """Whether the cache `entry` holds the record icc writes for `key`."""
    try:
        record = json.loads((entry / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("key") == key


def check_local(path: str) -> None:
    """ICCError unless `path` (a resolved model, `icc.models.hub.resolve_model`) is a local directory:
    the conversion never downloads."""
    if not Path(path).is_dir():
        raise ICCError(f"embedder.precision=onnx-int8 converts a local model directory, not {path!r} "
                       "(it never downloads): give embedder.model as a directory or a known offline name")


def export_int8(path: str, out: Path, **load) -> None:
    """Export the model at `path` to ONNX beside `out` and write its int8 quantisation to `out`."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):  # positional inputs and one output, as the exporter wants them
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = AutoModel.from_pretrained(path, dtype=torch.float32, **load).eval()
    float_file = out.with_name("float.onnx")
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():  # the TorchScript exporter warns of each op it maps, and of its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(model), example, str(float_file), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})
    # quantize_dynamic logs a hint through the root logger, which would give it a handler (basicConfig) for
    # good: a handler of its own keeps that off, a filter drops this thread's records (not other threads').
    root, quiet, thread = logging.getLogger(), logging.NullHandler(), threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != thread

    root.addHandler(quiet)
    root.addFilter(other_threads)
    try:
        quantize_dynamic(str(float_file), str(out), per_channel=RECIPE["per_channel"], weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(other_threads)
        root.removeHandler(quiet)
    float_file.unlink()


def model_fingerprint(path: str) -> str:
    """sha256 over the names (relative to `path`) and bytes of the files under the directory `path`."""
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root)}\0{file_sha256(file)}\0".encode())
    return digest.hexdigest()
