"""Every pipeline checks its settings before any work (issue 17): a setting of the wrong type or
range, or a model path that does not exist, stops it with one line `icc: error: ...` and exit code 2
before Ray starts. Each run is given the address of a Ray cluster that is gone, so a run that got
past its checks would end with "cannot reach the Ray cluster" instead of the expected line."""

import pytest
from conftest import SHARED, free_port, run_icc

WINE = SHARED / "numeric" / "uci" / "wine"
HYDRA_FILES = {".hydra", "incontext.log", "finetune.log", "bench.log"}  # what Hydra writes before the run starts


def refused_before_ray(pipeline: str, tmp_path, *overrides: str) -> str:
    """stderr of `icc <pipeline>` with `overrides`, asserting one line, exit code 2, nothing written
    to output.dir but Hydra's own files, and an error that is not the unreachable Ray cluster's."""
    out = tmp_path / "run"
    result = run_icc(pipeline, f"ray.address=127.0.0.1:{free_port()}", f"output.dir={out}", *overrides, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("icc: error: ") and "cannot reach the Ray cluster" not in result.stderr
    assert not out.exists() or {p.name for p in out.iterdir()} <= HYDRA_FILES
    return result.stderr


@pytest.mark.parametrize("overrides, message", [
    (["llm.generate.max_new_tokens=abc"], "llm.generate.max_new_tokens must be a positive integer, got 'abc'"),
    (["attention.orders=0"], "attention.orders must be a positive integer, got 0"),
    (["attention.layers=[99]"], "attention layers [99] outside the model's 30 layers (0..29)"),
    (["data.n_range=[30,10]"], "n_range must be [low, high], integers with 1 <= low <= high, got [30, 10]"),
    (["data=numeric"], "give data.path=<value>: it has no default"),
    (["data=numeric", f"data.path={WINE}.data", f"data.labels={WINE}.labels0", "data.k_range=[3,2]"],
     f"{WINE}.data: k_range must be [low, high], integers with 1 <= low <= high, got [3, 2]"),
    (["llm.model=/nope"], "model path /nope does not exist"),
])
def test_icc_incontext_checks_its_settings_before_ray(tmp_path, overrides, message):
    assert message in refused_before_ray("incontext", tmp_path, *overrides)


@pytest.mark.parametrize("override, message", [
    ("trainer.lr=x", "trainer.lr must be a positive number, got 'x'"),
    ("trainer.resume=maybe", "trainer.resume must be true or false, got 'maybe'"),
    ("lora.r=0", "lora.r must be a positive integer, got 0"),
    ("lora.dropout=1.5", "lora.dropout must be below 1, got 1.5"),
    ("evaluation.episodes=-2", "evaluation.episodes must be a non-negative integer, got -2"),
    ("llm.pool.actors=0", "actors must be a positive integer or null, got 0"),
    ("llm.model=/nope", "model path /nope does not exist"),
])
def test_icc_finetune_checks_its_settings_before_ray(tmp_path, override, message):
    assert message in refused_before_ray("finetune", tmp_path, override)


@pytest.mark.parametrize("overrides, message", [
    (["bench.cpus_per_cell=0"], "bench.cpus_per_cell must be a positive number, got 0"),
    (["bench.embedders=[minilm]", "embedder.pool.batch_size=abc"], "embedder 'minilm': batch_size must be"),
    (["bench.embedders=[/nope]"], "embedder '/nope': model path /nope does not exist"),
    (["datasets.cstr.path=/nope.csv"], "dataset 'cstr': data.path not found: /nope.csv"),
    (["bench.summarize=true", "summarize.texts_per_batch=0"], "summarize.texts_per_batch must be a positive integer"),
])
def test_icc_bench_checks_its_settings_before_ray(tmp_path, overrides, message):
    overrides = ["bench.datasets=[cstr]", "bench.embedders=[tfidf]", *overrides]
    assert message in refused_before_ray("bench", tmp_path, *overrides)


@pytest.mark.parametrize("override, message", [
    ("top_k=0", "top_k must be a positive integer, got 0"),
    ("search.clusters=x", "search.clusters must be a positive integer, got 'x'"),
    ("search.rerank=bm25", "unknown search.rerank 'bm25' (choose from none, llm)"),
    ("rerank.max_calls=-1", "rerank.max_calls must be a non-negative integer, got -1"),
])
def test_icc_search_checks_its_settings_before_loading_the_run(tmp_path, override, message):
    """`icc search` runs no Ray: a run directory that does not exist would be its first error."""
    result = run_icc("search", f"run={tmp_path / 'no-run'}", "query=card", override, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"icc: error: {message}")
