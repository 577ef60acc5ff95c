"""`icc cluster` against what a user does by hand, on the same texts in one run.

By hand: `SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)` with
all-MiniLM-L6-v2, then scikit-learn `KMeans(k, n_init=10, random_state=0)`.
Ours: `icc cluster` as a subprocess on a local Ray (start-up of the actor, reading and writing
Parquet included in the embed stage's seconds; `encode` is timed with its model loaded), once per
`--variant` (a name and icc overrides, e.g. "bf16 embedder.precision=bfloat16"). They alternate
`--repeats` times, so that all see the same machine; the table gives medians and ranges, icc's
stage seconds (metrics.json) and, from one more run per variant, where the embed stage's seconds
go (`benchmarks/embed_timeline.py`). `--rows`: a seeded sample of the corpus. Writes a Markdown
table and the raw numbers as JSON.

    python benchmarks/cluster_vs_sentence_transformers.py --data ../shared/data/text/agnews_test.csv
    python benchmarks/cluster_vs_sentence_transformers.py --data ../shared/data/text/stackoverflow.csv \
        --rows 5000 --variant "fp32 embedder.precision=float32" --variant "bf16 embedder.precision=bfloat16"
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans

from icc.metrics import external_metrics
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def by_hand(model: SentenceTransformer, texts: list[str], labels, k: int) -> dict:
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    predicted = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors)
    return {"embed_seconds": seconds, "texts_per_s": len(texts) / seconds, **external_metrics(labels, predicted)}


def ours(data: Path, k: int, out: Path, overrides: list[str]) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={data}", "data.label_column=label",
         f"clusterer.k={k}", f"output.dir={out}", "ray.progress_bars=false", *overrides],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    return {"job_seconds": time.perf_counter() - start, "embed_seconds": metrics["seconds"]["embed"],
            "stage_seconds": metrics["seconds"], **{key: metrics[key] for key in ("texts_per_s", "rows", "acc", "ari", "nmi")}}


def timeline(data: Path, overrides: list[str]) -> dict:
    """`benchmarks/embed_timeline.py` on `data` with the variant's embedder overrides, in a fresh process."""
    embedder = [o for o in overrides if o.startswith("embedder.")]
    line = subprocess.run([sys.executable, ROOT / "benchmarks/embed_timeline.py", "--data", data, *embedder],
                          check=True, cwd=ROOT, capture_output=True, text=True).stdout.splitlines()[-1]
    return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/text/agnews_test.csv")
    parser.add_argument("--rows", type=int, help="a seeded sample of this many rows (default: all)")
    parser.add_argument("--variant", action="append", help='"name [override ...]" of icc cluster (default: "default")')
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = {name: overrides for name, *overrides in (v.split() for v in args.variant or ["default"])}
    frame = pd.read_csv(args.data)
    name = args.data.stem
    with tempfile.TemporaryDirectory() as sample_dir:
        data = args.data.resolve()
        if args.rows and args.rows < len(frame):
            frame = frame.sample(args.rows, random_state=0)
            name, data = f"{name}_{args.rows}", Path(sample_dir) / f"{name}_{args.rows}.csv"
            frame.to_csv(data, index=False)
        k = frame["label"].nunique()
        model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
        hand, icc = [], {variant: [] for variant in variants}
        for _ in range(args.repeats):
            hand.append(by_hand(model, frame["text"].tolist(), frame["label"].to_numpy(), k))
            for variant, overrides in variants.items():
                with tempfile.TemporaryDirectory() as tmp:
                    icc[variant].append(ours(data, k, Path(tmp), overrides))
        timelines = {variant: timeline(data, overrides) for variant, overrides in variants.items()}
    ratios = {variant: [run["texts_per_s"] / hand_run["texts_per_s"] for hand_run, run in zip(hand, runs)]
              for variant, runs in icc.items()}
    result = {"data": name, "rows": len(frame), "k": k, "variants": variants, "sentence_transformers": hand,
              "icc": icc, "embed_timeline": timelines,
              "throughput_ratio": {variant: float(np.median(r)) for variant, r in ratios.items()},
              "throughput_ratios": ratios, "acc_difference": {v: runs[0]["acc"] - hand[0]["acc"] for v, runs in icc.items()}}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"cluster_vs_sentence_transformers_{name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    command = " ".join(["python benchmarks/cluster_vs_sentence_transformers.py", f"--data {args.data}",
                        *([f"--rows {args.rows}"] if args.rows else []),
                        *(f'--variant "{v}"' for v in args.variant or []), f"--repeats {args.repeats}"])
    table = "\n".join([
        f"# icc cluster vs sentence-transformers + scikit-learn: {name} ({len(frame)} rows, k={k})",
        "",
        f"{args.repeats} alternating runs of each; texts/s and seconds are medians, with the range in brackets.",
        "",
        "| | texts/s (embed) | embed s | ACC | ARI | NMI |",
        "|---|---|---|---|---|---|",
        _row("SentenceTransformer.encode(64) + KMeans(n_init=10)", hand),
        *(_row(f"icc cluster {' '.join([variant, *variants[variant]])} (Ray actor; start-up, read and write included)",
               runs) for variant, runs in icc.items()),
        "",
        *(f"- {variant}: throughput ratio icc / sentence-transformers median {result['throughput_ratio'][variant]:.2f} "
          f"(per run: {', '.join(f'{r:.2f}' for r in ratios[variant])}); ACC difference "
          f"{result['acc_difference'][variant]:+.3f}; rows written {runs[0]['rows']}; whole icc job incl. Ray start "
          f"{np.median([run['job_seconds'] for run in runs]):.1f} s" for variant, runs in icc.items()),
        "",
        "icc's stages (metrics.json seconds, medians):",
        "",
        _stage_table(icc),
        "",
        "Where the embed stage's seconds go (`benchmarks/embed_timeline.py`, one more run per variant: seconds",
        "from the stage's start to each event; forward: the actor's seconds in its batches):",
        "",
        _timeline_table(timelines),
        "",
        f"Command: `{command}`",
    ])
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)


def _stage_table(icc: dict) -> str:
    stages = list(next(iter(icc.values()))[0]["stage_seconds"])
    lines = ["| variant | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for variant, runs in icc.items():
        lines.append(f"| {variant} | " + " | ".join(
            f"{np.median([run['stage_seconds'][stage] for run in runs]):.1f}" for stage in stages) + " |")
    return "\n".join(lines)


def _timeline_table(timelines: dict) -> str:
    events = [key for key in next(iter(timelines.values())) if key not in ("rows", "batches")]
    lines = ["| variant | batches | " + " | ".join(events) + " |", "|---|---:|" + "---:|" * len(events)]
    for variant, times in timelines.items():
        lines.append(f"| {variant} | {times['batches']} | " + " | ".join(f"{times[e]:.2f}" for e in events) + " |")
    return "\n".join(lines)


def _row(name: str, runs: list[dict]) -> str:
    """A table row: median and range of texts/s and seconds; the quality of the first run (all runs
    cluster the same vectors with the same seed)."""
    def spread(key: str) -> str:
        values = [run[key] for run in runs]
        return f"{np.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"
    first = runs[0]
    return (f"| {name} | {spread('texts_per_s')} | {spread('embed_seconds')} "
            f"| {first['acc']:.3f} | {first['ari']:.3f} | {first['nmi']:.3f} |")


if __name__ == "__main__":
    main()
