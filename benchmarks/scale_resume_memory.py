"""Driver memory of `icc cluster` resuming a run killed midway through embedding, against a first run.

The corpus and encoder of `scale_memory.py` (300k texts in Parquet files of 50k rows, the tiny
random BERT). A first run, SIGKILLed (its process group and every process it started) once
embed.json lists `--kill-at` of the rows whole; then the same command in a copy of the killed
run's directory, which resumes after the whole shards and runs to the end. The driver's RSS is
sampled every 0.2 s as in `scale_memory.py`, in both; metrics.json of the resumed run gives its
peak at the end of each stage (the embed stage's is the one to compare with the first run's).

    python benchmarks/scale_resume_memory.py --rows 300000 --name scale_resume_memory
    python benchmarks/scale_resume_memory.py --rows 300000 --name scale_resume_memory --reuse-cut --label after
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from scale_memory import RESULTS, ROOT, Sampler, build_corpus, driver_peaks, sampled_run, tiny_encoder

SHARD_ROWS = 16384
EXTRA = ["clusterer.k=100", "clusterer.n_init=1", "clusterer.max_iter=20", "clusterer.backend=ray",
         "embedder.max_length=64", "embedder.pool.batch_size=256", "embedder.pool.rows_per_batch=4096",
         f"output.shard_rows={SHARD_ROWS}"]


def command(corpus: Path, model: str, out: Path) -> list:
    return [Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={corpus}", "data.label_column=null",
            f"embedder.model={model}", f"output.dir={out}", "ray.progress_bars=false", "labeler=keywords",
            "report.enabled=false", *EXTRA]


def measured(args: list) -> dict:
    """Run `icc cluster` to its end; its driver's peak memory and what metrics.json says."""
    start = time.perf_counter()
    sampler = sampled_run(args)
    out = Path(next(a for a in args if str(a).startswith("output.dir=")).split("=", 1)[1])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_seconds": round(time.perf_counter() - start, 1), "stage_seconds": metrics["seconds"],
            "rows": metrics["rows"], "rows_embedded_this_run": metrics["rows_embedded_this_run"],
            "driver_peak_rss_mib_after_stage": metrics["driver_peak_rss_mib"], **driver_peaks(sampler)}


def killed(args: list, out: Path, rows: int, timeout: float = 3600) -> tuple[int, dict]:
    """Run `icc cluster` and SIGKILL it, with the local Ray it started, once embed.json lists
    `rows` rows whole: the rows it lists then, and the driver's peak memory until then."""
    shutil.rmtree(out, ignore_errors=True)
    job = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sampler = Sampler(job.pid)
    sampler.start()
    deadline, done = time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline and job.poll() is None and done < rows:
            try:
                done = sum(json.loads((out / "embed.json").read_text())["rows"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.2)
    finally:
        sampler.done.set()
        sampler.join()
        if job.poll() is None:
            family = [job.pid, *(p.pid for p in psutil.Process(job.pid).children(recursive=True))]
            os.killpg(job.pid, signal.SIGKILL)
            for pid in family:  # the local Ray's processes, where they left the group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        job.wait()
    if done < rows:
        raise SystemExit(f"the run ended or timed out before {rows} rows were whole ({done})")
    return done, driver_peaks(sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the rows whole when killed")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "scale")
    parser.add_argument("--name", default="scale_resume_memory")
    parser.add_argument("--label", default="before", help="key of this code's resume in the results")
    parser.add_argument("--reuse-cut", action="store_true", help="resume the killed run of an earlier call")
    args = parser.parse_args()
    model = str(tiny_encoder(args.work / "tiny-encoder"))
    corpus = build_corpus(args.rows, args.work / f"corpus-{args.rows}")
    results_path = RESULTS / f"{args.name}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    cut = args.work / f"resume-cut-{args.rows}"
    if not args.reuse_cut:
        results["killed_after_rows"], results["first_run_until_killed"] = killed(command(corpus, model, cut), cut,
                                                                                 int(args.kill_at * args.rows))
        print(json.dumps(results["first_run_until_killed"]), flush=True)
        results.update(rows=args.rows, model="tiny random BERT (1 layer, hidden 128)", overrides=EXTRA)
    resumed = args.work / f"resume-{args.label}-{args.rows}"
    shutil.rmtree(resumed, ignore_errors=True)
    shutil.copytree(cut, resumed)
    results[f"resume_{args.label}"] = measured(command(corpus, model, resumed))
    print(json.dumps(results[f"resume_{args.label}"]), flush=True)
    results_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
