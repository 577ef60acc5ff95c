"""`icc cluster quality=best` against what a user does by hand, on every labelled text set, in one run.

By hand (the baseline of ../shared/BASELINES.md): all-MiniLM-L6-v2 through
`SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)`, then scikit-learn
`KMeans(k, n_init=10, random_state=0)`. quality=best: the same vectors, then the clusterer that
`icc cluster quality=best clusterer.k=<k>` builds (composed from icc/conf, its one set of defaults).
Also measured, to say what lost: its two steps alone (smoothing only: `self_rounds=0`; self-training
only: `rounds=0`) and spectral clustering on the kNN graph (`clusterer=spectral`).

Both start from the same vectors, so the encoder runs once per set: its seconds are cached with the
vectors (`--cache`, made on the first run) and added to the clustering seconds of each method; the
cost is (encode + cluster) / (encode + baseline k-means). k is the number of labels; labels only score.
Writes benchmarks/results/quality_mode.md and .json.

    OMP_NUM_THREADS=1 python benchmarks/quality_mode.py --subsample stackoverflow=6000 agnews_test=3000 \
        20newsgroups_test=2000
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from sklearn.cluster import KMeans

from icc.cluster import make_clusterer
from icc.config import CONFIG_DIR, to_kwargs
from icc.metrics import external_metrics

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name -> overrides of `icc cluster`, composed like the CLI's
    "quality=best": ["quality=best"],
    "smoothing only": ["quality=best", "clusterer.self_rounds=0"],
    "self-training only": ["quality=best", "clusterer.rounds=0"],
    "spectral (kNN graph)": ["clusterer=spectral", "clusterer.max_fit_rows=null"],
}


def clusterer(overrides: list[str], k: int):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("cluster", overrides=[*overrides, f"clusterer.k={k}"])
    return make_clusterer(**to_kwargs(cfg.clusterer))


def embeddings(frame: pd.DataFrame, name: str, cache: Path) -> tuple[np.ndarray, float]:
    """(n, 384) unit vectors of frame.text by `encode` and its seconds, cached under `cache`."""
    vectors, meta = cache / f"{name}.npy", cache / f"{name}.json"
    if vectors.exists() and json.loads(meta.read_text())["rows"] == len(frame):
        return np.load(vectors), json.loads(meta.read_text())["encode_seconds"]
    from sentence_transformers import SentenceTransformer

    from icc.models.hub import resolve_model
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    start = time.perf_counter()
    encoded = model.encode(frame["text"].astype(str).tolist(), batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    np.save(vectors, encoded.astype(np.float32))
    meta.write_text(json.dumps({"rows": len(frame), "encode_seconds": seconds}))
    return np.load(vectors), seconds


def scored(labels, predicted, seconds: float, **extra) -> dict:
    scores = external_metrics(labels, predicted)
    return {"acc": scores["acc"], "ari": scores["ari"], "nmi": scores["nmi"], "seconds": seconds, **extra}


def one_set(path: Path, rows: int | None, cache: Path) -> dict:
    frame = pd.read_csv(path)
    if rows and rows < len(frame):
        frame = frame.sample(rows, random_state=0)
    labels = frame["label"].to_numpy()
    k = len(np.unique(labels))
    vectors, encode_s = embeddings(frame, path.stem, cache)
    start = time.perf_counter()
    predicted = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors)
    result = {"data": path.name, "rows": len(frame), "of_rows": len(pd.read_csv(path)), "k": k,
              "encode_seconds": encode_s,
              "baseline": scored(labels, predicted, time.perf_counter() - start)}
    for method, overrides in METHODS.items():
        estimator = clusterer(overrides, k)
        start = time.perf_counter()
        predicted = estimator.fit_predict(vectors)
        result[method] = scored(labels, predicted, time.perf_counter() - start,
                                **({"adapt": estimator.adapt_} if hasattr(estimator, "adapt_") else {}))
        print(f"{path.stem:22s} {method:22s} acc {result[method]['acc']:.3f} (baseline {result['baseline']['acc']:.3f})"
              f" {result[method]['seconds']:.1f} s", flush=True)
    base_s = encode_s + result["baseline"]["seconds"]
    for method in METHODS:
        result[method]["cost"] = (encode_s + result[method]["seconds"]) / base_s
    return result


def table(results: list[dict]) -> str:
    lines = ["| data | rows | k | baseline ACC / ARI / NMI | quality=best ACC / ARI / NMI | ΔACC | encode s | "
             "k-means s | best s | cost | smoothing only ACC | self-training only ACC | spectral ACC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        b, q = r["baseline"], r["quality=best"]
        rows = f"{r['rows']:,}" + ("" if r["rows"] == r["of_rows"] else f" of {r['of_rows']:,}")
        lines.append(
            f"| {r['data']} | {rows} | {r['k']} | {b['acc']:.3f} / {b['ari']:.3f} / {b['nmi']:.3f} | "
            f"{q['acc']:.3f} / {q['ari']:.3f} / {q['nmi']:.3f} | {100 * (q['acc'] - b['acc']):+.1f} | "
            f"{r['encode_seconds']:.0f} | {b['seconds']:.1f} | {q['seconds']:.1f} | {q['cost']:.2f}x | "
            + " | ".join(f"{r[m]['acc']:.3f}" for m in list(METHODS)[1:]) + " |")
    mean = {m: np.mean([r[m]["acc"] - r["baseline"]["acc"] for r in results]) for m in METHODS}
    worst = {m: min(r[m]["acc"] - r["baseline"]["acc"] for r in results) for m in METHODS}
    lines += ["", "| method | mean ΔACC (points) | worst ΔACC | largest cost |", "|---|---|---|---|"]
    lines += [f"| {m} | {100 * mean[m]:+.1f} | {100 * worst[m]:+.1f} | {max(r[m]['cost'] for r in results):.2f}x |"
              for m in METHODS]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/text")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/icc/quality_bench")
    parser.add_argument("--subsample", nargs="*", default=[], metavar="STEM=ROWS",
                        help="a random sample (seed 0) of ROWS texts of the set STEM")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    subsample = {stem: int(rows) for stem, rows in (item.split("=") for item in args.subsample)}
    results = [one_set(path, subsample.get(path.stem), args.cache) for path in sorted(args.data.glob("*.csv"))]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "quality_mode.json").write_text(json.dumps(results, indent=2) + "\n")
    command = "OMP_NUM_THREADS=1 python benchmarks/quality_mode.py" + (
        f" --subsample {' '.join(args.subsample)}" if args.subsample else "")
    (args.results / "quality_mode.md").write_text(
        "# quality=best vs MiniLM + scikit-learn KMeans(n_init=10), every labelled text set\n\n"
        f"`{command}`, 2 shared CPU cores. encode s: `encode` once (cached, shared by both); k-means s, best s: "
        "the clustering alone; cost: (encode + best) / (encode + k-means).\n\n"
        + table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
