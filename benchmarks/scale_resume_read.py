"""The read of a resumed embed stage alone: Ray's object store and the wait for the first rows, for
the rows after a cut at `--skip` of `scale_memory.py`'s corpus (Parquet files of 50k rows), read
as the embed stage reads them (`read_corpus(..., skip_rows)`, cut into 4,096-row blocks), against
the read the stage made before (`split_at_indices` on the whole read). The object store's use is
sampled every 0.2 s (`memory_summary`), on a Ray started for this script.

    python benchmarks/scale_resume_read.py --rows 300000 --skip 163840
"""

import argparse
import json
import re
import threading
import time
from pathlib import Path

import ray
from ray._private.internal_api import memory_summary
from scale_memory import RESULTS, ROOT, build_corpus

from icc.data.corpus import read_corpus
from icc.ray_runtime import start_ray


def plasma_peak(stop: threading.Event, peak: list) -> None:
    """Keep in peak[0] the most MiB the object store held, every 0.2 s until `stop`."""
    address = ray.get_runtime_context().gcs_address
    while not stop.is_set():
        used = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(address=address, stats_only=True))
        peak[0] = max(peak[0], int(used.group(1)) if used else 0)
        time.sleep(0.2)


def read_rest(corpus: Path, skip: int, way: str) -> dict:
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=plasma_peak, args=(stop, peak), daemon=True)
    sampler.start()
    start = time.perf_counter()
    if way == "split_at_indices":
        ds = read_corpus(str(corpus), "text").split_at_indices([skip])[1]
    else:
        ds = read_corpus(str(corpus), "text", skip_rows=skip)
    batches = iter(ds.repartition(target_num_rows_per_block=4096).iter_batches(batch_format="pyarrow", batch_size=None))
    rows = next(batches).num_rows
    first = time.perf_counter() - start
    rows += sum(batch.num_rows for batch in batches)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    return {"rows": rows, "seconds_to_first_rows": round(first, 1), "seconds": round(seconds, 1),
            "object_store_peak_mib": peak[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--skip", type=int, default=163_840)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "scale")
    args = parser.parse_args()
    corpus = build_corpus(args.rows, args.work / f"corpus-{args.rows}")
    start_ray(num_cpus=2, progress_bars=False)
    results = {"rows": args.rows, "skip": args.skip}
    for way in ("split_at_indices", "read_corpus(skip_rows)"):
        results[way] = read_rest(corpus, args.skip, way)
        print(way, json.dumps(results[way]), flush=True)
    (RESULTS / "scale_resume_read.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
