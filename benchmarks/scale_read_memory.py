"""Heap of the Ray workers that read a corpus, against the corpus size: the read stage of
`icc cluster` alone (`read_corpus` and the embed stage's cut into `rows_per_batch` blocks).

Corpora of 1M x R rows: the files of `scale_memory.py`'s 1M corpus (20 Parquet files of 50k rows),
linked R times. Every 0.2 s each Ray worker's RssAnon (its own heap, not the object-store pages it
maps) is sampled; the table names each worker by the task it ran at its peak.

    python benchmarks/scale_read_memory.py --repeat 1 2 4
"""

import argparse
import json
import threading
import time
from pathlib import Path

import psutil
import ray
from scale_memory import RESULTS, ROOT, build_corpus, record_worker, rss_parts

from icc.data.corpus import read_corpus


def worker_heap_peaks(stop: threading.Event, peaks: dict) -> None:
    """Fill `peaks` (see `record_worker`) for this machine's Ray workers, every 0.1 s."""
    last_task = {}
    while not stop.is_set():
        for process in psutil.process_iter(["cmdline"]):
            try:
                name = (process.info["cmdline"] or [""])[0]
                if name.startswith("ray::"):
                    parts = rss_parts(process.pid)
                    record_worker(peaks, last_task, process.pid, name, sum(parts.values()), parts.get("RssAnon", 0))
            except (psutil.Error, FileNotFoundError):
                continue
        time.sleep(0.1)


def read_once(corpus: Path, rows_per_batch: int) -> dict:
    peaks, stop = {}, threading.Event()
    sampler = threading.Thread(target=worker_heap_peaks, args=(stop, peaks), daemon=True)
    sampler.start()
    start = time.perf_counter()
    ds = read_corpus(str(corpus), "text").repartition(target_num_rows_per_block=rows_per_batch)
    rows = sum(batch.num_rows for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    readers = sorted((heap for task, _, heap in peaks.values() if "ReadFiles" in task), reverse=True)
    return {"rows": rows, "seconds": round(seconds, 1), "read_tasks_rows": _read_task_rows(ds.stats()),
            "reader_heap_peaks_gib": [round(heap / 2**30, 3) for heap in readers]}


def _read_task_rows(stats: str) -> str:
    """The "Output rows per task" line of the read operator in `Dataset.stats()`."""
    read = next(part for part in stats.split("Operator ") if "ReadFiles" in part.partition("\n")[0]
                and "rows per task" in part)
    return next(line.strip("* ") for line in read.splitlines() if "Output rows per task" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "scale")
    parser.add_argument("--rows-per-batch", type=int, default=4096)
    args = parser.parse_args()
    files = sorted(build_corpus(1_000_000, args.work / "corpus-1000000").glob("*.parquet"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    results = {}
    for repeat in args.repeat:
        corpus = args.work / f"read-corpus-x{repeat}"
        corpus.mkdir(parents=True, exist_ok=True)
        for i in range(repeat * len(files)):
            link = corpus / f"part-{i:05d}.parquet"
            if not link.exists():
                link.symlink_to(files[i % len(files)].resolve())
        results[str(repeat * 1_000_000)] = result = read_once(corpus, args.rows_per_batch)
        print(json.dumps(result), flush=True)
    (RESULTS / "scale_read_memory.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
