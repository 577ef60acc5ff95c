"""The embed stage of `icc cluster`, resumable: its outputs are keyed by what they are made from.

The key hashes the input's fingerprint (the names and bytes of its files,
`icc.data.fingerprint.file_fingerprint`), the columns read and the embedder config. A run whose output
directory holds a complete stage with the same key skips it; one that finds the whole shards of a
run cut off (killed) with the same key embeds only the input rows after them
(`icc.data.embedded.resume_shards`); a different key (other data, another embedder) starts afresh.
"""

from pathlib import Path

from icc.data.corpus import read_corpus
from icc.data.embedded import Shards, resume_shards, write_embedded
from icc.data.fingerprint import cache_key, file_fingerprint
from icc.models.embedder import RUNTIME_SETTINGS, embed_dataset


def embed_key(path: str, columns: dict, embedder: dict, fingerprint: str | None = None) -> str:
    """Key of the embed stage: the files under `path` (their `fingerprint`), `columns`
    {text_column, id_column, label_column} and the `embedder` keyword arguments that shape the
    vectors (not its `RUNTIME_SETTINGS`: a re-run with more actors continues the same stage)."""
    vectors = {key: value for key, value in embedder.items() if key not in RUNTIME_SETTINGS}
    return cache_key(data=fingerprint or file_fingerprint(path), columns=columns, embedder=vectors)


def embed_corpus(path: str, columns: dict, embedder: dict, out_dir, shard_rows: int,
                 fingerprint: str | None = None) -> tuple[Shards, int]:
    """Read the corpus at `path`, embed it and write its shards to `out_dir`, or reuse what an
    earlier run with the same key wrote there (see the module docstring).

    columns: {text_column, id_column, label_column} for `read_corpus`; embedder: keyword arguments
    of `embed_dataset`; fingerprint: `file_fingerprint(path)` if the caller has it. Returns the
    complete shards and the input rows this call sent to the embedder.
    """
    key = embed_key(path, columns, embedder, fingerprint)
    shards = resume_shards(Path(out_dir), key)
    if shards.complete:
        return shards, 0
    done = shards.n_rows
    ds = read_corpus(path, columns["text_column"], columns.get("id_column"), columns.get("label_column"))
    if done:
        ds = ds.split_at_indices([done])[1]  # the rows after the whole shards (materializes the read texts)
    shards = write_embedded(embed_dataset(ds, **embedder), shards, shard_rows)
    return shards, shards.n_rows - done
