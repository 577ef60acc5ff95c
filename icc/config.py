"""Hydra/OmegaConf glue shared by the pipelines."""

from importlib.resources import files

from omegaconf import DictConfig, OmegaConf

from icc.errors import ICCError

CONFIG_DIR = str(files("icc").joinpath("conf"))


def resource_path(name: str) -> str:
    """Absolute path of a file bundled in icc/resources (used as ${icc_resource:<name>})."""
    return str(files("icc").joinpath("resources", name))


OmegaConf.register_new_resolver("icc_resource", resource_path, replace=True)


def to_kwargs(cfg: DictConfig, *drop: str) -> dict:
    """A config node as plain keyword arguments, without the keys in `drop`; a value left ???
    (dropped or not) raises MissingMandatoryValue, which the pipelines show as `give <key>=<value>`."""
    kwargs = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return {key: value for key, value in kwargs.items() if key not in drop}


def build(registry: dict, kind: str, name: str, **params):
    """`registry[name](**params)`, e.g. a clusterer; ICCError for an unknown name or bad parameters."""
    if name not in registry:
        raise ICCError(f"unknown {kind} '{name}' (choose from {', '.join(registry)})")
    try:
        return registry[name](**params)
    except TypeError as e:
        raise ICCError(f"bad parameters for {kind} '{name}': {e}") from None
