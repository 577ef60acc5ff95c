"""The embed stage of `icc cluster`, resumable: its outputs are keyed by what they are made from.

The key hashes the input's fingerprint (the names and bytes of its files,
`icc.data.fingerprint.file_fingerprint`), the columns read and the embedder config. A run whose output
directory holds a complete stage with the same key skips it; one that finds the whole shards of a
run cut off (killed) with the same key embeds only the input rows after them
(`icc.corpus.shards.resume_shards`); a different key (other data, another embedder) starts afresh,
which `icc cluster` refuses before any work unless output.overwrite (`icc.corpus.rundir.open_run`).
"""

from pathlib import Path

from icc.checks import check_positive_int
from icc.corpus.shards import Shards, resume_shards, write_embedded
from icc.data.corpus import read_corpus
from icc.data.fingerprint import cache_key, file_fingerprint
from icc.errors import ICCError
from icc.models.device import CPU_ONLY, gpus_visible, resolve_precision
from icc.models.embedder import TextEmbedder, check_embedder, check_renamed, tokenize_batch
from icc.ray_runtime import actor_pool, check_pool

TOKENIZE = ("auto", "stage", "actor")  # where texts are tokenised: see `embed_dataset`


def embed_settings(path: str, columns: dict, embedder: dict, fingerprint: str | None = None) -> dict:
    """What the embed stage's outputs are made from, by config name: the files under `path`
    ("data.path files", their `fingerprint`), `columns` {text_column, id_column, label_column} as
    data.<column> and the `embedder` load settings as embedder.<setting>, which shape the vectors
    (not the pool's: a re-run with more actors continues the same stage)."""
    return {"data.path files": fingerprint or file_fingerprint(path),
            **{f"data.{name}": value for name, value in columns.items()},
            **{f"embedder.{name}": value for name, value in embedder.items()}}


def embed_key(path: str, columns: dict, embedder: dict, fingerprint: str | None = None) -> str:
    """Key of the embed stage: a hash of its `embed_settings`."""
    return cache_key(**embed_settings(path, columns, embedder, fingerprint))


def check_embed_settings(embedder: dict, pool: dict, shard_rows: int) -> None:
    """ICCError for an `embed_corpus` setting of the wrong type or range, before any work: the
    `embedder` load settings (one under an old name too), the `pool` (`check_embed_pool`) and `shard_rows`."""
    check_renamed(embedder)
    check_embedder(**embedder)
    check_embed_pool(**pool)
    check_positive_int(shard_rows, "output.shard_rows")


def resolve_embedder(embedder: dict, pool: dict) -> dict:
    """`embedder` with its precision resolved for where the pool's actors run (`resolve_precision`),
    as the embed stage's key and run.json record it and the actors get it, so that a run resumed on
    another machine computes in the same precision. The actors hold GPUs if `pool`'s num_gpus says
    so, or where it is unset (one per GPU of the cluster), if this machine sees one (`gpus_visible`).
    A driver that sees no GPU of a cluster that has them (a CPU head) resolves for its CPU, and the
    GPU actors compute in that: bf16 autocast, or float32 where this CPU lacks AMX-BF16 (slower:
    embedder.pool.num_gpus=1 lets the GPUs choose, as the README's cluster example sets)."""
    num_gpus = pool.get("num_gpus")
    gpu = bool(num_gpus) if num_gpus is not None else gpus_visible()
    return {**embedder, "precision": resolve_precision(embedder.get("precision", "auto"), gpu)}


def check_embed_pool(batch_size: int | None = None, rows_per_batch: int = 1024, tokenize: str = "auto",
                     **actor_settings) -> None:
    """ICCError for an `embed_dataset` pool setting (the config's `embedder.pool`) of the wrong type or range."""
    check_pool(**actor_settings)
    check_positive_int(batch_size, "batch_size", allow_none=True)
    check_positive_int(rows_per_batch, "rows_per_batch")
    if tokenize not in TOKENIZE:
        raise ICCError(f"unknown embedder.pool.tokenize '{tokenize}' (choose from {', '.join(TOKENIZE)})")


