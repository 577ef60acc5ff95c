"""`icc cluster` on 100k, 300k and 1M texts: wall time per stage and peak memory of the driver and workers.

The corpus: distinct texts recombined from the sentences of the shared corpora (AG News, 20
Newsgroups, StackOverflow, BBC, Banking77), 2-4 sentences each, in Parquet files of 50k rows.
The encoder: by default a tiny randomly initialised BERT (1 layer, hidden 128, MiniLM's tokenizer)
saved to a local directory, so that a million texts embed in minutes on 2 CPU cores; the numbers
then measure the pipeline (reading, shards, k-means, assignment), not a real model's speed.
`--model all-MiniLM-L6-v2` measures the real encoder instead.

Memory: every 0.2 s the resident set size (RSS) of the driver (the `icc cluster` process) and of
each Ray process it started (workers, raylet, GCS). The object store is shared memory that the
raylet and the workers map; a process's RSS counts the pages of it that it has touched, so the
driver's RSS is also split into its own heap (RssAnon), mapped files (RssFile: libraries) and
object-store pages (RssShmem), with the split over time in the JSON.

    python benchmarks/scale_memory.py --rows 100000 300000 1000000
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "text"
SOURCES = ["agnews_test.csv", "20newsgroups_test.csv", "stackoverflow.csv", "bbc.csv", "banking77_test.csv"]
RESULTS = ROOT / "benchmarks" / "results"


def sentences() -> list[str]:
    pool = set()
    for name in SOURCES:
        for text in pacsv.read_csv(TEXT / name, parse_options=pacsv.ParseOptions(newlines_in_values=True))["text"].to_pylist():
            for s in re.split(r"(?<=[.!?])\s+", " ".join(str(text).split())):
                if 20 <= len(s) <= 300:
                    pool.add(s)
    return sorted(pool)


def build_corpus(rows: int, out: Path, seed: int = 0, file_rows: int = 50_000) -> Path:
    """`rows` distinct texts of 2-4 pooled sentences in Parquet files under `out` (built once)."""
    if (out / "_done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    pool = np.array(sentences(), dtype=object)
    rng = np.random.default_rng(seed)
    seen, written = set(), 0
    while written < rows:
        n = min(file_rows, rows - written)
        texts = []
        while len(texts) < n:
            picks = rng.integers(0, len(pool), size=rng.integers(2, 5))
            key = tuple(picks.tolist())
            if key not in seen:
                seen.add(key)
                texts.append(" ".join(pool[picks]))
        pq.write_table(pa.table({"text": texts}), out / f"part-{written // file_rows:05d}.parquet")
        written += n
    (out / "_done").touch()
    return out


def tiny_encoder(out: Path, hidden: int = 128) -> Path:
    """A randomly initialised 1-layer BERT with MiniLM's tokenizer, saved with save_pretrained."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from icc.models.hub import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def record_worker(workers: dict, last_task: dict, pid: int, name: str, rss: int, heap: int) -> None:
    """Keep in `workers` {pid: (task at the heap's peak, peak RSS, peak RssAnon)} one sample of a Ray
    worker. Its title names the task it runs, or ray::IDLE between tasks: a peak is put on the last
    task the worker was seen running (`last_task`: pid -> that task)."""
    task = last_task[pid] = name if name != "ray::IDLE" else last_task.get(pid, name)
    peak_task, peak_rss, peak_heap = workers.get(pid, (task, 0, 0))
    workers[pid] = (task if heap > peak_heap else peak_task, max(rss, peak_rss), max(heap, peak_heap))


def rss_parts(pid: int) -> dict[str, int]:
    """RSS of a process in bytes, split as /proc/<pid>/status does: RssAnon (its own heap),
    RssFile (mapped files: libraries) and RssShmem (shared memory: the pages of Ray's object
    store that it has mapped and touched, which the object store owns and bounds)."""
    parts = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("RssAnon", "RssFile", "RssShmem")):
                name, value = line.split(":")
                parts[name] = int(value.split()[0]) * 1024
    return parts


