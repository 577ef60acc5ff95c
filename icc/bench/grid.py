"""The bench grid read from the config: embedders x clusterers x datasets, validated up front."""

from dataclasses import dataclass, field
from pathlib import Path

from icc.bench.tables import METRICS
from icc.checks import check_int
from icc.cluster import make_clusterer
from icc.corpus.embed_stage import check_embed_pool, resolve_embedder
from icc.data.corpus import list_files
from icc.data.fingerprint import file_fingerprint
from icc.errors import ICCError
from icc.models.embedder import check_embedder

EMBEDDER_KINDS = ("transformer", "tfidf")
REDUCTIONS = ("pca", "truncate")


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled corpus: `path` (file, directory or glob), its text and label columns, k (None:
    the number of distinct labels), and `sample`: None for every row, or a stratified sample of
    this many rows drawn with `seed` (see `icc.bench.datasets`)."""

    name: str
    path: str
    text_column: str = "text"
    label_column: str = "label"
    k: int | None = None
    sample: int | None = None
    seed: int = 0

    def cache_parts(self) -> dict:
        """What determines the rows read: the bytes of the files, the columns and the sample."""
        parts = {"data": file_fingerprint(self.path), "text": self.text_column, "label": self.label_column}
        if self.sample:
            parts["sample"] = {"rows": self.sample, "seed": self.seed}
        return parts


@dataclass(frozen=True)
class EmbedderSpec:
    """kind "transformer": `params` load the model (`embed_dataset`'s `embedder`: model, pooling, ...)
    and `pool` runs it (`embed_dataset`'s keywords: actors, batch_size, ...); kind "tfidf": `params`
    are `fit_tfidf` keyword arguments and `pool` is empty."""

    name: str
    kind: str
    params: dict = field(hash=False)
    pool: dict = field(default_factory=dict, hash=False)

    def vector_params(self) -> dict:
        """The settings that determine the vectors (the kind and what loads the model, never the
        pool): the embedding cache key."""
        return {"kind": self.kind, **self.params}


@dataclass(frozen=True)
class ClustererSpec:
    """`params` are `make_clusterer` keyword arguments; params["name"] is the algorithm."""

    name: str
    params: dict = field(hash=False)


def dataset_specs(names: list[str], presets: dict, seed: int = 0) -> list[DatasetSpec]:
    specs = []
    for name in _names(names, "bench.datasets"):
        if name not in presets:
            raise ICCError(f"unknown dataset '{name}' in bench.datasets (choose from {', '.join(presets)}, "
                           f"or add one: +datasets.{name}={{path:...,text_column:...,label_column:...}})")
        preset = dict(presets[name])
        if not preset.get("path") or not preset.get("label_column"):
            raise ICCError(f"dataset '{name}' needs a path and a label_column (the labels score the clusters)")
        try:
            list_files(preset["path"])  # the files exist and are of one readable format
        except ICCError as e:
            raise ICCError(f"dataset '{name}': {e}") from None
        check_int(preset.get("k"), f"dataset '{name}': k", minimum=2, allow_none=True)
        sample = preset.get("sample")
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 2):
            raise ICCError(f"dataset '{name}': sample must be a number of rows >= 2 or null, got {sample!r}")
        specs.append(DatasetSpec(name=name, seed=seed, **preset))
    return specs


def embedder_specs(names: list[str], presets: dict, transformer_defaults: dict) -> list[EmbedderSpec]:
    """Presets by name; a name that is no preset is a HF model id ("org/name") or a local directory,
    embedded with mean pooling. transformer_defaults: the config's `embedder` group, load keys and
    a `pool` sub-dict; a transformer preset's keys go on top of the load keys, its `pool` keys (if
    any) on top of the pool's."""
    defaults = dict(transformer_defaults)
    default_pool = defaults.pop("pool", {})
    specs = []
    for name in _names(names, "bench.embedders"):
        if name in presets:
            preset = dict(presets[name])
        elif "/" in name or Path(name).expanduser().is_dir():
            preset = {"model": name}
        else:
            raise ICCError(f"unknown embedder '{name}' in bench.embedders (choose from {', '.join(presets)}, "
                           "a Hugging Face id such as org/model, or a local model directory)")
        kind = preset.pop("kind", "transformer")
        if kind not in EMBEDDER_KINDS:
            raise ICCError(f"embedder '{name}': unknown kind '{kind}' (choose from {', '.join(EMBEDDER_KINDS)})")
        pool = {}
        if kind == "transformer":
            pool = {**default_pool, **preset.pop("pool", {})}
            preset = {**defaults, **preset}
            try:
                check_embedder(**preset)
                check_embed_pool(**pool)
            except ICCError as e:
                raise ICCError(f"embedder '{name}': {e}") from None
            preset = resolve_embedder(preset, pool)  # the embedding cache keys the precision it computes in
        specs.append(EmbedderSpec(name=name, kind=kind, params=preset, pool=pool))
    return specs


def clusterer_specs(names: list[str], presets: dict) -> list[ClustererSpec]:
    specs = []
    for name in _names(names, "bench.clusterers"):
        if name not in presets:
            raise ICCError(f"unknown clusterer '{name}' in bench.clusterers (choose from {', '.join(presets)})")
        params = dict(presets[name])
        make_clusterer(**params)  # an unknown algorithm or bad parameter fails now, not in a Ray task
        specs.append(ClustererSpec(name=name, params=params))
    return specs


def check_dims(dims, reduce: str) -> list[int]:
    """Embedding sizes of the size experiment: positive integers, largest first."""
    if reduce not in REDUCTIONS:
        raise ICCError(f"unknown bench.reduce '{reduce}' (choose from {', '.join(REDUCTIONS)})")
    dims = list(dims or [])
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ICCError(f"bench.dims must be positive integers, got {dims}")
    return sorted(set(dims), reverse=True)


def check_metric(select_by: str) -> str:
    """The metric that picks the best algorithm (`bench.select_by`): a column of `METRICS`."""
    if select_by not in METRICS:
        raise ICCError(f"unknown bench.select_by '{select_by}' (choose from {', '.join(METRICS)})")
    return select_by


def _names(names, key: str) -> list[str]:
    names = [str(n) for n in (names or [])]
    if not names:
        raise ICCError(f"{key} is empty")
    if len(set(names)) < len(names):
        raise ICCError(f"{key} names something twice: {names}")
    return names
