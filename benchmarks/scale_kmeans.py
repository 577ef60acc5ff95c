"""k-means on 1M x 384 vectors: ours over Ray blocks vs faiss and scikit-learn, time and inertia in one run.

The vectors: a Gaussian mixture of 2,000 components in 384 dimensions (component centres N(0, 1),
spread 0.7), unit-normalised like sentence embeddings, float32. Every method gets the same
vectors, k, seed 0, one initialisation and at most `--max-iter` Lloyd iterations (a bound: full
scikit-learn KMeans on 1M x 384 with k = 1,000 would take far longer on 2 cores); the inertia of
each result is computed the same way, over all the vectors (faiss exact nearest centroid);
times are medians of `--repeats` runs, the methods alternating.

- ours: `icc.cluster.KMeans(backend="ray").fit_blocks` over 16 blocks in the object store of a
  local Ray (2 CPUs): k-means++ seeding on a sample of max(10000, 40 k) rows, Lloyd on a sample of
  256 k rows (`points_per_centroid`), then passes over all rows until `tol`. Its time is the fit's;
  the `ray.put` of the blocks is timed apart (`put_seconds`, the last run's): in a pipeline the
  blocks are a Ray Dataset's, already in the object store (`icc.corpus.sharded.fit_shards`);
- in memory: `icc.cluster.KMeans(backend="faiss")` (the same samples, seeds and start, then the
  passes over all rows in one process by faiss.Kmeans; both stop early at `tol`), and
  `faiss.Kmeans` with its defaults (random seeds, 256 points per centroid);
- scikit-learn: `KMeans(n_init=1, max_iter)` as users call it (k-means++ on all rows: over an hour
  at k = 1,000 on 2 cores), the same seeded with k-means++ on a sample of max(10000, 40 k) rows
  like ours in memory (the same sample and k-means++ seeds, `sklearn_kmeans_sample_seeded`), and `MiniBatchKMeans(batch_size=4096, n_init=1, max_iter)`;
- faiss at equal inertia (`faiss_equal_inertia`): the fastest `faiss.Kmeans` configuration whose inertia is within
  0.1% of the best of the methods run before it. The ladder: its own random seeds, then ours' k-means++ seeds (the
  seeding timed with it), each training on 256, 512, 1024, ... points per centroid up to all rows, at most
  `--max-iter` iterations stopping at ours' `tol`; each seeding climbs until a rung is within 0.1% of the best so far.
  The first repeat climbs it (every rung tried is recorded under `ladder`), later repeats time its winner again.

    python benchmarks/scale_kmeans.py --k 100
    python benchmarks/scale_kmeans.py --k 100 --methods ours faiss sklearn_kmeans_sample_seeded faiss_defaults faiss_equal_inertia
    (--append adds the runs to those saved before: the repeats of one k in several sessions)
    python benchmarks/scale_kmeans.py --k 1000 --methods ours faiss faiss_defaults sklearn_kmeans_sample_seeded sklearn_minibatch
"""

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def mixture(n: int, dim: int, components: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(components, dim)).astype(np.float32)
    X = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        X[start:stop] = centres[rng.integers(0, components, stop - start)]
        X[start:stop] += 0.7 * rng.normal(size=(stop - start, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def inertia(X: np.ndarray, centroids: np.ndarray) -> float:
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    squared, _ = index.search(X, 1)
    return float(squared.astype(np.float64).sum())


def timed(fn):
    start = time.perf_counter()
    centroids = fn()
    return time.perf_counter() - start, centroids


def ladder(n: int, k: int) -> list[int]:
    """faiss's max_points_per_centroid from its default 256, doubling, up to all n rows."""
    rungs = [256]
    while rungs[-1] * k < n:
        rungs.append(min(2 * rungs[-1], -(-n // k)))
    return rungs


def run(X: np.ndarray, k: int, max_iter: int, methods: list[str], repeats: int, save, out: dict) -> dict:
    """Time `methods` `repeats` times, adding to `out` (an earlier run's methods, or {})."""
    import ray
    from sklearn.cluster import KMeans as SKMeans
    from sklearn.cluster import MiniBatchKMeans

    from icc.cluster import KMeans

    def ours():  # the fit's time; putting the blocks, which a pipeline's Ray Dataset already holds, apart
        put_seconds, blocks = timed(lambda: [ray.put(part) for part in np.array_split(X, 16)])
        model = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, backend="ray", random_state=0)
        seconds, _ = timed(lambda: model.fit_blocks(blocks, len(X)))
        return model.cluster_centers_, {"seconds": seconds, "put_seconds": round(put_seconds, 1),
                                        "iterations": model.n_iter_}

    def faiss_ours():
        model = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, backend="faiss", random_state=0).fit(X)
        return model.cluster_centers_, {"iterations": model.n_iter_}

    def faiss_default():
        km = faiss.Kmeans(X.shape[1], k, niter=max_iter, seed=0)
        km.train(X)
        return km.centroids, {}

    def sk_kmeans():
        model = SKMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=0).fit(X)
        return model.cluster_centers_, {"iterations": int(model.n_iter_)}

    def our_seeds():
        kmeans = KMeans(n_clusters=k)  # the seeding sample and k-means++ seeds of ours (both backends)
        return kmeans._seeds(X[kmeans._sample_rows(len(X), k)[0]], k, 0)

    def sk_kmeans_sample_seeded():
        model = SKMeans(n_clusters=k, init=our_seeds(), n_init=1, max_iter=max_iter).fit(X)
        return model.cluster_centers_, {"iterations": int(model.n_iter_)}

    def faiss_config(seeds: str, points_per_centroid: int):
        km = faiss.Kmeans(X.shape[1], k, niter=max_iter, seed=0, max_points_per_centroid=points_per_centroid,
                          early_stop_threshold=KMeans().tol)
        km.train(X, init_centroids=our_seeds() if seeds == "ours" else None)
        return km.centroids, {"iterations": len(km.iteration_stats)}

    winner = {key: v for key, v in out.get("faiss_equal_inertia", {}).items()
              if key in ("seeds", "max_points_per_centroid", "ladder")}

    def faiss_equal_inertia():
        if winner:  # later repeats: the first repeat's winner again
            centroids, extra = faiss_config(winner["seeds"], winner["max_points_per_centroid"])
            return centroids, {**extra, **winner}
        best = min(r["inertia"] for r in out.values())
        tried = []
        for seeds in ("faiss", "ours"):
            for rung in ladder(len(X), k):
                seconds, (centroids, extra) = timed(lambda: faiss_config(seeds, rung))
                tried.append({"seeds": seeds, "max_points_per_centroid": rung, "seconds": round(seconds, 1),
                              "inertia": round(inertia(X, centroids), 2), **extra, "centroids": centroids})
                print(k, "faiss ladder", {key: v for key, v in tried[-1].items() if key != "centroids"}, flush=True)
                best = min(best, tried[-1]["inertia"])
                if tried[-1]["inertia"] <= best * 1.001:
                    break
        fastest = min((t for t in tried if t["inertia"] <= best * 1.001), key=lambda t: t["seconds"])
        winner.update(seeds=fastest["seeds"], max_points_per_centroid=fastest["max_points_per_centroid"],
                      ladder=[{key: v for key, v in t.items() if key != "centroids"} for t in tried])
        return fastest["centroids"], {"seconds": fastest["seconds"], "iterations": fastest["iterations"], **winner}

    def sk_minibatch():
        model = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=1, max_iter=max_iter, random_state=0).fit(X)
        return model.cluster_centers_, {"iterations": int(model.n_iter_)}

    fns = {"ours": ours, "faiss": faiss_ours, "faiss_defaults": faiss_default, "sklearn_kmeans": sk_kmeans,
           "sklearn_kmeans_sample_seeded": sk_kmeans_sample_seeded, "sklearn_minibatch": sk_minibatch,
           "faiss_equal_inertia": faiss_equal_inertia}
    if "ours" in methods and not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    for _ in range(repeats):  # the methods alternate; each one's median time and last inertia
        for name in methods:
            seconds, (centroids, extra) = timed(fns[name])
            seconds = extra.pop("seconds", seconds)  # the ladder's winner: its own time, not the climb's
            runs = out.get(name, {}).get("seconds_each", []) + [round(seconds, 1)]
            loads = out.get(name, {}).get("load_each", []) + [round(os.getloadavg()[0], 1)]  # 1-min, at its end
            out[name] = {"seconds": round(float(np.median(runs)), 1), "seconds_each": runs, "load_each": loads,
                         "inertia": round(inertia(X, centroids), 2), **extra}
            best = min(r["inertia"] for r in out.values())
            for r in out.values():
                r["inertia_vs_best"] = round(r["inertia"] / best - 1, 5)
            print(k, name, out[name], flush=True)
            save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["ours", "faiss", "faiss_defaults", "sklearn_kmeans", "sklearn_kmeans_sample_seeded",
                                                     "sklearn_minibatch", "faiss_equal_inertia"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method; its median time is reported")
    parser.add_argument("--name", default="scale_kmeans")
    parser.add_argument("--append", action="store_true", help="add these runs to the ones saved under --name")
    args = parser.parse_args()
    X = mixture(args.rows, args.dim)
    path = RESULTS / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for k in args.k:
        key = f"{args.rows}x{args.dim} k={k}"

        def save(methods, key=key):
            results[key] = {"max_iter": args.max_iter, "methods": methods}
            path.write_text(json.dumps(results, indent=2) + "\n")

        earlier = results.get(key, {}).get("methods", {}) if args.append else {}
        run(X, k, args.max_iter, args.methods, args.repeats, save, dict(earlier))


if __name__ == "__main__":
    main()