class Sampler(threading.Thread):
    """Peak RSS of a process and of each of its descendants, sampled every `every` seconds; for
    the process itself also its RSS parts (`rss_parts`) over time."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.every, self.done = psutil.Process(pid), every, threading.Event()
        self.driver = 0
        self.driver_parts: list[tuple[float, dict]] = []  # (seconds since start, rss_parts)
        self.workers: dict[int, tuple[str, int, int]] = {}  # see record_worker
        self.last_task: dict[int, str] = {}
        self.ray_total = 0

    def run(self):
        start = time.perf_counter()
        while not self.done.is_set():
            try:
                self.driver = max(self.driver, self.root.memory_info().rss)
                parts = rss_parts(self.root.pid)
                if parts:  # none once the process has exited
                    self.driver_parts.append((time.perf_counter() - start, parts))
                total = 0
                for child in self.root.children(recursive=True):
                    try:
                        rss, name = child.memory_info().rss, " ".join(child.cmdline()[:1])[:60]
                        anon = rss_parts(child.pid).get("RssAnon", 0)
                    except (psutil.Error, FileNotFoundError):
                        continue
                    total += rss
                    record_worker(self.workers, self.last_task, child.pid, name, rss, anon)
                self.ray_total = max(self.ray_total, total)
            except (psutil.Error, FileNotFoundError):
                pass
            time.sleep(self.every)


def sampled_run(command: list) -> Sampler:
    """Run `command` (an `icc cluster` command line) to its end with a `Sampler` on its process;
    SystemExit with the end of its output if it fails."""
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(job.pid)
    sampler.start()
    log, _ = job.communicate()
    sampler.done.set()
    sampler.join()
    if job.returncode != 0:
        raise SystemExit(f"icc cluster failed:\n{log[-3000:]}")
    return sampler


def driver_peaks(sampler: Sampler) -> dict:
    """The driver's peak RSS and peak RSS parts in GiB, and its parts every 25th sample."""
    gib = 2**30
    return {
        "driver_peak_rss_gib": round(sampler.driver / gib, 3),
        **{f"driver_peak_{name.lower()}_gib": round(max(p[name] for _, p in sampler.driver_parts) / gib, 3)
           for name in ("RssAnon", "RssFile", "RssShmem")},
        "driver_rss_over_time": [(round(t, 1), {name: round(v / gib, 3) for name, v in p.items()})
                                 for t, p in sampler.driver_parts[::25]],
    }


def run_one(corpus: Path, model: str, out: Path, extra: list[str]) -> dict:
    command = [Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={corpus}", "data.label_column=null",
               f"embedder.model={model}", f"output.dir={out}", "ray.progress_bars=false", "labeler=keywords",
               "report.enabled=false", *extra]
    shutil.rmtree(out, ignore_errors=True)  # a complete embed stage there would be reused, not measured
    start = time.perf_counter()
    sampler = sampled_run(command)
    metrics = json.loads((out / "metrics.json").read_text())
    workers = {pid: peaks for pid, peaks in sampler.workers.items() if peaks[0].startswith("ray::")}
    gib = 2**30
    return {
        "rows": metrics["rows"], "dim": json.loads((out / "run.json").read_text())["embedder"]["dim"],
        "wall_seconds": round(time.perf_counter() - start, 1), "stage_seconds": metrics["seconds"],
        "texts_per_s": metrics["texts_per_s"], "fit": metrics["fit"], "k": metrics["k"],
        **driver_peaks(sampler),
        "worker_peak_rss_gib": round(max((p for _, p, _ in workers.values()), default=0) / gib, 3),
        "worker_peak_rssanon_gib": round(max((a for _, _, a in workers.values()), default=0) / gib, 3),
        "worker_processes": len(workers),
        "all_ray_processes_peak_rss_gib": round(sampler.ray_total / gib, 3),
        "largest_workers": sorted(((name, round(p / gib, 3), round(a / gib, 3)) for name, p, a in workers.values()),
                                  key=lambda x: -x[2])[:3],  # (name at the heap peak, peak RSS, peak RssAnon)
        "embeddings_gib_on_disk": round(sum(f.stat().st_size for f in (out / "embeddings.parquet").glob("*")) / gib, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--model", default=None, help="encoder (default: the tiny random BERT)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "scale")
    parser.add_argument("--name", default="scale_memory")
    parser.add_argument("overrides", nargs="*", help="more icc cluster overrides")
    args = parser.parse_args()
    model = args.model or str(tiny_encoder(args.work / "tiny-encoder"))
    extra = ["clusterer.k=100", "clusterer.n_init=1", "clusterer.max_iter=20", "clusterer.backend=ray",
             "embedder.max_length=64", "embedder.pool.batch_size=256", "embedder.pool.rows_per_batch=4096", *args.overrides]
    results_path = RESULTS / f"{args.name}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for rows in args.rows:
        corpus = build_corpus(rows, args.work / f"corpus-{rows}")
        result = run_one(corpus, model, args.work / f"run-{rows}", extra)
        result.update(model="tiny random BERT (1 layer, hidden 128)" if args.model is None else args.model, overrides=extra)
        results[str(rows)] = result
        print(json.dumps(result), flush=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
