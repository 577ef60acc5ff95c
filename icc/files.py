"""Writing files so that a reader never sees half of one, and reading back JSON with one-line errors."""

import contextlib
import errno
import json
import os
from pathlib import Path

from icc.errors import ICCError, root_message


def write_atomic(path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it and rename it over `path`: a
    reader (or a run killed midway) sees the old file or the new one, never part of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk that filled up keeps the old file and no part of the new one
        raise


def write_json(path, obj) -> None:
    """`obj` as indented JSON, atomically (`write_atomic`); values JSON lacks are written with str()."""
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path) -> dict:
    """A JSON file as a dict; ICCError if it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ICCError(f"missing {path}") from None
    except json.JSONDecodeError as e:
        raise ICCError(f"{path} is not valid JSON: {e}") from None


@contextlib.contextmanager
def disk_full_as_error(directory):
    """Turn a write that found no space left on the device (ENOSPC, as Python, pyarrow or a Ray
    task raised it) while the block runs into ICCError naming the file (or `directory`, where
    the error names none)."""
    try:
        yield
    except Exception as e:
        message = root_message(e)
        if getattr(e, "errno", None) != errno.ENOSPC and os.strerror(errno.ENOSPC) not in message:
            raise
        where = getattr(e, "filename", None) or directory
        raise ICCError(f"no space left on the device to write {where} ({message}): free space there and run "
                       f"the same command again, which resumes") from None
