"""Where k-means' time goes on n x 384 vectors: seeding, the assignment pass and the reduction.

One Lloyd pass of ours (`icc.cluster.kmeans._partial_sums`'s work, in process: faiss's exact
nearest centroid, then the sparse members @ X sums) next to the same pass by scikit-learn
(`KMeans(init=seeds, max_iter=1)`) and faiss (`faiss.Kmeans(niter=1)`), and k-means++ seeding
on the sample that ours seeds from (as ours calls it, in float64, and on the float32 sample), on the vectors of `scale_kmeans.mixture`; also the nearest
centroid by a bfloat16 matrix product in torch (AMX on CPUs that have it) and the share of rows it
assigns elsewhere than the exact float32 search, as a candidate for the pass. Medians of
`--repeats`; the matrix-product FLOPs of a pass (2 n k d) against a measured float32 peak.

    python benchmarks/profile_kmeans.py --rows 200000 --k 100 1000
"""

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse
import torch
from scale_kmeans import mixture
from sklearn.cluster import KMeans as SKMeans
from sklearn.cluster import kmeans_plusplus

from icc.cluster import KMeans

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    X = mixture(args.rows, 384)
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    peak = 2 * 2048**3 / median_seconds(lambda: a @ a, 5)
    out = {"rows": args.rows, "dim": 384, "peak_fp32_tflops": peak / 1e12, "k": {}}
    for k in args.k:
        size = KMeans(n_clusters=k).seed_sample_size(len(X), k)
        sample = X[np.sort(np.random.default_rng(0).choice(len(X), size, replace=False))]
        seed_float32_s = median_seconds(lambda: kmeans_plusplus(sample, k, random_state=0), 1)
        seeds = KMeans(n_clusters=k)._seeds(sample, k, 0)
        seed_s = median_seconds(lambda: KMeans(n_clusters=k)._seeds(sample, k, 0), 1)
        index = faiss.IndexFlatL2(384)
        index.add(seeds)
        nearest = index.search(X, 1)[1][:, 0]
        search_s = median_seconds(lambda: index.search(X, 1), args.repeats)
        members = scipy.sparse.csr_matrix((np.ones(len(X)), (nearest, np.arange(len(X)))), shape=(k, len(X)))
        sums_s = median_seconds(lambda: (scipy.sparse.csr_matrix(
            (np.ones(len(X)), (nearest, np.arange(len(X)))), shape=(k, len(X))) @ X, np.bincount(nearest, minlength=k)),
            args.repeats)
        del members
        Xb, Cb = torch.from_numpy(X).bfloat16(), torch.from_numpy(seeds).bfloat16()
        half_norms = 0.5 * torch.from_numpy(seeds).square().sum(1)

        def bf16_nearest():
            return torch.cat([(Xb[i:i + 65536] @ Cb.T).float().sub_(half_norms).argmax(1)
                              for i in range(0, len(Xb), 65536)]).numpy()
        bf16_s = median_seconds(bf16_nearest, args.repeats)
        bf16_differs = float(np.mean(bf16_nearest() != nearest))
        sk_s = median_seconds(lambda: SKMeans(k, init=seeds, n_init=1, max_iter=1).fit(X), args.repeats)

        def faiss_pass():
            km = faiss.Kmeans(384, k, niter=1, max_points_per_centroid=len(X), min_points_per_centroid=1)
            km.train(X, init_centroids=seeds)
        faiss_s = median_seconds(faiss_pass, args.repeats)
        flops = 2 * len(X) * k * 384
        out["k"][k] = {"seed_sample": size, "kmeans_plusplus_seconds": seed_s, "kmeans_plusplus_on_float32_seconds": seed_float32_s,
                       "ours_pass": {"faiss_search_seconds": search_s, "sparse_sums_seconds": sums_s,
                                     "fraction_of_peak": flops / search_s / peak},
                       "bf16_torch_nearest_seconds": bf16_s, "bf16_rows_assigned_differently": bf16_differs,
                       "sklearn_one_iteration_seconds": sk_s, "faiss_kmeans_one_iteration_seconds": faiss_s}
        print(k, json.dumps(out["k"][k]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "profile_kmeans.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