def embed_corpus(path: str, columns: dict, embedder: dict, pool: dict, out_dir, shard_rows: int,
                 fingerprint: str | None = None, progress=None) -> tuple[Shards, int]:
    """Read the corpus at `path`, embed it and write its shards to `out_dir`, or reuse what an
    earlier run with the same key wrote there (see the module docstring).

    columns: {text_column, id_column, label_column} for `read_corpus`; embedder, pool: as for
    `embed_dataset`; fingerprint: `file_fingerprint(path)` if the caller has it; progress: a
    `StageProgress` told of the rows as they are written. Returns the complete shards and the
    input rows this call sent to the embedder.
    """
    key = embed_key(path, columns, embedder, fingerprint)
    shards = resume_shards(Path(out_dir), key)
    if shards.complete:
        return shards, 0
    done = shards.n_rows
    ds = read_corpus(path, columns["text_column"], columns.get("id_column"), columns.get("label_column"),
                     skip_rows=done)  # the rows after the whole shards
    shards = write_embedded(embed_dataset(ds, embedder, **pool), shards, shard_rows, progress)
    return shards, shards.n_rows - done


def embed_dataset(
    ds,
    embedder: dict,
    actors: int | None = None,
    num_gpus: float | None = None,
    cpus_per_actor: float = 1,
    num_threads: int | None = None,
    batch_size: int | None = None,
    rows_per_batch: int = 1024,
    tokenize: str = "auto",
    embedder_class: type = TextEmbedder,
):
    """Add `vector` and `truncated` columns to a Ray Dataset of texts with a pool of embedder actors.

    embedder: what loads the model, `TextEmbedder` keyword arguments (model, max_length, pooling,
    precision, trust_remote_code, allow_pickle; `resolve_embedder`). The rest is the pool (the config's `embedder.pool`):
    `actors`, `num_gpus`, `cpus_per_actor` (see `icc.ray_runtime.actor_pool`) and each actor's
    `num_threads` and `batch_size`; `rows_per_batch` rows go to an actor at a time, which sorts
    them by length and runs them in `batch_size` forward passes. tokenize: "stage" (CPU tasks
    before the actors, fused with reading, so that the actors only pad and run the model), "actor"
    (in the actors) or "auto" (stage when the actors hold GPUs). `embedder_class`: TextEmbedder or
    a subclass that adds columns.
    """
    check_embed_pool(batch_size, rows_per_batch, tokenize, actors=actors, num_gpus=num_gpus,
                     cpus_per_actor=cpus_per_actor, num_threads=num_threads)
    pool = actor_pool(actors, num_gpus, cpus_per_actor)
    precision = embedder.get("precision", "auto")
    if pool["num_gpus"] and precision in CPU_ONLY:
        raise ICCError(f"embedder.precision={precision} runs on the CPU only and the embedder actors hold GPUs: "
                       "set embedder.precision=auto or embedder.pool.num_gpus=0")
    # `resolve_embedder` guessed where the actors run from this machine's GPUs; where it took CPU actors for GPU
    # ones, "auto" would let each CPU pick (bf16 or float32): the key (and output.dir's manifest) cannot say which.
    if num_gpus is None and not pool["num_gpus"] and precision == "auto" and gpus_visible():
        raise ICCError("this machine sees a GPU but the Ray cluster has none for the embedder actors, so "
                       "embedder.precision was not resolved for their CPUs: set embedder.pool.num_gpus (0: on the "
                       "CPUs, 1: on GPU nodes the cluster is still starting) and output.overwrite=true")
    # A read block can hold a whole file (up to Ray Data's 128 MiB block target): cut it into
    # batches first, so that embedded rows reach the writer (and the shards) as they are done.
    ds = ds.repartition(target_num_rows_per_block=rows_per_batch)
    if tokenize == "stage" or (tokenize == "auto" and pool["num_gpus"]):
        options = {key: embedder[key] for key in ("max_length", "trust_remote_code") if key in embedder}
        ds = ds.map_batches(tokenize_batch, fn_kwargs={"model": embedder["model"], **options}, batch_size=rows_per_batch)
    return ds.map_batches(
        embedder_class,
        fn_constructor_kwargs={**embedder, "num_threads": num_threads, "batch_size": batch_size},
        batch_size=rows_per_batch,
        **pool,
    )
