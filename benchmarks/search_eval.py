"""Does the cluster filter keep near-miss classes out of the results? (issue 5, ../shared/REFERENCE.md §3)

Each text of a labelled set is a query against all the others (its own row left out); a result is
relevant when it has the query's label. Precision@10 and nDCG@10 for unfiltered search, search in
the query's nearest cluster (and its two nearest), and each of the first two with pairwise LLM
reranking of the top 10 on a random subset of queries (default LLM SmolLM2-135M-Instruct). The
corpus is clustered by `icc cluster` (k = number of labels, k-means) as a user would; the queries
use the run's stored vectors, which is what embedding the same text again gives. Also times a
query on 100k random unit vectors. Writes Markdown + JSON to benchmarks/results/.

    python benchmarks/search_eval.py --data ../shared/data/text/banking77_test.csv ../shared/data/text/agnews_test.csv
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.csv

from icc.corpus.rerank import PairwiseJudge, PairwiseReranker
from icc.corpus.search import ClusterIndex, Searcher
from icc.models.hub import SMOLLM2

ROOT = Path(__file__).resolve().parents[1]
TOP = 10
METHODS = {"unfiltered": None, "cluster filter": 1, "2 nearest clusters": 2}
RERANKED = ["unfiltered", "cluster filter"]


def cluster_run(data: Path, k: int, out: Path) -> Path:
    """`icc cluster` on the labelled file, unless `out` already holds that run."""
    if not (out / "report.html").exists():
        subprocess.run(
            [Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={data}", "data.label_column=label",
             f"clusterer.k={k}", f"output.dir={out}", "ray.progress_bars=false"],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )
    return out


def scores(relevant: np.ndarray, n_relevant: int) -> tuple[float, float]:
    """P@10 and nDCG@10 of one ranked list of up to 10 relevance flags; n_relevant relevant texts exist."""
    discounts = 1 / np.log2(np.arange(2, TOP + 2))
    ideal = discounts[: min(TOP, n_relevant)].sum()
    return relevant.sum() / TOP, float((relevant * discounts[: len(relevant)]).sum() / ideal)


def retrieve(index: ClusterIndex, vectors: np.ndarray, i: int, clusters: int | None) -> np.ndarray:
    """Positions of the top 10 for query row i among the other rows."""
    searched = None if clusters is None else index.nearest_clusters(vectors[i], clusters)
    _, positions = index.search(vectors[i], TOP + 1, searched)
    return positions[positions != i][:TOP]


class CachedJudge(PairwiseJudge):
    """Asks the LLM each (query, A, B) prompt once: the filtered and unfiltered top 10 overlap."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache, self.computed = {}, 0

    def first_choice(self, query, pairs):
        new = list(dict.fromkeys(p for p in pairs if (query, *p) not in self.cache))
        if new:
            self.cache.update(((query, *p), v) for p, v in zip(new, super().first_choice(query, new)))
            self.computed += len(new)
        return np.array([self.cache[(query, *p)] for p in pairs])


def evaluate(data: Path, runs: Path, rerank_queries: int, judge: CachedJudge, seed: int) -> dict:
    table = pyarrow.csv.read_csv(data)
    labels_all = np.array(table["label"].to_pylist(), dtype=str)
    k = len(np.unique(labels_all))
    start = time.perf_counter()
    searcher = Searcher.load(cluster_run(data.resolve(), k, runs / data.stem))
    cluster_seconds = time.perf_counter() - start
    run = searcher.run
    labels = labels_all[run.rows]
    counts = dict(zip(*np.unique(labels, return_counts=True)))
    queries = np.flatnonzero([counts[label] > 1 for label in labels])
    results, ranked = {}, {}
    for name, clusters in METHODS.items():
        start = time.perf_counter()
        ranked[name] = [retrieve(searcher.index, run.vectors, i, clusters) for i in queries]
        seconds = time.perf_counter() - start
        per_query = np.array([scores(labels[top] == labels[i], counts[labels[i]] - 1) for i, top in zip(queries, ranked[name])])
        results[name] = {"p@10": per_query[:, 0].mean(), "ndcg@10": per_query[:, 1].mean(), "queries": len(queries),
                         "ms_per_query": 1000 * seconds / len(queries)}
    # The filter's ceiling: the share of a query's relevant texts inside its nearest cluster.
    own = run.cluster[queries]
    inside = [((labels == labels[i]) & (run.cluster == c)).sum() - 1 for i, c in zip(queries, own)]
    recall_in_cluster = float(np.mean([n / (counts[labels[i]] - 1) for n, i in zip(inside, queries)]))

    subset = np.random.default_rng(seed).choice(len(queries), min(rerank_queries, len(queries)), replace=False)
    reranker = PairwiseReranker(judge, max_calls=100)
    reranked = {}
    start, computed = time.perf_counter(), judge.computed
    for name in RERANKED:
        before, after = [], []
        for j in subset:
            i, top = queries[j], ranked[name][j]
            relevant = labels[top] == labels[i]
            order = reranker.rerank(run.texts([i])[0], run.texts(top))
            before.append(scores(relevant, counts[labels[i]] - 1))
            after.append(scores(relevant[order], counts[labels[i]] - 1))
        before, after = np.array(before), np.array(after)
        reranked[name] = {"p@10": before[:, 0].mean(), "ndcg@10": before[:, 1].mean(),
                          "reranked_p@10": after[:, 0].mean(), "reranked_ndcg@10": after[:, 1].mean(),
                          "queries": len(subset)}
    llm_seconds = time.perf_counter() - start
    print(f"{data.name}: {len(queries)} queries searched, {len(subset)} reranked in {llm_seconds:.0f} s", file=sys.stderr)
    return {"data": data.name, "rows": len(labels_all), "k": k, "cluster_run_seconds": round(cluster_seconds, 1),
            "acc": run.metrics.get("acc"), "relevant_share_in_query_cluster": recall_in_cluster,
            "search": results, "llm_rerank": reranked,
            "llm_prompts": judge.computed - computed, "llm_seconds": round(llm_seconds, 1)}


