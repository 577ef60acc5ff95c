"""On-disk cache of what the bench computes once per input: embeddings and summaries.

An entry is a directory `<cache>/<kind>/<key>/` with a `meta.json`; an embeddings entry holds the
shards that `icc.data.embedded.write_embedded` writes (as in an `icc cluster` run), and its meta
the embedder, the dataset, seconds and peak memory of the run that made it. The key hashes what
determines the result, e.g. the embedder's vector settings (`EmbedderSpec.vector_params`) with
the dataset's fingerprint (the bytes of its files) and the columns read. Entries are written to a
temporary directory and renamed, so a crashed run leaves no half entry.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

from icc.data.corpus import list_files


def file_fingerprint(path: str) -> str:
    """sha256 over the names and bytes of the files that `path` (file, directory, glob) expands to."""
    digest = hashlib.sha256()
    for file in list_files(path)[0]:
        digest.update(Path(file).name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(**parts) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


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
