"""What an input is made of, as short stable hashes: the files of a corpus path, and settings.

Stage outputs keyed by these (the bench cache, the resumable embed stage of `icc cluster`,
incremental partitions) are reused when, and only when, their input and settings are unchanged.
"""

import hashlib
import json
from pathlib import Path

from icc.data.corpus import list_files


def file_fingerprint(path: str) -> str:
    """sha256 over the names and bytes of the files that `path` (file, directory, glob) expands to."""
    digest = hashlib.sha256()
    for file in list_files(path)[0]:
        digest.update(Path(file).name.encode() + b"\0")
        _feed(digest, file)
    return digest.hexdigest()


def file_sha256(file) -> str:
    """sha256 of one file's bytes (hex)."""
    return _feed(hashlib.sha256(), file).hexdigest()


def _feed(digest, file):
    """`digest` updated with the bytes of `file`, read in blocks of 1 MiB."""
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def cache_key(**parts) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