def latency(n: int = 100_000, dim: int = 384, k: int = 100, queries: int = 200, seed: int = 0) -> dict:
    """Median ms per query on n random unit vectors in k random clusters (the index built first)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    index = ClusterIndex(vectors, rng.integers(0, k, n), rng.normal(size=(k, dim)))
    result = {"vectors": n, "dim": dim, "clusters": k, "build_ms": 1000 * (time.perf_counter() - start)}
    for name, clusters in METHODS.items():
        times = []
        for i in rng.choice(n, queries, replace=False):
            start = time.perf_counter()
            searched = None if clusters is None else index.nearest_clusters(vectors[i], clusters)
            index.search(vectors[i], TOP, searched)
            times.append(time.perf_counter() - start)
        result[f"{name}_median_ms"] = 1000 * float(np.median(times))
        result[f"{name}_max_ms"] = 1000 * float(np.max(times))
    return result


def markdown(evaluations: list[dict], timing: dict, command: str) -> str:
    lines = ["# Cluster-filtered search: does the filter keep near-miss classes out?", "",
             "Each text is a query against the rest; relevant = same label. all-MiniLM-L6-v2, k-means with "
             "k = number of labels (`icc cluster`), exact cosine search (faiss).", ""]
    for e in evaluations:
        lines += [f"## {e['data']} ({e['rows']} texts, k={e['k']}, clustering ACC {e['acc']:.3f})", "",
                  "| search | queries | P@10 | nDCG@10 |", "|---|---|---|---|"]
        for name, r in e["search"].items():
            lines.append(f"| {name} | {r['queries']} | {r['p@10']:.3f} | {r['ndcg@10']:.3f} |")
        for name, r in e["llm_rerank"].items():
            lines.append(f"| {name}, subset | {r['queries']} | {r['p@10']:.3f} | {r['ndcg@10']:.3f} |")
            lines.append(f"| {name}, subset + LLM rerank | {r['queries']} | {r['reranked_p@10']:.3f} | {r['reranked_ndcg@10']:.3f} |")
        lines += ["", f"Share of a query's relevant texts inside its own cluster (the filter's ceiling on recall): "
                      f"{e['relevant_share_in_query_cluster']:.3f}. LLM: {e['llm_prompts']} prompts in {e['llm_seconds']} s.", ""]
    lines += ["## Query latency", "",
              f"{timing['vectors']:,} random unit vectors (dim {timing['dim']}) in {timing['clusters']} clusters, "
              f"index built in {timing['build_ms']:.0f} ms; per query (nearest centroids + top 10):", "",
              "| search | median ms | max ms |", "|---|---|---|"]
    for name in METHODS:
        lines.append(f"| {name} | {timing[f'{name}_median_ms']:.2f} | {timing[f'{name}_max_ms']:.2f} |")
    lines += ["", "Reranking reorders the retrieved top 10, so it cannot change P@10, only nDCG@10. Machine: 2 CPU "
              "cores, no GPU.", "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[ROOT.parent / "shared/data/text/banking77_test.csv", ROOT.parent / "shared/data/text/agnews_test.csv"])
    parser.add_argument("--rerank-queries", type=int, nargs="+", default=[20, 8], help="per data file")
    parser.add_argument("--llm", default=SMOLLM2)
    parser.add_argument("--llm-threads", type=int, default=1,
                        help="torch threads; 1 is far faster than 2 when other jobs share the 2 cores")
    parser.add_argument("--runs", type=Path, default=ROOT / "benchmarks/runs", help="icc cluster outputs, reused")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    judge = CachedJudge.load(args.llm, batch_size=16, num_threads=args.llm_threads)
    counts = args.rerank_queries + args.rerank_queries[-1:] * len(args.data)
    evaluations = [evaluate(data, args.runs, n, judge, args.seed) for data, n in zip(args.data, counts)]
    timing = latency()
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "search_eval"
    stem.with_suffix(".json").write_text(json.dumps({"evaluations": evaluations, "latency": timing, "llm": args.llm,
                                                     "llm_threads": args.llm_threads},
                                                    indent=2, default=float) + "\n")
    command = "python benchmarks/search_eval.py " + " ".join(sys.argv[1:])
    stem.with_suffix(".md").write_text(markdown(evaluations, timing, command.strip()))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
