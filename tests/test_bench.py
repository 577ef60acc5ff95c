import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pytest
from conftest import TEXT, run_icc
from sklearn import metrics as skm
from sklearn.datasets import make_blobs

from icc.bench.cells import reduce_vectors
from icc.bench.grid import check_dims, embedder_specs
from icc.bench.tables import algorithm_summary, best_cells, write_markdown
from icc.errors import ICCError
from icc.metrics import external_metrics, internal_metrics
from icc.models.device import gpus_visible, resolve_precision
from icc.models.tfidf import fit_tfidf, vectorize_batch

# --- metrics against hand-computed values and scikit-learn ------------------------------------


def test_weighted_f1_after_matching_by_hand():
    # Cluster 1 = {a, a} -> a; cluster 0 = {a, b, b, b} -> b. Class a: P 1, R 2/3, F1 0.8;
    # class b: P 3/4, R 1, F1 6/7; weighted by support (3, 3).
    m = external_metrics(list("aaabbb"), [1, 1, 0, 0, 0, 0])
    assert m["f1_weighted"] == pytest.approx(0.5 * 0.8 + 0.5 * 6 / 7)
    assert m["acc"] == pytest.approx(5 / 6)
    assert m["homogeneity"] == pytest.approx(skm.homogeneity_score(list("aaabbb"), [1, 1, 0, 0, 0, 0]))


