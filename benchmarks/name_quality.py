"""Do cluster names say what a cluster is? (issue 20)

On labelled sets whose label names are words (BBC, AG News, 20 Newsgroups with "rec.sport.hockey"
spelled out as "recreation sport hockey"), a random sample of each set (2 shared CPUs: the full
sets take too long) is embedded with all-MiniLM-L6-v2 (first 128 tokens, cached on disk) and
clustered by k-means with k = number of labels. A cluster's name is a hit when its MiniLM
embedding is nearer (cosine) to the cluster's majority label name than to any other label name.
The share of hits for the keyword names of the old labeler (c-TF-IDF, unigrams), the new c-TF-IDF
(BM25 idf, reduced frequent words, 1-2 grams), the new c-TF-IDF re-ranked against the centroid
(MMR) and SmolLM2-135M names (prompted with the re-ranked keywords, keyword fall-back).
The labelers run in this process (`KeywordLabeler`, `ClusterNamer`: the code the pipeline runs on
its actors). Writes Markdown + JSON to benchmarks/results/ (a run of some `--sets` updates theirs).

    python benchmarks/name_quality.py --sample 800
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.cluster import KMeans

from icc.corpus.labeler import ClusterNamer, KeywordLabeler, combine
from icc.models.embedder import TextEmbedder
from icc.models.hub import SMOLLM2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "text"
SETS = {"bbc": "bbc.csv", "agnews": "agnews_test.csv", "20newsgroups": "20newsgroups_test.csv"}
MINILM = {"model": "all-MiniLM-L6-v2", "max_length": 128}  # 128 tokens: a text's start says its topic; 2x faster
# 20 Newsgroups' abbreviations as words; the other parts of a group name are words already
WORDS = {"comp": "computer", "rec": "recreation", "sci": "science", "soc": "society", "talk": "talk", "alt": "",
         "misc": "miscellaneous", "os": "operating system", "ms-windows": "windows", "sys": "system",
         "ibm": "ibm", "pc": "pc", "forsale": "for sale", "crypt": "cryptography", "med": "medicine",
         "windows": "windows", "x": "x window system", "mideast": "middle east", "sport": "sport"}
OLD = {"ngram_range": (1, 1), "min_df": 1, "reduce_frequent_words": False, "bm25_weighting": False, "rerank": False}
METHODS = {"keywords (old)": OLD, "c-TF-IDF": {"rerank": False}, "c-TF-IDF + re-ranking": {}}


def label_words(label: str) -> str:
    """A label name as words: "rec.sport.hockey" -> "recreation sport hockey", "Sci/Tech" -> "sci tech"."""
    parts = label.replace("/", ".").split(".")
    return " ".join(w for w in (WORDS.get(p.lower(), p.lower()) for p in parts) if w)


def embedded(name: str, texts: list[str], encoder: TextEmbedder, cache: Path) -> np.ndarray:
    """(n, 384) MiniLM vectors of `texts`, from `cache` when a run embedded the same sample."""
    path = cache / f"{name}_{len(texts)}_{MINILM['max_length']}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, encoder.embed(texts))
    return np.load(path)


def hits(names: list[str | None], majority: list[int], label_vectors: np.ndarray, encoder: TextEmbedder) -> list[bool]:
    """Per cluster: does its name rank its majority label first among the label names?"""
    vectors = encoder.embed([n or "" for n in names])
    return [bool(n) and int(np.argmax(label_vectors @ v)) == m for n, v, m in zip(names, vectors, majority)]


def measure(name: str, sample: int, encoder: TextEmbedder, namer: ClusterNamer, cache: Path) -> dict:
    table = pd.read_csv(DATA / SETS[name]).dropna()  # 20 Newsgroups' texts hold newlines
    if len(table) > sample:
        table = table.sample(sample, random_state=0)
    texts, labels = table["text"].astype(str).tolist(), table["label"].astype(str).to_numpy()
    vectors = embedded(name, texts, encoder, cache)
    label_names = sorted(set(labels))
    label_vectors = encoder.embed([label_words(x) for x in label_names])
    k = len(label_names)
    kmeans = KMeans(k, n_init=10, random_state=0).fit(vectors)
    centroids = kmeans.cluster_centers_
    distance = np.linalg.norm(vectors - centroids[kmeans.labels_], axis=1)
    members = [np.flatnonzero(kmeans.labels_ == c) for c in range(k)]
    members = [idx[np.argsort(distance[idx], kind="stable")] for idx in members]
    cluster_texts = [[texts[i] for i in idx[:500]] for idx in members]
    majority = [label_names.index(max(label_names, key=lambda x: (labels[idx] == x).sum())) for idx in members]
    result = {"texts": len(texts), "k": k, "majority": [label_names[m] for m in majority], "methods": {}}
    for method, params in METHODS.items():
        start = time.perf_counter()
        named = KeywordLabeler(**params, embedder=MINILM).label(cluster_texts, centroids)
        seconds = time.perf_counter() - start
        result["methods"][method] = {"names": named.names, "hits": hits(named.names, majority, label_vectors, encoder),
                                     "seconds": round(seconds, 2)}
    keywords = KeywordLabeler(embedder=MINILM).label(cluster_texts, centroids)
    start = time.perf_counter()
    batch = pa.table({"texts": [t[:5] for t in cluster_texts],
                      "keywords": [", ".join(words) for words in keywords.representation]})
    named = combine(keywords, namer(batch).column("name").to_pylist())
    result["methods"]["LLM (SmolLM2-135M)"] = {"names": named.names, "fell_back": named.fell_back,
                                               "hits": hits(named.names, majority, label_vectors, encoder),
                                               "seconds": round(time.perf_counter() - start, 2)}
    for entry in result["methods"].values():
        entry["share"] = round(sum(entry["hits"]) / k, 3)
    return result


def markdown(results: dict, sample: int) -> str:
    lines = ["# Cluster names: does a name rank its cluster's majority label first?", "",
             "all-MiniLM-L6-v2 vectors, k-means (k = number of labels); a hit: the name's embedding is nearest "
             "its majority label's name among all label names. Label names as words (20 Newsgroups' "
             f"abbreviations spelled out). At most {sample:,} texts per set (a random sample, seed 0), "
             "500 member texts per cluster for the keywords, 5 for the LLM.", "",
             "| names | " + " | ".join(f"{n} (k={r['k']}, {r['texts']:,} texts)" for n, r in results.items()) + " |",
             "|---|" + "---|" * len(results)]
    for method in next(iter(results.values()))["methods"]:
        cells = [f"{r['methods'][method]['share']:.2f} ({sum(r['methods'][method]['hits'])}/{r['k']})"
                 for r in results.values()]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    for name, r in results.items():
        lines += ["", f"## {name}", "", "| majority label | " + " | ".join(r["methods"]) + " |",
                  "|---|" + "---|" * len(r["methods"])]
        for c, label in enumerate(r["majority"]):
            lines.append(f"| {label} | " + " | ".join(
                f"{m['names'][c]}{'' if m['hits'][c] else ' ✗'}" for m in r["methods"].values()) + " |")
        fell = r["methods"]["LLM (SmolLM2-135M)"]["fell_back"]
        lines.append(f"\nLLM names that fell back to the keywords: {fell or 'none'}.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--sample", type=int, default=800, help="texts per set at most (a random sample)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "icc" / "name_quality")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "name_quality")
    args = parser.parse_args()
    encoder = TextEmbedder(**MINILM)
    namer = ClusterNamer(SMOLLM2)
    json_path = args.out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.exists() else {}  # other sets' results stay
    for name in args.sets:  # written after each set: a cut-off run keeps what it measured
        results[name] = measure(name, args.sample, encoder, namer, args.cache)
        json_path.write_text(json.dumps(results, indent=1))
        args.out.with_suffix(".md").write_text(markdown(results, args.sample))
    print(markdown(results, args.sample))


if __name__ == "__main__":
    main()
