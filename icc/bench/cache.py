"""On-disk cache of what the bench computes once per input: embeddings and summaries.

An entry is a directory `<cache>/<kind>/<key>/` with a `meta.json`; an embeddings entry holds the
shards that `icc.data.embedded.write_embedded` writes (as in an `icc cluster` run), and its meta
the embedder, the dataset, seconds and peak memory of the run that made it. The key hashes what
determines the result, e.g. the embedder's vector settings (`EmbedderSpec.vector_params`) with
the dataset's fingerprint (the bytes of its files) and the columns read (`icc.data.fingerprint`).
Entries are written to a temporary directory and renamed, so a crashed run leaves no half entry.
"""

import os
import shutil
from pathlib import Path


def entry_path(cache_dir: Path, kind: str, key: str) -> Path:
    return Path(cache_dir) / kind / key


def new_entry(entry: Path) -> Path:
    """An empty temporary directory beside `entry`; `commit_entry` renames it into place."""
    partial = entry.with_name(f"{entry.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def commit_entry(partial: Path, entry: Path) -> None:
    try:
        partial.rename(entry)
    except OSError:  # another run cached it first
        shutil.rmtree(partial)