def test_internal_metrics_by_hand_and_against_sklearn():
    # Two pairs on a line: {0, 1} and {10, 11}. Silhouette of 0: 1 - 1/10.5, of 1: 1 - 1/9.5 (same
    # for the mirror pair); Calinski-Harabasz: between 100 / (k-1) over within 1 / (n-k) = 200.
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    m = internal_metrics(X, [0, 0, 1, 1])
    assert m["silhouette"] == pytest.approx(((1 - 1 / 10.5) + (1 - 1 / 9.5)) / 2, rel=1e-6)
    assert m["calinski_harabasz"] == pytest.approx(200, rel=1e-6)
    X, y = make_blobs(300, centers=3, n_features=5, random_state=1)
    m = internal_metrics(X, y)  # fewer points than the sample size: exact
    assert m["silhouette"] == pytest.approx(skm.silhouette_score(X, y))
    assert m["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(X, y))


def test_external_metrics_with_rejected_rows():
    # -1 (not embedded) never matches a class: it lowers ACC and F1 but is scored like sklearn otherwise.
    y_true, y_pred = list("aabbcc"), [0, 0, 1, 1, -1, -1]
    m = external_metrics(y_true, y_pred)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["ari"] == pytest.approx(skm.adjusted_rand_score(y_true, y_pred))
    assert m["v_measure"] == pytest.approx(skm.v_measure_score(y_true, y_pred))


# --- pieces ----------------------------------------------------------------------------------


def test_reduce_vectors_pca_and_truncate():
    X = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    for method in ("pca", "truncate"):
        reduced = reduce_vectors(X, 8, method)
        assert reduced.shape == (50, 8) and reduced.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
    truncated = reduce_vectors(X, 8, "truncate")
    np.testing.assert_allclose(truncated, X[:, :8] / np.linalg.norm(X[:, :8], axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(ICCError, match="needs at least"):
        reduce_vectors(X[:5], 8, "pca")
    with pytest.raises(ICCError, match="positive integers"):
        check_dims([64, 0], "pca")
    assert check_dims([32, 256, 64], "truncate") == [256, 64, 32]


def test_stratified_sample_keeps_label_shares_whatever_the_row_order():
    from icc.bench.datasets import stratified_sample

    table = pa.table({"text": [f"text {i}" for i in range(100)], "label": ["a"] * 50 + ["b"] * 30 + [None] * 20})
    sample = stratified_sample(table, 11, seed=3)
    # shares 5.5, 3.3, 2.2 -> 5, 3, 2 and the largest remainder (a) gets the 11th row
    assert sample.column("label").to_pylist() == ["a"] * 6 + ["b"] * 3 + [None] * 2
    assert len(set(sample.column("text").to_pylist())) == 11
    shuffled = table.take(np.random.default_rng(0).permutation(100))
    assert stratified_sample(shuffled, 11, seed=3).equals(sample)
    assert not stratified_sample(table, 11, seed=4).equals(sample)
    assert stratified_sample(table, 100).num_rows == 100


def test_tfidf_matches_sklearn_and_keeps_rejected_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["the cat sat", "the cat ran", "a dog ran far", "dogs and cats", "the dog sat"]
    vectorizer = fit_tfidf(texts, min_df=2, max_features=None)
    batch = {"text": np.array(texts + [""], dtype=object), "reject": np.array([""] * 5 + ["empty text"])}
    out = vectorize_batch(batch, vectorizer)
    expected = TfidfVectorizer(min_df=2, stop_words="english").fit_transform(texts).toarray()
    np.testing.assert_allclose(out["vector"][:5], expected, atol=1e-6)
    assert not out["vector"][5].any() and not out["truncated"].any()
    with pytest.raises(ICCError, match="TF-IDF cannot fit"):
        fit_tfidf(texts, min_df=50)


def test_unknown_embedder_names_are_clear_errors():
    with pytest.raises(ICCError, match="unknown embedder 'minlm'"):
        embedder_specs(["minlm"], {"minilm": {"model": "all-MiniLM-L6-v2"}}, {})
    presets = {"minilm": {"model": "all-MiniLM-L6-v2", "pool": {"batch_size": 8}}}
    specs = embedder_specs(["org/model", "minilm"], presets, {"max_length": 64, "pool": {"actors": 2, "batch_size": None}})
    precision = resolve_precision("auto", gpus_visible())  # resolved for where the actors run, as it keys the cache
    assert specs[0].params == {"max_length": 64, "model": "org/model", "precision": precision}
    assert specs[0].kind == "transformer"
    # The pool runs the model: a preset may override its keys, and it never keys the embedding cache.
    assert specs[0].pool == {"actors": 2, "batch_size": None} and specs[1].pool == {"actors": 2, "batch_size": 8}
    assert specs[1].vector_params() == {"kind": "transformer", "max_length": 64, "model": "all-MiniLM-L6-v2",
                                        "precision": precision}


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_causal_lm_pooling_ignores_padding(pooling):
    """SmolLM2 hidden states: a padded batch gives the vectors of the texts embedded one by one,
    and last-token pooling is the final layer's state at the text's last token."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from icc.models.embedder import TextEmbedder
    from icc.models.hub import resolve_model

    texts = ["short", "a much longer text about the football championship last night", "medium sized text"]
    embedder = TextEmbedder("SmolLM2-135M-Instruct", pooling=pooling, batch_size=8, max_length=32, precision="float32")
    batched = embedder.embed(texts)
    single = np.vstack([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=2e-4)
    path = resolve_model("SmolLM2-135M-Instruct")
    tokens = AutoTokenizer.from_pretrained(path)(texts[1], return_tensors="pt")
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(path)(**tokens).last_hidden_state[0]
    expected = hidden[-1] if pooling == "last" else hidden.mean(0)
    np.testing.assert_allclose(batched[1], torch.nn.functional.normalize(expected, dim=0).numpy(), atol=2e-4)


# --- tables from a hand-made bench.parquet ---------------------------------------------------


def hand_made_cells() -> pd.DataFrame:
    rows = []
    f1 = {("cstr", "tfidf"): (0.5, 0.7), ("cstr", "minilm"): (0.8, 0.6),
          ("bbc", "tfidf"): (0.9, 0.4), ("bbc", "minilm"): (0.3, 0.95)}  # (kmeans, spectral)
    for (dataset, embedder), scores in f1.items():
        for algorithm, score in zip(["kmeans", "spectral"], scores):
            rows.append({"dataset": dataset, "rows": 10, "k": 2, "embedder": embedder, "input": "text", "dim": 8,
                         "reduce": "none", "algorithm": algorithm, "f1_weighted": score, "ari": score / 2,
                         "homogeneity": 0.1, "silhouette": 0.2, "calinski_harabasz": 123.456, "acc": score,
                         "nmi": 0.3, "v_measure": 0.3, "embed_s": 1.0, "cluster_s": 0.5, "embed_peak_rss_mb": 900.0,
                         "cluster_peak_rss_mb": 300.0, "embed_cached": False})
    rows.append({**rows[0], "reduce": "pca", "dim": 4, "f1_weighted": 0.99, "algorithm": "kmeans"})
    return pd.DataFrame(rows)


def test_table8_layout_from_hand_made_parquet(tmp_path):
    hand_made_cells().to_parquet(tmp_path / "bench.parquet")
    cells = pd.read_parquet(tmp_path / "bench.parquet")
    best = best_cells(cells)
    assert list(zip(best["dataset"], best["embedding"], best["algorithm"])) == [
        ("cstr", "tfidf", "spectral"), ("cstr", "minilm", "kmeans"), ("cstr", "tfidf pca-4", "kmeans"),
        ("bbc", "tfidf", "kmeans"), ("bbc", "minilm", "spectral")]
    summary = algorithm_summary(cells).set_index("algorithm")
    assert summary.loc["kmeans", "wins"] == 3 and summary.loc["spectral", "wins"] == 2
    assert summary.loc["spectral", "f1_weighted"] == pytest.approx((0.7 + 0.6 + 0.4 + 0.95) / 4)

    write_markdown(cells, tmp_path / "bench.md")
    text = (tmp_path / "bench.md").read_text()
    table8 = [line for line in text.split("## Best algorithm")[1].split("\n## ")[0].splitlines() if line.startswith("|")]
    assert table8[0].startswith("| Dataset | Rows | Embedding | Algorithm | F1 | ARI | Homog. | Silh. | CH | ACC | NMI | V |")
    assert table8[2] == ("| cstr | 10 | tfidf | spectral | 0.700 | 0.350 | 0.100 | 0.200 | 123.5 | 0.700 | 0.300 | 0.300 "
                         "| 1.000 | 0.500 | 900.0 | 300.0 |")
    assert len(table8) == 2 + 5
    assert "| kmeans | 5 | 3 |" in text


# --- the pipeline on a tiny slice ------------------------------------------------------------

SLICE_ROWS, SAMPLE_ROWS = 8, 6  # per class: the slice file, and the stratified sample the bench reads
ALGORITHMS = ["kmeans++", "agglomerative", "spectral"]


@pytest.fixture(scope="session")
def bench_runs(ray_address, tmp_path_factory):
    """Two `icc bench` runs with one cache on a stratified sample of a CSTR slice (4 classes):
    TF-IDF and MiniLM x three of the paper's algorithms with a size experiment; then MiniLM on the
    same texts (cached) and on SmolLM2 summaries of them. (The other algorithms are tested in
    test_cluster, SmolLM2's hidden states below, to keep this fixture short.)"""
    import pyarrow.compute as pc

    base = tmp_path_factory.mktemp("bench")
    table = pyarrow.csv.read_csv(TEXT / "cstr.csv")
    parts = [table.filter(pc.equal(table["label"], c)).slice(0, SLICE_ROWS) for c in pc.unique(table["label"]).to_pylist()]
    pyarrow.csv.write_csv(pyarrow.concat_tables(parts), base / "cstr.csv")
    common = [f"ray.address={ray_address}", "ray.progress_bars=false", f"bench.cache_dir={base / 'cache'}",
              f"+datasets.cstr_slice={{path:{base / 'cstr.csv'},text_column:text,label_column:label,k:null,"
              f"sample:{4 * SAMPLE_ROWS}}}", "bench.datasets=[cstr_slice]", f"bench.clusterers=[{','.join(ALGORITHMS)}]",
              "embedder.max_length=64", "bench.cpus_per_cell=1"]
    grid = base / "grid"
    result = run_icc("bench", *common, "bench.embedders=[tfidf,minilm]", "embedders.tfidf.min_df=2", "bench.dims=[8]",
                     f"output.dir={grid}")
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = base / "summaries"
    result = run_icc("bench", *common, "bench.embedders=[minilm]", "bench.summarize=true", "summarize.max_new_tokens=16",
                     "summarize.max_chars=300", "summarize.texts_per_batch=12", f"output.dir={summaries}")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"grid": grid, "summaries": summaries, "cache": base / "cache"}


def test_bench_writes_one_row_per_cell(bench_runs):
    cells = pd.read_parquet(bench_runs["grid"] / "bench.parquet")
    # 2 embedders x (full + PCA-8) x 3 algorithms, on the 24-row sample of the 32-row slice
    assert len(cells) == 2 * 2 * 3
    assert sorted(set(cells["algorithm"])) == sorted(ALGORITHMS)
    assert set(cells.loc[cells["reduce"] == "none", "dim"]) >= {384}
    assert set(cells.loc[cells["reduce"] == "pca", "dim"]) == {8}
    assert (cells["k"] == 4).all() and (cells["rows"] == 4 * SAMPLE_ROWS).all()
    for metric in ("f1_weighted", "ari", "homogeneity", "acc", "nmi", "v_measure"):
        assert cells[metric].between(-1, 1).all(), metric
    assert (cells["cluster_peak_rss_mb"] > 50).all() and (cells["embed_peak_rss_mb"] > 50).all()
    assert (cells["embed_s"] > 0).all() and (cells["cluster_s"] >= 0).all()
    # MiniLM separates 4 CSTR topics far better than chance on 24 texts.
    minilm = cells[(cells["embedder"] == "minilm") & (cells["reduce"] == "none")]
    assert minilm["acc"].max() > 0.5
    md = (bench_runs["grid"] / "bench.md").read_text()
    assert "## Best algorithm per embedding and dataset" in md and "| cstr_slice | 24 | minilm pca-8 |" in md
    assert (bench_runs["grid"] / "bench.html").stat().st_size > 100_000  # plotly inlined


def test_sample_is_stratified_in_the_cache(bench_runs):
    from icc.bench.embed import load_entry

    for entry in (bench_runs["cache"] / "embeddings").iterdir():
        labels = load_entry(entry).labels
        assert len(labels) == 4 * SAMPLE_ROWS and set(pd.Series(labels).value_counts()) == {SAMPLE_ROWS}


def test_second_run_reads_the_cache(bench_runs):
    first = pd.read_parquet(bench_runs["grid"] / "bench.parquet")
    second = pd.read_parquet(bench_runs["summaries"] / "bench.parquet")
    assert not first["embed_cached"].any()
    first = first[(first["embedder"] == "minilm") & (first["reduce"] == "none")].set_index("algorithm")
    second = second[second["input"] == "text"].set_index("algorithm")
    assert second["embed_cached"].all()
    # Same vectors, same seeds: the same clusterings, and the embedding seconds of the run that embedded.
    np.testing.assert_allclose(first.loc[ALGORITHMS, "ari"], second.loc[ALGORITHMS, "ari"])
    np.testing.assert_allclose(first["embed_s"], second.loc[first.index, "embed_s"])
    entries = list((bench_runs["cache"] / "embeddings").iterdir())
    assert len(entries) == 2 + 1  # TF-IDF and MiniLM on the texts, MiniLM on the summaries
    inputs = json.loads((bench_runs["summaries"] / "run.json").read_text())["inputs"]
    assert [i["embeddings"]["cached"] for i in inputs if "embeddings" in i] == [True, False]


def test_summaries_are_embedded_and_cached(bench_runs):
    cells = pd.read_parquet(bench_runs["summaries"] / "bench.parquet")
    assert set(cells["input"]) == {"text", "summary"} and len(cells) == 2 * 3
    summary = cells[cells["input"] == "summary"]
    assert (summary["summarize_s"] > 0).all() and not summary["embed_cached"].any()
    assert (summary["rows"] == 4 * SAMPLE_ROWS).all()
    texts = pd.read_parquet(next((bench_runs["cache"] / "summaries").glob("*/summaries.parquet")))
    assert len(texts) == 4 * SAMPLE_ROWS and (texts["text"].str.len() > 0).mean() > 0.9
    assert "summaries" in (bench_runs["summaries"] / "bench.md").read_text()


def test_bad_grid_is_a_one_line_error(tmp_path):
    result = run_icc("bench", "bench.embedders=[minlm]", f"output.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown embedder 'minlm'" in result.stderr
    result = run_icc("bench", "bench.clusterers=[kmeans,dbscan]", f"output.dir={tmp_path}")
    assert result.returncode == 2 and "unknown clusterer 'dbscan'" in result.stderr
