"""Which checkpoints in output.dir/train this run wrote: a manifest of their files' sha256.

DeepSpeed's loader unpickles the files of the checkpoint it resumes from (optimizer and model
states are torch pickles), so `icc finetune trainer.resume=true` loads only what the run itself
saved. Before each checkpoint is reported to Ray Train, the workers hash the files of their parts
and rank 0 adds them to output.dir/checkpoints.json, `{checkpoint folder name: {relative file
path: sha256}}` (written atomically, before Ray Train registers the checkpoint, so every
checkpoint Ray could resume from has its entry). Before a resume, `verify_checkpoints` holds every
checkpoint folder and the one Ray Train would load to that record: a folder or file that is not
in it, or a file whose bytes changed, stops the run before any worker starts.
"""

import json
from pathlib import Path

from icc.data.fingerprint import file_sha256
from icc.errors import ICCError
from icc.files import read_json, write_json

MANIFEST = "checkpoints.json"  # in output.dir, beside the train/ folder it vouches for
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints, in the train/ folder


def file_hashes(folder) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file below `folder`."""
    folder = Path(folder)
    return {str(f.relative_to(folder)): file_sha256(f) for f in sorted(folder.rglob("*")) if f.is_file()}


def merge_parts(parts: list[dict[str, str]]) -> dict[str, str]:
    """The files of a checkpoint that Ray Train merges from the workers' parts ({path: sha256}
    each); ICCError when two parts hold one path with different bytes (which one lands is not known)."""
    merged: dict[str, str] = {}
    for part in parts:
        for path, digest in part.items():
            if merged.setdefault(path, digest) != digest:
                raise ICCError(f"checkpoint parts of two workers differ in {path}")
    return merged


def record_checkpoint(manifest, name: str, files: dict[str, str]) -> None:
    """Add checkpoint `name` with its `files` ({path: sha256}) to the manifest at `manifest`."""
    manifest = Path(manifest)
    entries = read_json(manifest) if manifest.exists() else {}
    write_json(manifest, {**entries, name: files})


def verify_checkpoints(run_dir, manifest) -> None:
    """ICCError unless every checkpoint folder in `run_dir` (output.dir/train), and the latest one
    that Ray Train's snapshot names, hold exactly the files the manifest records, byte for byte."""
    run_dir, manifest = Path(run_dir), Path(manifest)
    if not manifest.exists():
        raise ICCError(f"{run_dir} holds checkpoints but {manifest} does not vouch for them: "
                       "only checkpoints this run wrote are loaded (choose another output.dir)")
    entries = read_json(manifest)
    folders = {p.name: p for p in run_dir.iterdir() if p.is_dir()}
    latest = _latest_checkpoint(run_dir)
    for name, folder in sorted(folders.items()):
        if name not in entries:
            raise ICCError(f"{folder} is not a checkpoint this run wrote (not in {manifest}): refusing to load it")
        found, expected = file_hashes(folder), entries[name]
        changed = sorted(set(found) ^ set(expected)) or sorted(p for p in found if found[p] != expected[p])
        if changed:
            raise ICCError(f"checkpoint {folder} differs from what this run wrote ({changed[0]}): refusing to load it")
    if latest is not None and latest not in folders:
        raise ICCError(f"Ray Train's snapshot in {run_dir} names a checkpoint this run did not write: {latest!r}")


def _latest_checkpoint(run_dir: Path) -> str | None:
    """The folder name of the checkpoint Ray Train resumes from, as its snapshot names it (None: none)."""
    try:
        latest = json.loads((run_dir / SNAPSHOT).read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError, AttributeError):
        raise ICCError(f"cannot read Ray Train's snapshot {run_dir / SNAPSHOT}") from None
    return None if latest is None else str(latest.get("checkpoint_dir_name"))
