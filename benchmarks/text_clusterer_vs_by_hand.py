"""icc.TextClusterer next to the same job by hand (sentence-transformers + scikit-learn KMeans +
CountVectorizer keywords) on CSTR (299 texts, k=4): each from a fresh process, process start to
fitted (imports included), alternating, `--rounds` times.

    python benchmarks/text_clusterer_vs_by_hand.py --rounds 2
"""

import argparse
import subprocess
import sys
import time

DATA = "../shared/data/text/cstr.csv"
ICC = f"""
import pandas as pd, icc
icc.TextClusterer(n_clusters=4).fit(pd.read_csv({DATA!r})["text"].tolist()).cluster_info()
"""
BY_HAND = f"""
import numpy as np, pandas as pd
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import CountVectorizer
from icc.models.hub import resolve_model
texts = pd.read_csv({DATA!r})["text"]
labels = KMeans(4, n_init=10, random_state=0).fit_predict(
    SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu").encode(texts.tolist(), batch_size=64))
vectorizer = CountVectorizer(stop_words="english")
counts = vectorizer.fit_transform([" ".join(texts[labels == c]) for c in range(4)]).toarray()
[", ".join(vectorizer.get_feature_names_out()[np.argsort(-row)[:3]]) for row in counts]
"""


def seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    rounds = parser.parse_args().rounds
    for r in range(1, rounds + 1):
        print(f"round {r}: TextClusterer {seconds(ICC):.1f} s, by hand {seconds(BY_HAND):.1f} s", flush=True)


if __name__ == "__main__":
    main()
