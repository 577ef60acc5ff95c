"""A small corpus end to end: `icc cluster` against the same job by hand, side by side in one run.

By hand: a fresh Python process that imports sentence-transformers and scikit-learn, reads the CSV
with pandas, loads all-MiniLM-L6-v2, `encode(batch_size=64, normalize_embeddings=True)` and
`KMeans(k, n_init=10, random_state=0)`: what a user types instead of `icc cluster`. Ours: `icc
cluster` as a user runs it (its defaults: a new local Ray, keyword names, report.html), stdout
and stderr piped. Both are timed from process start to exit; they alternate `--repeats` times so
that both see the same machine, and the table gives medians with ranges, the by-hand stages, and
icc's stages from its metrics.json ("start-up": from process start to the embed stage: imports,
config, checks, Ray start; "report and exit": the job's seconds after its last stage, report.html,
summary and Ray's shutdown included).

    python benchmarks/startup_small_corpus.py --data ../shared/data/text/cstr.csv [--icc embedder.precision=float32]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

BY_HAND = """
import json, sys, time
start = time.perf_counter()
import pandas as pd
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans
from icc.models.hub import resolve_model
imported = time.perf_counter()
frame = pd.read_csv(sys.argv[1])
model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
loaded = time.perf_counter()
vectors = model.encode(frame["text"].tolist(), batch_size=64, normalize_embeddings=True)
encoded = time.perf_counter()
KMeans(n_clusters=int(sys.argv[2]), n_init=10, random_state=0).fit_predict(vectors)
done = time.perf_counter()
print(json.dumps({"imports": imported - start, "read_and_load": loaded - imported, "encode": encoded - loaded,
                  "kmeans": done - encoded}))
"""


def by_hand(data: Path, k: int) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", BY_HAND, str(data), str(k)], check=True, capture_output=True,
                            text=True, cwd=ROOT)
    return {"seconds": time.perf_counter() - start, "stages": json.loads(result.stdout.splitlines()[-1])}


def ours(data: Path, k: int, out: Path, overrides: list[str]) -> dict:
    start = time.perf_counter()
    result = subprocess.run([Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={data}",
                             "data.label_column=label", f"clusterer.k={k}", f"output.dir={out}", *overrides],
                            check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    stages = json.loads((out / "metrics.json").read_text())["seconds"]
    return {"seconds": seconds, "stages": stages, "output_lines": len((result.stdout + result.stderr).splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default in (("--data", Path, ROOT.parent / "shared/data/text/cstr.csv"),
                                ("--results", Path, ROOT / "benchmarks/results"), ("--repeats", int, 3)):
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--icc", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="more `icc cluster` overrides, e.g. embedder.precision=float32")
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    k = frame["label"].nunique()
    hand, icc, load = [], [], []
    for _ in range(args.repeats):
        load.append(os.getloadavg()[0])  # the machine is shared: its 1-minute load average as each pair starts
        hand.append(by_hand(args.data.resolve(), k))
        with tempfile.TemporaryDirectory() as tmp:
            icc.append(ours(args.data.resolve(), k, Path(tmp), args.icc))
    ratios = [mine["seconds"] / theirs["seconds"] for theirs, mine in zip(hand, icc)]
    table = "\n".join([
        f"# A small corpus end to end: icc cluster vs by hand, {args.data.name} ({len(frame)} rows, k={k})",
        "",
        f"{args.repeats} alternating runs of each, process start to exit; medians, range in brackets.",
        "",
        "| | end to end s | stages (median s) |",
        "|---|---|---|",
        f"| by hand: sentence-transformers encode(64) + KMeans(n_init=10) | {_spread([r['seconds'] for r in hand])} "
        f"| {_stages(hand)} |",
        f"| icc cluster (new local Ray, keyword names, report.html{''.join(', ' + o for o in args.icc)}) "
        f"| {_spread([r['seconds'] for r in icc])} "
        f"| {_stages(icc, rest='report and exit')} |",
        "",
        f"icc / by hand: median {np.median(ratios):.2f}x (per pair: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"lines icc printed (piped): {', '.join(str(r['output_lines']) for r in icc)}; "
        f"load average (1 min) as each pair started: {', '.join(f'{x:.1f}' for x in load)} "
        f"on {os.cpu_count()} cores.",
        "",
        f"Command: `python benchmarks/startup_small_corpus.py --data {args.data} --repeats {args.repeats}"
        f"{''.join(' --icc ' + o for o in args.icc)}`",
    ])
    result = {"data": args.data.name, "rows": len(frame), "k": k, "icc_overrides": args.icc, "by_hand": hand, "icc": icc,
              "load_average": load,
              "ratio": float(np.median(ratios)), "ratios": ratios}
    args.results.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2)), (".md", table)):
        (args.results / f"startup_small_corpus_{args.data.stem}{suffix}").write_text(text + "\n")
    print(table)


def _spread(values: list[float]) -> str:
    return f"{np.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"


def _stages(runs: list[dict], rest: str | None = None) -> str:
    """Median seconds per stage; with `rest`, then the job's seconds outside its stages under that name."""
    names = list(runs[0]["stages"])
    parts = [f"{name} {np.median([r['stages'][name] for r in runs]):.1f}" for name in names]
    if rest:
        parts.append(f"{rest} {np.median([r['seconds'] - sum(r['stages'].values()) for r in runs]):.1f}")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
