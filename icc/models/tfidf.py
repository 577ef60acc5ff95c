"""TF-IDF vectors: the bag-of-words baseline of the LLM-embeddings clustering paper.

The vocabulary and IDF weights are fitted on the whole corpus (`fit_tfidf`), then rows are
vectorised as a Ray Data stage with the same contract as `TextEmbedder`: a batch gains `vector`
(dense float32, unit norm; all zeros for a text without a vocabulary word or a rejected row)
and `truncated` (always False).
"""

import numpy as np

from icc.errors import ICCError


def fit_tfidf(texts: list[str], min_df: int = 5, max_features: int | None = 8000, stop_words="english",
              sublinear_tf: bool = False):
    """A scikit-learn TfidfVectorizer fitted on `texts` (the paper's settings: min_df=5,
    max_features=8000). ICCError when no word occurs in at least `min_df` texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(min_df=min_df, max_features=max_features, stop_words=stop_words,
                                 sublinear_tf=sublinear_tf, dtype=np.float32)
    try:
        return vectorizer.fit(texts)
    except ValueError as e:  # empty vocabulary, or min_df above the number of texts
        raise ICCError(f"TF-IDF cannot fit on these {len(texts)} texts (min_df={min_df}): {e}") from None


def tfidf_dataset(ds, rows_per_batch: int = 1024, text_column: str = "text", **tfidf_params):
    """Fit TF-IDF on the non-rejected texts of a Ray Dataset of prepared rows, then add `vector`
    and `truncated` to every row. Returns (dataset, fitted vectorizer)."""
    ds = ds.materialize()  # read once: one pass fits, the other vectorises
    texts = [str(t) for batch in ds.iter_batches(batch_format="numpy", batch_size=None)
             for t, r in zip(batch[text_column], batch["reject"]) if not r]
    if not texts:
        raise ICCError("no text to fit TF-IDF on: every row was rejected")
    vectorizer = fit_tfidf(texts, **tfidf_params)
    embedded = ds.map_batches(vectorize_batch, fn_kwargs={"vectorizer": vectorizer, "text_column": text_column},
                              batch_size=rows_per_batch)
    return embedded, vectorizer


def vectorize_batch(batch: dict, vectorizer, text_column: str = "text") -> dict:
    """Ray Data batch of prepared rows -> the same batch with `vector` (n, vocabulary) and `truncated`."""
    texts = batch[text_column]
    ok = np.array([not r for r in batch["reject"]], dtype=bool)
    vectors = np.zeros((len(texts), len(vectorizer.vocabulary_)), dtype=np.float32)
    if ok.any():
        vectors[ok] = vectorizer.transform([str(t) for t in texts[ok]]).toarray()
    batch["vector"] = vectors
    batch["truncated"] = np.zeros(len(texts), dtype=bool)
    return batch
