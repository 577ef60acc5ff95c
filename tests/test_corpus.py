import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icc.data.corpus import clean_texts, list_files, read_corpus
from icc.errors import ICCError


def test_clean_texts_rejects_empty_and_replaces_bad_bytes():
    texts, reject, replaced = clean_texts(["ok", "  \n", None, float("nan"), b"caf\xe9", 42, b"fine"])
    assert texts == ["ok", "  \n", "", "", "caf\ufffd", "42", "fine"]
    assert reject == ["", "empty text", "empty text", "empty text", "", "", ""]
    assert replaced == [False, False, False, False, True, False, False]


@pytest.fixture
def corpora(tmp_path):
    rows = [{"doc": f"text number {i}", "tag": i % 2, "key": f"k{i}"} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A quoted CSV value may hold newlines and doubled quotes; one value has a non-UTF-8 byte.
    (tmp_path / "c.csv").write_bytes(b'doc,tag,key\n"two\nlines, ""quoted""",0,k0\ncaf\xe9,1,k1\n"",0,k2\n')
    return tmp_path


def test_list_files_expands_and_checks(corpora, tmp_path):
    assert list_files(str(corpora / "*.parquet")) == ([str(corpora / "a.parquet")], "parquet")
    with pytest.raises(ICCError, match="mixes file formats"):
        list_files(str(corpora))
    with pytest.raises(ICCError, match="not found"):
        list_files(str(tmp_path / "missing.csv"))
    with pytest.raises(ICCError, match="no Parquet, CSV or JSONL"):
        list_files(str(tmp_path / "*.txt"))


def test_a_directory_reads_compressed_files_ignores_hidden_ones_and_refuses_unknown_ones(tmp_path):
    """Before: .csv.gz was skipped without a word, _temporary/ and .hidden files were read, .txt skipped."""
    (tmp_path / "_temporary").mkdir()
    (tmp_path / "_temporary" / "part.csv").write_text("text\nhalf written\n")
    (tmp_path / ".draft.csv").write_text("text\nnot mine\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "a.csv").write_text("text\none\n")
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write("text\ntwo\n")
    assert list_files(str(tmp_path)) == ([str(tmp_path / "a.csv"), str(tmp_path / "b.csv.gz")], "csv")
    (tmp_path / "notes.txt").write_text("a note\n")
    with pytest.raises(ICCError, match=r"unsupported file type in data.path: .*notes.txt"):
        list_files(str(tmp_path))


def test_compressed_csv_and_blank_lines_are_rows(ray_session, tmp_path):
    """A blank CSV line is a row, kept as a reject (before: dropped, so rows out < lines in)."""
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write("text,label\nfirst,x\n\nthird,y\n")
    rows = read_corpus(str(tmp_path / "a.csv.gz"), "text", label_column="label").take_all()
    assert [r["text"] for r in rows] == ["first", "", "third"]
    assert [r["reject"] for r in rows] == ["", "empty text", ""]
    assert [r["label"] for r in rows] == ["x", None, "y"]


@pytest.mark.parametrize("name", ["a.parquet", "b.jsonl"])
def test_read_corpus_roles_and_order(ray_session, corpora, name):
    rows = read_corpus(str(corpora / name), "doc", "key", "tag").take_all()
    assert [r["text"] for r in rows] == [f"text number {i}" for i in range(6)]
    assert [r["id"] for r in rows] == [f"k{i}" for i in range(6)]
    assert [r["label"] for r in rows] == [0, 1, 0, 1, 0, 1]
    assert all(r["reject"] == "" for r in rows)


def test_read_corpus_csv_quotes_newlines_and_bad_bytes(ray_session, corpora):
    rows = read_corpus(str(corpora / "c.csv"), "doc").take_all()
    assert [r["text"] for r in rows] == ['two\nlines, "quoted"', "caf\ufffd", ""]
    assert [r["replaced"] for r in rows] == [False, True, False]
    assert [r["reject"] for r in rows] == ["", "", "empty text"]


def test_read_corpus_unknown_column_names_the_columns(ray_session, corpora):
    with pytest.raises(ICCError, match=r"text column 'body' not in .* \(columns: doc, tag, key\)"):
        read_corpus(str(corpora / "a.parquet"), "body")
