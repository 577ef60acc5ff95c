"""Where one embed stage's seconds go: a timeline of `icc.corpus.embed_stage` on a local Ray.

Runs the stage as `icc cluster` does (`read_corpus`, `embed_dataset`, `write_embedded`) in this
process, with the embedder actor stamping the wall clock at its start, after its imports (torch,
transformers), after loading the model and around each batch, and the driver at each batch it
writes. Prints, and writes as JSON to `--out`, the seconds from the stage's start:

    read planned      read_corpus returned (the driver's first pass: file listing, schema)
    actor started     the actor's __init__ began (Ray Data start, actor process start)
    imports done      torch and transformers imported in the actor
    model loaded      the model and tokenizer loaded, the actor ready
    first batch done  the actor's first `rows_per_batch` batch embedded
    forward seconds   the actor's seconds in its batches (tokenising, padding, forward passes)
    last batch done   the actor's last batch embedded
    written           every shard written and closed (the stage's end)

    python benchmarks/embed_timeline.py --data ../shared/data/text/banking77_test.csv [embedder.precision=float32]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from icc.corpus.embed_stage import embed_dataset
from icc.corpus.shards import write_embedded
from icc.data.corpus import read_corpus
from icc.models.embedder import TextEmbedder
from icc.ray_runtime import start_ray


class StampedEmbedder(TextEmbedder):
    """TextEmbedder that stamps time.time() at its start, imports, load and batches (class attribute
    `stamps`, a file the actor appends JSON lines to; the driver reads it after the stage)."""

    stamps = ""

    def __init__(self, **kwargs):
        self._stamp("actor started")
        import torch  # noqa: F401
        import transformers  # noqa: F401

        self._stamp("imports done")
        super().__init__(**kwargs)
        self._stamp("model loaded")

    def __call__(self, batch: dict) -> dict:
        start = time.time()
        batch = super().__call__(batch)
        self._stamp("batch done", seconds=time.time() - start, rows=len(batch["text"]))
        return batch

    def _stamp(self, event: str, **values) -> None:
        with open(self.stamps, "a") as f:
            f.write(json.dumps({"event": event, "t": time.time(), **values}) + "\n")


def timeline(data: str, embedder: dict, pool: dict) -> dict:
    """Seconds from the stage's start to each event of the module docstring, for the corpus `data`."""
    start_ray(progress_bars=False)
    with tempfile.TemporaryDirectory() as tmp:
        StampedEmbedder.stamps = str(Path(tmp) / "stamps.jsonl")
        start = time.time()
        ds = read_corpus(data, "text", None, "label")
        planned = time.time()
        shards = write_embedded(embed_dataset(ds, embedder, embedder_class=StampedEmbedder, **pool),
                                Path(tmp) / "out")
        written = time.time()
        stamps = [json.loads(line) for line in Path(StampedEmbedder.stamps).read_text().splitlines()]
    first = {}
    for stamp in stamps:
        first.setdefault(stamp["event"], stamp["t"])
    batches = [s for s in stamps if s["event"] == "batch done"]
    seconds = {"read planned": planned, "actor started": first["actor started"],
               "imports done": first["imports done"], "model loaded": first["model loaded"],
               "first batch done": batches[0]["t"], "last batch done": batches[-1]["t"], "written": written}
    return {"rows": shards.n_rows, "batches": len(batches), **{k: round(t - start, 2) for k, t in seconds.items()},
            "forward seconds": round(sum(b["seconds"] for b in batches), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="embedder.<key>=value or embedder.pool.<key>=value")
    args = parser.parse_args()
    embedder, pool = {"model": "all-MiniLM-L6-v2"}, {}
    for override in args.overrides:
        key, value = override.split("=", 1)
        group, name = (pool, key.removeprefix("embedder.pool.")) if key.startswith("embedder.pool.") else \
            (embedder, key.removeprefix("embedder."))
        group[name] = int(value) if value.isdigit() else value
    result = timeline(str(Path(args.data).resolve()), embedder, pool)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
