"""Cluster names: c-TF-IDF with frequent-word reduction, re-ranking against the centroid (MMR),
and LLM names that are a few whole words or fall back to the keywords."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TEXT

from icc.corpus.labeler import ClusterNames, KeywordLabeler, clean_name, combine, make_labeler, mmr
from icc.errors import ICCError
from icc.models.embedder import TextEmbedder

MINILM = {"model": "all-MiniLM-L6-v2", "max_length": 64}
# the old labeler: unigrams, raw shares, log(1 + A / f)
OLD = {"ngram_range": (1, 1), "min_df": 1, "reduce_frequent_words": False, "bm25_weighting": False, "rerank": False}

# Three news-like topics, "said" in every text
NEWS = [
    [f"The striker said the football match was {w}, the coach said and fans said it again" for w in
     ("tough", "great", "long", "fair", "hard")],
    [f"The bank said shares and market profits rose {w}, the minister said as investors said so" for w in
     ("again", "fast", "slowly", "today", "sharply")],
    [f"The film star said the movie award was {w}, the director said and critics said yes" for w in
     ("deserved", "earned", "won", "great", "late")],
]


def test_a_word_every_cluster_repeats_does_not_name_them():
    """BBC's five topics, 60 texts each: the old weighting put "said" in 4 of 5 names; BM25 idf and
    reduced frequent words keep it out of all but one, never first."""
    import pyarrow.csv

    table = pyarrow.csv.read_csv(TEXT / "bbc.csv").to_pandas()
    clusters = [table[table["label"] == topic]["text"].tolist()[:60] for topic in sorted(set(table["label"]))]
    old = KeywordLabeler(**OLD).label(clusters)
    assert sum("said" in name.split(", ") for name in old.names) >= 4
    new = KeywordLabeler(rerank=False).label(clusters)
    assert sum("said" in name.split(", ") for name in new.names) <= 1
    assert not any(words[0] == "said" for words in new.representation)
    assert new.source == ["keywords"] * 5 and all(len(words) == 10 for words in new.representation)


def test_two_word_phrases_and_tiny_clusters():
    clusters = [["My card payment was declined", "card payment declined at the shop", "card payment declined again"],
                ["How long does a bank transfer take?", "My bank transfer has not arrived", "bank transfer pending"],
                []]
    named = KeywordLabeler(rerank=False).label(clusters)
    assert "card payment" in named.representation[0] and "bank transfer" in named.representation[1]
    assert named.representation[2] == [] and named.names[2] is None and named.source[2] is None
    assert KeywordLabeler().label([["the and of"], ["a an"]]).names == [None, None]  # only stop words


def test_rerank_puts_the_terms_nearest_the_centroid_first():
    """With the encoder, the representation is the MMR order against the centroid: its first term is
    the candidate most similar to the centroid, and every term is a c-TF-IDF candidate."""
    encoder = TextEmbedder(**MINILM)
    centroids = np.stack([encoder.embed(texts).mean(axis=0) for texts in NEWS])
    plain = KeywordLabeler(rerank=False, representation_words=30).label(NEWS)
    reranked = KeywordLabeler(embedder=MINILM, representation_words=5).label(NEWS, centroids)
    for c, words in enumerate(reranked.representation):
        candidates = plain.representation[c]
        assert set(words) <= set(candidates) and len(words) == 5
        similarity = encoder.embed(candidates) @ (centroids[c] / np.linalg.norm(centroids[c]))
        assert words[0] == candidates[int(np.argmax(similarity))]
    assert reranked.names == [", ".join(words[:3]) for words in reranked.representation]


# In a fresh process, which has not imported transformers yet, as `icc cluster`'s driver: the
# labeler's encoder loads in the background (`preload`) while the main thread builds a TextEmbedder
# too. Prints the names with the preloaded encoder and with one loaded when `label` needs it.
PRELOAD = """
import json, sys
import numpy as np
from icc.corpus.labeler import KeywordLabeler
from icc.models.embedder import TextEmbedder
minilm, news = json.loads(sys.argv[1])
labeler = KeywordLabeler(embedder=minilm, representation_words=5)
labeler.preload()
loading = labeler._loading
encoder = TextEmbedder(**minilm)
centroids = np.stack([encoder.embed(texts).mean(axis=0) for texts in news])
preloaded = labeler.label(news, centroids)
assert labeler.encoder() is loading.result() is not encoder
on_demand = KeywordLabeler(embedder=minilm, representation_words=5).label(news, centroids)
print(json.dumps({"preloaded": preloaded.representation, "on_demand": on_demand.representation}))
"""


def test_preloaded_encoder_loads_beside_another_and_names_the_same():
    result = subprocess.run([sys.executable, "-c", PRELOAD, json.dumps([MINILM, NEWS])], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout.splitlines()[-1])
    assert names["preloaded"] == names["on_demand"] and all(len(words) == 5 for words in names["preloaded"])


def test_mmr_trades_relevance_for_diversity():
    target = np.array([1.0, 0.0, 0.0])
    vectors = np.array([[0.98, 0.2, 0.0], [0.96, 0.28, 0.0], [0.9, -0.3, 0.3]])  # b: a near-copy of a, less relevant
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert mmr(["a", "b", "c"], vectors, target, 3, diversity=0.0) == ["a", "b", "c"]
    assert mmr(["a", "b", "c"], vectors, target, 2, diversity=0.5) == ["a", "c"]
    assert mmr([], np.zeros((0, 3)), target, 3, 0.3) == []


def test_clean_name_keeps_whole_short_names_only():
    assert clean_name('\n Topic: "Lost phones".\nMore text') == "Lost phones"
    assert clean_name(' "My Card Has Not Arrived"') == "My Card Has Not Arrived"
    assert clean_name(" The Challenges of Natural Language Processing in Dialog-Synt") is None  # too long: not cut
    assert clean_name("   ") is None and clean_name("Topic:") is None


def test_llm_names_fall_back_to_the_keywords_where_empty_or_too_long():
    keywords = ClusterNames(["card, declined", "transfer, bank", None], [["card"], ["transfer"], []],
                            ["keywords", "keywords", None])
    named = combine(keywords, ["Declined cards", None, None])
    assert named.names == ["Declined cards", "transfer, bank", None]
    assert named.source == ["llm", "keywords", None] and named.fell_back == [1]


def test_make_labeler_checks_its_settings():
    assert make_labeler("none") is None
    assert isinstance(make_labeler("keywords", embedder=MINILM), KeywordLabeler)
    with pytest.raises(ICCError, match="unknown labeler"):
        make_labeler("topics")
    with pytest.raises(ICCError, match="bad parameters"):
        make_labeler("keywords", words=3)
    with pytest.raises(ICCError, match="diversity"):
        make_labeler("keywords", diversity=2)
