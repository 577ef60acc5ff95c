"""The embedded corpus on disk: Parquet shards written as the embedded dataset streams past.

`write_embedded(ds, out_dir)` consumes a Ray Dataset of embedded rows batch by batch (in input
order) and writes

    out_dir/texts.parquet/part-00000.parquet ...       every input row: id, text, reject, replaced, truncated[, label]
    out_dir/embeddings.parquet/part-00000.parquet ...  the embedded rows (reject == ""): id, vector

Shard i of both directories holds the same input rows, so a shard's first row number is the sum of
the rows of the shards before it. The driver holds one batch at a time and a few numbers per shard
(`Shards`), kept in `embed.json`: rewritten after each shard is closed (`complete: false`, the
shards listed are whole) and last with `complete: true`, which marks the stage complete. With a
`key` (what the shards were made from, see `icc.corpus.embed_stage`), a re-run after a crash
continues after the shards listed (`resume_shards`), or, where embed.json is torn, after the
shards that read whole (`rebuild_shards`). File names, and which files icc may delete
(those it recorded as its own, `icc.corpus.rundir.renew`): `icc.corpus.rundir`.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from icc.corpus.rundir import (
    EMBED_MANIFEST,
    EMBEDDINGS,
    TEXTS,
    Manifest,
    part_name,
    renew,
)
from icc.data.fingerprint import cache_key
from icc.data.parquet import vector_array, vector_matrix
from icc.errors import ICCError
from icc.files import write_json


@dataclass
class Shards:
    """Where an embedded corpus lies and what it holds.

    rows, embedded: per shard, input rows and embedded rows; dim: vector size; has_labels: a
    `label` column (str, null when missing) in texts; replaced, truncated: counts over the corpus;
    reject_reasons: {reason: rows}; key: what the shards were made from ("" if not recorded);
    complete: whether every input row is in them (else the embed stage was cut off after them).
    """

    dir: Path
    rows: list[int] = field(default_factory=list)
    embedded: list[int] = field(default_factory=list)
    dim: int = 0
    has_labels: bool = False
    replaced: int = 0
    truncated: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    key: str = ""
    complete: bool = True

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def n_embedded(self) -> int:
        return sum(self.embedded)

    def check_clusterable(self, path) -> None:
        """ICCError when the corpus at `path` had no row, or every row was rejected."""
        if self.n_rows == 0:
            raise ICCError(f"the corpus is empty: {path}")
        if self.n_embedded == 0:
            raise ICCError(f"no text to cluster in {path}: all {self.n_rows} rows were rejected (empty texts)")

    def count_rejects(self, reject: np.ndarray) -> None:
        """Add the rejected rows of `reject` ((n,) reason per row, "" where embedded) to reject_reasons."""
        for reason, count in zip(*np.unique(reject[reject != ""], return_counts=True)):
            self.reject_reasons[str(reason)] = self.reject_reasons.get(str(reason), 0) + int(count)

    def first_rows(self) -> np.ndarray:
        """(shards,) row number of each shard's first row."""
        return np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64) if self.rows else np.zeros(0, np.int64)

    def texts(self, shard: int) -> Path:
        return self.dir / TEXTS / part_name(shard)

    def embeddings(self, shard: int) -> Path:
        return self.dir / EMBEDDINGS / part_name(shard)

    def save(self) -> None:
        record = {key: value for key, value in asdict(self).items() if key != "dir"}
        write_json(self.dir / EMBED_MANIFEST, record)

    @classmethod
    def load(cls, out_dir, partial: bool = False) -> "Shards | None":
        """The manifest of a completed embed stage in `out_dir` (or of a cut-off one, with
        `partial`), or None if there is none; ICCError if it is torn or corrupt."""
        path = Path(out_dir) / EMBED_MANIFEST
        if not path.is_file():
            return None
        try:
            shards = cls(dir=Path(out_dir), **json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ICCError(f"{path} is corrupt ({str(e).splitlines()[0]}): to embed afresh, re-run icc cluster "
                           f"with output.overwrite=true or remove {out_dir}") from None
        return shards if shards.complete or partial else None


@dataclass
class CombinedShards(Shards):
    """The shards of several embed outputs (e.g. partitions) read as one corpus: shard i is shard
    `local[i]` of the output in `dirs[i]`. For reading (fitting) only; it has no manifest of its own."""

    dirs: list[Path] = field(default_factory=list)
    local: list[int] = field(default_factory=list)

    def texts(self, shard: int) -> Path:
        return self.dirs[shard] / TEXTS / part_name(self.local[shard])

    def embeddings(self, shard: int) -> Path:
        return self.dirs[shard] / EMBEDDINGS / part_name(self.local[shard])


def combine_shards(parts: list[Shards]) -> CombinedShards:
    """One corpus of the shards of `parts` (complete embed outputs of the same embedder), in order."""
    if not parts:
        raise ICCError("no embedded shards to combine")
    return CombinedShards(
        dir=parts[0].dir,
        rows=[n for p in parts for n in p.rows],
        embedded=[n for p in parts for n in p.embedded],
        dim=max(p.dim for p in parts),
        has_labels=all(p.has_labels for p in parts),
        dirs=[p.dir for p in parts for _ in p.rows],
        local=[i for p in parts for i in range(len(p.rows))],
    )


def resume_shards(out_dir, key: str) -> Shards:
    """What an embed stage with `key` left in `out_dir`: all its shards (`complete`), the whole
    shards of a run cut off (`complete` False; later part files are deleted), or, when the key
    differs, a shard is missing or there is no manifest, an empty Shards (the outputs icc wrote
    deleted; ICCError, deleting nothing, where `out_dir` holds them but icc did not write them).
    A torn or corrupt embed.json is rebuilt from the shards (`rebuild_shards`) where the
    directory's manifest records that `key`'s settings made them, else it is an ICCError."""
    out_dir = Path(out_dir)
    try:
        shards = Shards.load(out_dir, partial=True)
    except ICCError:
        settings = Manifest.load(out_dir).settings
        if not settings or cache_key(**settings) != key:
            raise
        shards = rebuild_shards(out_dir, key)
    if shards is None or not key or shards.key != key or not _whole(shards):
        renew(out_dir, TEXTS, EMBEDDINGS, EMBED_MANIFEST)
        return Shards(dir=out_dir, key=key, complete=False)
    for name in (TEXTS, EMBEDDINGS):
        for file in sorted((out_dir / name).glob("part-*.parquet"))[len(shards.rows):]:
            file.unlink()
    return shards


def rebuild_shards(out_dir, key: str) -> Shards:
    """The manifest of a cut-off embed stage with `key`, rebuilt from the shard pairs in `out_dir`
    that read whole, from the first up to one that does not (unreadable, missing, or holding other
    embedded rows than its texts' rows with an empty reject)."""
    shards = Shards(dir=Path(out_dir), key=key, complete=False)
    while True:
        shard = len(shards.rows)
        try:
            texts = pq.read_table(shards.texts(shard), columns=["reject", "replaced", "truncated"])
            embeddings = pq.ParquetFile(shards.embeddings(shard))
        except (OSError, pa.ArrowInvalid, KeyError):
            return shards
        reject = texts["reject"].to_numpy(zero_copy_only=False).astype(str)
        if embeddings.metadata.num_rows != int((reject == "").sum()):
            return shards
        shards.rows.append(texts.num_rows)
        shards.embedded.append(embeddings.metadata.num_rows)
        shards.dim = embeddings.schema_arrow.field("vector").type.list_size
        shards.has_labels = "label" in pq.read_schema(shards.texts(shard)).names
        shards.replaced += int(texts["replaced"].to_numpy(zero_copy_only=False).sum())
        shards.truncated += int(texts["truncated"].to_numpy(zero_copy_only=False).sum())
        shards.count_rejects(reject)


def _whole(shards: Shards) -> bool:
    """Whether every shard the manifest lists is on disk with its rows."""
    try:
        return all(pq.read_metadata(shards.texts(i)).num_rows == n and pq.read_metadata(shards.embeddings(i)).num_rows == m
                   for i, (n, m) in enumerate(zip(shards.rows, shards.embedded)))
    except (OSError, pa.ArrowInvalid):
        return False


class _ShardWriter:
    """Writes batches to the current pair of shards, opening the next pair before a batch that would
    take it past `shard_rows` rows (a larger batch gets a shard of its own)."""

    def __init__(self, shards: Shards, shard_rows: int):
        self.shards, self.shard_rows = shards, shard_rows
        self.texts = self.embeddings = None

    def write(self, texts: pa.Table, embeddings: pa.Table) -> None:
        if self.texts is None or self.shards.rows[-1] + texts.num_rows > self.shard_rows:
            if self.texts is not None:
                self.close()
                self.shards.save()  # the closed shard is whole: a re-run can continue after it
            shard = len(self.shards.rows)
            self.texts = pq.ParquetWriter(self.shards.texts(shard), texts.schema)
            self.embeddings = pq.ParquetWriter(self.shards.embeddings(shard), embeddings.schema)
            self.shards.rows.append(0)
            self.shards.embedded.append(0)
        self.texts.write_table(texts.cast(self.texts.schema))
        self.embeddings.write_table(embeddings.cast(self.embeddings.schema))
        self.shards.rows[-1] += texts.num_rows
        self.shards.embedded[-1] += embeddings.num_rows

    def close(self) -> None:
        for writer in (self.texts, self.embeddings):
            if writer is not None:
                writer.close()
        self.texts = self.embeddings = None


def write_embedded(ds, out: "Shards | Path | str", shard_rows: int = 65536, progress=None) -> Shards:
    """Stream an embedded dataset (columns text, reject, replaced, vector, truncated and optional
    id, label) into shards (see the module docstring); at most `shard_rows` input rows per shard,
    or one batch when a batch is larger. Without an id column, ids are row numbers. `out`: a
    directory (written afresh), or the Shards of a cut-off run (`resume_shards`), continued with
    `ds` holding the input rows after its shards. `progress`: a `StageProgress` told of each
    batch's rows. Returns the saved manifest."""
    if isinstance(out, Shards):
        shards = out
    else:
        shards = Shards(dir=Path(out))
        renew(shards.dir, TEXTS, EMBEDDINGS, EMBED_MANIFEST)
    (shards.dir / TEXTS).mkdir(parents=True, exist_ok=True)
    (shards.dir / EMBEDDINGS).mkdir(exist_ok=True)
    shards.complete = False
    writer = _ShardWriter(shards, shard_rows)
    n_rows = shards.n_rows
    try:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            n = len(batch["text"])
            ids = batch["id"] if "id" in batch else np.arange(n_rows, n_rows + n)
            ok = batch["reject"] == ""
            columns = {"id": ids, "text": batch["text"], "reject": batch["reject"], "replaced": batch["replaced"],
                       "truncated": batch["truncated"] & ok}
            if "label" in batch:
                columns["label"] = pa.array([None if _missing(v) else str(v) for v in batch["label"]], pa.string())
                shards.has_labels = True
            shards.dim = batch["vector"].shape[1]
            writer.write(pa.table(columns), pa.table({"id": ids[ok], "vector": vector_array(batch["vector"][ok])}))
            shards.count_rejects(batch["reject"])
            shards.replaced += int(batch["replaced"].sum())
            shards.truncated += int(columns["truncated"].sum())
            n_rows += n
            if progress is not None:
                progress.update(n)
    finally:
        writer.close()
    shards.complete = True
    shards.save()
    return shards


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def sample_mask(n: int, fraction: float, seed: int, shard: int) -> np.ndarray:
    """(n,) bool: the rows of embeddings shard `shard` in a `fraction` sample, the same on every call."""
    if fraction >= 1:
        return np.ones(n, dtype=bool)
    return np.random.default_rng([seed, shard]).random(n) < fraction


def read_vectors(shards: Shards, shard: int, fraction: float = 1.0, seed: int = 0) -> np.ndarray:
    """(m, dim) float32 vectors of one embeddings shard; with fraction < 1 its `sample_mask` rows."""
    vectors = vector_matrix(pq.read_table(shards.embeddings(shard), columns=["vector"])["vector"])
    vectors = vectors.reshape(-1, shards.dim)
    return vectors[sample_mask(len(vectors), fraction, seed, shard)]
