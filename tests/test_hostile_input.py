"""Hostile and malformed input: each case ends in a clear one-line error (ICCError, exit code 2) or
in rows kept as rejects with a reason -- never a silent drop, never a traceback. Models load from
safetensors only, run no code of their repository, and an LLM's answer is parsed, not executed.
README "Bad input" lists the outcomes."""

import json
import re
import subprocess
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import BIN, ROOT, run_icc

from icc.corpus.labeler import clean_name
from icc.data.corpus import read_corpus
from icc.errors import ICCError
from icc.incontext.episodes import build_episodes, read_numeric
from icc.incontext.prompt import numeric_prompt, parse_labels
from icc.incontext.runner import num_layers
from icc.models.embedder import TextEmbedder
from icc.models.hub import MINILM, load_kwargs, resolve_model

# ---------------------------------------------------------------------------------------------
# Corpus files


def write_corpus_files(base):
    """{case: (path, text column, id column)} of malformed corpora, written under `base`."""
    base.mkdir(exist_ok=True)
    table = pa.table({"text": [f"row {i} " * 20 for i in range(1000)], "key": [f"k{i % 990}" for i in range(1000)],
                      "number": list(range(1000))})
    pq.write_table(table, base / "whole.parquet")
    data = (base / "whole.parquet").read_bytes()
    (base / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (base / "utf16.csv").write_bytes("text\nhello\nwörld\n".encode("utf-16"))
    (base / "number_in_text.jsonl").write_text('{"text": "a"}\n{"text": 5}\n')
    (base / "ragged").mkdir()
    (base / "ragged" / "a.csv").write_text("text,label\nx,1\ny,2\n")
    (base / "ragged" / "b.csv").write_text("text,label\nx,1\ny,2,3\n")
    pq.write_table(pa.table({"text": ["a", "b"], "key": ["x", None]}), base / "empty_id.parquet")
    return {
        "truncated parquet": (base / "truncated.parquet", "text", None),
        "utf-16 csv": (base / "utf16.csv", "text", None),
        "number among texts (jsonl)": (base / "number_in_text.jsonl", "text", None),
        "numbers column as text": (base / "whole.parquet", "number", None),
        "duplicate ids": (base / "whole.parquet", "text", "key"),
        "empty id": (base / "empty_id.parquet", "text", "key"),
    }


CORPUS_ERRORS = {
    "truncated parquet": r"cannot read .*truncated\.parquet: .*magic bytes",
    "utf-16 csv": r"cannot read .*utf16\.csv: .*(utf-8|UTF-8|Unicode)",
    "number among texts (jsonl)": r"cannot read .*number_in_text\.jsonl: .*",
    "numbers column as text": r"text column 'number' holds int64 values, not text",
    "duplicate ids": r"data.id_column 'key' repeats 10 ids \(e.g. 'k0' 2 times\)",
    "empty id": r"data.id_column 'key' has 1 empty ids",
}


@pytest.mark.parametrize("case", CORPUS_ERRORS)
def test_malformed_corpus_is_a_clear_error(ray_session, tmp_path, case):
    path, text_column, id_column = write_corpus_files(tmp_path)[case]
    with pytest.raises(ICCError, match=CORPUS_ERRORS[case]) as error:
        read_corpus(str(path), text_column, id_column).take_all()
    assert "\n" not in str(error.value)


def test_mixed_encodings_are_kept_and_counted(ray_session, tmp_path):
    # UTF-8, Latin-1 and cp1252 rows in one CSV, and Latin-1 in a JSONL file: undecodable bytes
    # become U+FFFD and the row is marked replaced, never dropped.
    (tmp_path / "mixed.csv").write_bytes("text\ncafé\n".encode() + b"caf\xe9\n\x93quoted\x94\nplain\n")
    rows = read_corpus(str(tmp_path / "mixed.csv"), "text").take_all()
    assert [r["text"] for r in rows] == ["café", "caf\ufffd", "\ufffdquoted\ufffd", "plain"]
    assert [r["replaced"] for r in rows] == [False, True, True, False]
    (tmp_path / "mixed.jsonl").write_bytes(b'{"text": "caf\xc3\xa9"}\n{"text": "caf\xe9"}\n')
    rows = read_corpus(str(tmp_path / "mixed.jsonl"), "text").take_all()
    assert [r["text"] for r in rows] == ["café", "caf\ufffd"]
    assert [r["replaced"] for r in rows] == [False, True]


# ---------------------------------------------------------------------------------------------
# `icc cluster` end to end


@pytest.mark.parametrize(
    "case, overrides, message",
    [
        ("truncated parquet", ["data.path=BASE/truncated.parquet"],
         r"cannot read .*truncated.parquet: Parquet magic bytes"),
        # Only the first file gives the schema: the second one fails in a Ray read task, midway.
        ("ragged csv row in a second file", ["data.path=BASE/ragged"],
         r"cannot read the input data: Failed to read CSV file: .*ragged/b.csv"),
        ("k larger than the data", ["data.path=BASE/ragged/a.csv", "clusterer.k=50"],
         r"k must be between 2 and the number of texts \(2\), got 50"),
        ("override of the wrong type", ["data.path=BASE/whole.parquet", "embedder.pool.actors=two"],
         r"actors must be a positive integer or null, got 'two'"),
    ],
)
def test_bad_input_stops_icc_cluster_with_one_line(ray_address, tmp_path, case, overrides, message):
    write_corpus_files(tmp_path / "corpus")
    overrides = [o.replace("BASE", str(tmp_path / "corpus")) for o in overrides]
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file", "labeler=none",
                     "report.enabled=false", "clusterer.k=2", f"output.dir={tmp_path / 'out'}", *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("icc: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-3000:]
    # A failed Ray read task is also logged by Ray, with its worker's traceback; errors found in the
    # driver show no traceback at all.
    if "Failed to read" not in message:
        assert "Traceback" not in result.stderr


HUGE_TEXT_CHARS = 100 << 20


@pytest.fixture(scope="module")
def dirty_run(ray_address, tmp_path_factory):
    """`icc cluster` with the default labeler and report over a CSV nobody cleaned: a quoted value
    with newlines, quotes and commas, Latin-1 and stray bytes, an empty and a blank text, a number
    as text, and one 100 MB text. Returns (out dir, CompletedProcess-like dict, rows written)."""
    base = tmp_path_factory.mktemp("dirty")
    lines = [b"text,label"] + [f"news about {topic} number {i},{topic}".encode()
                               for i in range(20) for topic in ("football", "markets")]
    lines += [b'"two\nlines, ""quoted"" and, commas",football', b"caf\xe9 au lait \xff,markets", b'"",markets',
              b'"   ",football', b"12345,markets", b"football " * (HUGE_TEXT_CHARS // 9) + b",football"]
    path = base / "dirty.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = base / "run"
    with open(base / "stderr", "w") as stderr:
        start, peak_rss = time.perf_counter(), 0
        job = psutil.Popen([BIN / "icc", "cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file",
                            f"data.path={path}", "data.label_column=label", "clusterer.k=2", f"output.dir={out}"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        while job.poll() is None:
            try:
                peak_rss = max(peak_rss, job.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    print(f"dirty corpus with a 100 MB text: {seconds:.1f} s, driver peak RSS {peak_rss / 2**20:.0f} MiB")
    return {"out": out, "returncode": job.returncode, "stderr": (base / "stderr").read_text(), "rows": len(lines) - 1,
            "seconds": seconds, "peak_rss": peak_rss}


def test_dirty_csv_keeps_every_row_with_reasons(dirty_run):
    assert dirty_run["returncode"] == 0, dirty_run["stderr"][-3000:]
    out = dirty_run["out"]
    assignments = pq.read_table(out / "assignments.parquet").to_pylist()
    assert [r["id"] for r in assignments] == list(range(dirty_run["rows"]))  # rows out = rows in
    rejected = {r["id"]: r["reason"] for r in assignments if r["cluster"] == -1}
    assert rejected == {42: "empty text", 43: "empty text"}
    texts = pq.read_table(out / "texts.parquet", columns=["text"])["text"].to_pylist()
    assert texts[40] == 'two\nlines, "quoted" and, commas'
    assert texts[41] == "caf\ufffd au lait \ufffd" and texts[44] == "12345"
    assert len(texts[45]) == (HUGE_TEXT_CHARS // 9) * 9  # kept whole in texts.parquet, cut only for the encoder
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == dirty_run["rows"] and metrics["rejected"] == 2
    assert metrics["undecodable_rows_replaced"] == 1 and metrics["truncated_to_max_length"] == 1


def test_dirty_csv_with_100mb_text_stays_in_bounds(dirty_run):
    assert dirty_run["returncode"] == 0, dirty_run["stderr"][-3000:]
    assert dirty_run["seconds"] < 180
    assert dirty_run["peak_rss"] < 3 << 30  # the driver: a few copies of the 100 MB text at most


# ---------------------------------------------------------------------------------------------
# Numeric data for icc incontext


@pytest.mark.parametrize(
    "value, message",
    [("nan", "NaN or infinite"), ("inf", "NaN or infinite"), ("-inf", "NaN or infinite"),
     ("1e308", r"values up to 1e\+308, beyond 1e\+15: rescale"), ("abc", "cannot read numeric data")],
)
def test_numeric_data_must_be_finite_and_bounded(tmp_path, value, message):
    (tmp_path / "x.data").write_text(f"1 2\n3 4\n{value} 5\n")
    (tmp_path / "x.labels0").write_text("1\n2\n1\n")
    with pytest.raises(ICCError, match=message):
        read_numeric(str(tmp_path / "x.data"), str(tmp_path / "x.labels0"))


def test_numeric_labels_must_be_integers(tmp_path):
    (tmp_path / "x.data").write_text("1 2\n3 4\n")
    (tmp_path / "x.labels0").write_text("1\nnan\n")
    with pytest.raises(ICCError, match="cannot read numeric data"):
        read_numeric(str(tmp_path / "x.data"), str(tmp_path / "x.labels0"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_prompt_refuses_non_finite_points(value):
    with pytest.raises(ICCError, match="points must be finite"):
        numeric_prompt([[1.0, value]], k=2)
    assert "[[1e+308, 1.0]]" in numeric_prompt([[1e308, 1.0]], k=2).text  # large but finite: written as is


def test_k_larger_than_the_data_for_episodes(tmp_path):
    with pytest.raises(ICCError, match="fewer points than k=20"):
        build_episodes({"kind": "synthetic", "ks": [20], "ds": [1], "dfs": [1], "n_range": [10, 15]}, 0, 2, "test")
    # A labelled set with 3 classes: k is capped at 3, as conf/incontext/data/numeric.yaml says.
    np.savetxt(tmp_path / "x.data", np.random.default_rng(0).normal(size=(60, 3)))
    np.savetxt(tmp_path / "x.labels0", np.repeat([1, 2, 3], 20), fmt="%d")
    data = {"kind": "numeric", "path": str(tmp_path / "x.data"), "labels": str(tmp_path / "x.labels0"),
            "n_range": [10, 30], "k_range": [5, 6], "standardize": True}
    assert {e["k"] for e in build_episodes(data, seed=0, count=4, split="test")} == {3}


# ---------------------------------------------------------------------------------------------
# Models: safetensors only, no repository code; LLM answers are parsed, not executed


@pytest.fixture(scope="module")
def tiny_encoder_dirs(tmp_path_factory):
    """Directories of one tiny random BERT (MiniLM's tokenizer): `safe` (model.safetensors),
    `pickled` (pytorch_model.bin only), `payload` (a pytorch_model.bin whose unpickling would
    create the file `unpickled`), `remote_code` (config asking for the code in its evil.py, which
    would create the file `imported`). Returns (dirs, folder of the two marker files)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    base = tmp_path_factory.mktemp("models")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MINILM))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64))
    dirs = {name: base / name for name in ("safe", "pickled", "payload", "remote_code")}
    for path in dirs.values():
        tokenizer.save_pretrained(path)
        model.config.save_pretrained(path)
    for name in ("safe", "remote_code"):
        model.save_pretrained(dirs[name])
    torch.save(model.state_dict(), dirs["pickled"] / "pytorch_model.bin")
    torch.save({"weights": Payload(base / "unpickled")}, dirs["payload"] / "pytorch_model.bin")
    config = json.loads((dirs["remote_code"] / "config.json").read_text())
    # A model type transformers does not know: only the repository's own code could load it.
    config["model_type"] = "evil"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (dirs["remote_code"] / "config.json").write_text(json.dumps(config))
    (dirs["remote_code"] / "evil.py").write_text(f"import pathlib\npathlib.Path({str(base / 'imported')!r}).touch()\n")
    return dirs, base


class Payload:
    """Unpickling this calls Path.touch(marker): what a hostile checkpoint could do with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_pickled_weights_are_refused_unless_allowed(tiny_encoder_dirs):
    dirs, _ = tiny_encoder_dirs
    with pytest.raises(ICCError, match=r"pickled weights only \(pytorch_model.bin\).*allow_pickle=true"):
        load_kwargs(trust_remote_code=False, allow_pickle=False, path=str(dirs["pickled"]))
    with pytest.raises(ICCError, match="pickled weights only"):
        TextEmbedder(str(dirs["pickled"]))
    texts = ["a first text", "another one"]
    allowed = TextEmbedder(str(dirs["pickled"]), allow_pickle=True).embed(texts)
    np.testing.assert_allclose(allowed, TextEmbedder(str(dirs["safe"])).embed(texts), atol=1e-6)
    assert load_kwargs(False, False, path=str(dirs["safe"]))["use_safetensors"] is True


def test_a_pickle_payload_never_runs(tiny_encoder_dirs):
    dirs, markers = tiny_encoder_dirs
    marker = markers / "unpickled"
    with pytest.raises((ICCError, OSError)):
        TextEmbedder(str(dirs["payload"]))
    # Even when pickles are allowed, transformers unpickles weights only (torch weights_only=True).
    with pytest.raises(Exception):
        TextEmbedder(str(dirs["payload"]), allow_pickle=True)
    assert not marker.exists()


def test_repository_code_runs_only_when_trusted(tiny_encoder_dirs):
    dirs, markers = tiny_encoder_dirs
    marker = markers / "imported"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        TextEmbedder(str(dirs["remote_code"]))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        num_layers(str(dirs["remote_code"]))
    assert not marker.exists()
    # The same directory with trust: transformers imports evil.py (which then fails to define a model).
    with pytest.raises(Exception):
        num_layers(str(dirs["remote_code"]), trust_remote_code=True)
    assert marker.exists()


def test_llm_answers_are_parsed_never_executed(tmp_path):
    marker = tmp_path / "marker"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch() or [0, 1]"
    assert parse_labels(code, 2) == ([0, 1], "ok")  # the list is read; the code around it is text
    assert parse_labels("[0, 1, exec('import os')]", 3) == ([0, 1, -1], "trimmed")
    assert clean_name(f"Title: {code}") == code  # four words: a name, shown as text
    assert not marker.exists()
    # No code path evaluates text: the package has no eval/exec/pickle loading of its own.
    sources = [p for folder in ("icc", "pipelines") for p in (ROOT / folder).rglob("*.py")]
    calls = re.compile(r"(?<![.\w])(eval|exec)\(|literal_eval\(|pickle\.loads?\(|torch\.load\(")
    offending = [f"{p.relative_to(ROOT)}: {m.group()}" for p in sources for m in calls.finditer(p.read_text())]
    assert offending == []
