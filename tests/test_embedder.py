import subprocess

import numpy as np
import pytest
import torch

from icc import TextClusterer
from icc.corpus.embed_stage import check_embed_settings, embed_key, resolve_embedder
from icc.errors import ICCError
from icc.models.device import cpu_has_amx_bf16, resolve_precision
from icc.models.embedder import CPU_TOKENS_PER_BATCH, TextEmbedder, check_embedder, loadable_settings
from icc.models.hub import resolve_model


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder("all-MiniLM-L6-v2", batch_size=4, precision="float32")


TEXTS = [
    "How do I reset my card PIN?",
    "I forgot the PIN of my card, how can I change it?",
    "The football team won the championship last night.",
    "short",
    "A much longer sentence about the weather in the mountains during a stormy winter afternoon.",
]


def test_matches_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    ours = embedder.embed(TEXTS)  # sorted by length inside, returned in input order
    assert ours.shape == (5, 384)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_similar_texts_are_closer(embedder):
    v = embedder.embed(TEXTS[:3])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_multi_megabyte_text_is_truncated_quickly(embedder):
    vectors, lengths = embedder.embed_with_lengths(["word " * 1_000_000, "tiny"])
    assert lengths[0] == embedder.max_length and lengths[1] < 10
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_ray_batch_skips_rejected_rows(embedder):
    batch = {"text": np.array(["hello world", ""], dtype=object), "reject": np.array(["", "empty text"])}
    out = embedder(batch)
    assert out["vector"].shape == (2, 384)
    assert np.linalg.norm(out["vector"][0]) == pytest.approx(1, abs=1e-5)
    assert not out["vector"][1].any()


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_puts_each_rows_ids_on_the_tokenizers_side(embedder, side):
    pad, before = embedder.tokenizer.pad_token_id, embedder.tokenizer.padding_side
    embedder.tokenizer.padding_side = side
    try:
        tokens = embedder._pad([[101, 7, 8, 102], [101, 102], np.array([101, 9, 102], dtype=np.int32)])
    finally:
        embedder.tokenizer.padding_side = before
    rows = [[101, 7, 8, 102], [101, 102, pad, pad], [101, 9, 102, pad]]
    masks = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    if side == "left":
        rows = [[pad] * r.count(pad) + [t for t in r if t != pad] for r in rows]
        masks = [m[::-1] for m in masks]
    assert tokens["input_ids"].tolist() == rows and tokens["attention_mask"].tolist() == masks


def test_batches_follow_token_counts_not_characters():
    """Texts whose characters and tokens disagree (digits: a token each; long words: few tokens)
    run in batches of similar token counts, so padding stays small."""

    class Recording(TextEmbedder):
        def _forward(self, tokens):
            self.batches.append(tokens["attention_mask"].sum(1).tolist())
            return super()._forward(tokens)

    embedder = Recording("all-MiniLM-L6-v2", batch_size=3)
    embedder.batches = []
    texts = ["1 2 3 4 5 6 7 8", "internationalization", "9 8 7 6 5 4 3 2", "counterrevolutionaries",
             "incomprehensibility", "5 5 5 5 5 5 5 5"]
    vectors = embedder.embed(texts)
    np.testing.assert_allclose(vectors, np.stack([embedder.embed([t])[0] for t in texts]), atol=1e-5)
    first, second = embedder.batches[:2]
    assert max(first) <= min(second)
    assert len(set(second)) == 1  # the three digit strings together: no padding at all


def test_int8_quantised_vectors_stay_close_to_float(embedder):
    quantised = TextEmbedder("all-MiniLM-L6-v2", batch_size=4, precision="int8")
    assert not any(type(m) is torch.nn.Linear for m in quantised.model.modules())  # every Linear is int8 now
    ours = quantised.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    cosine = np.sum(ours * embedder.embed(TEXTS), axis=1)
    assert cosine.min() > 0.95 and not np.allclose(cosine, 1, atol=1e-4)  # close, yet computed in int8
    assert ours[0] @ ours[1] > ours[0] @ ours[2] + 0.3


def test_precision_is_checked_before_loading_and_old_keys_name_the_new_one():
    with pytest.raises(ICCError, match="unknown embedder.precision 'int4'"):
        check_embedder("all-MiniLM-L6-v2", precision="int4")
    with pytest.raises(ICCError, match="does not run on the cuda"):
        TextEmbedder("all-MiniLM-L6-v2", device="cuda", precision="int8")  # refused before CUDA is touched
    with pytest.raises(ICCError, match="float16 does not run on the cpu"):
        TextEmbedder("all-MiniLM-L6-v2", device="cpu", precision="float16")
    for old in ("dtype", "quantize"):
        with pytest.raises(ICCError, match=f"embedder.{old} is now embedder.precision"):
            check_embed_settings({"model": "all-MiniLM-L6-v2", old: "int8"}, {}, 100)
    with pytest.raises(ICCError, match="embedder.dtype is now embedder.precision"):
        TextClusterer(embedder={"model": "all-MiniLM-L6-v2", "dtype": "bfloat16"}).fit(TEXTS)
    with pytest.raises(ICCError, match="never downloads"):  # in the driver, before Ray starts
        check_embedder("sentence-transformers/all-mpnet-base-v2", precision="onnx-int8")
    check_embedder("all-MiniLM-L6-v2", precision="onnx-int8")  # a known offline model converts


def test_settings_recorded_before_precision_read_as_what_they_computed_in():
    old = {"model": "all-MiniLM-L6-v2", "max_length": 256, "dtype": "auto", "quantize": None}
    assert loadable_settings(old) == {"model": "all-MiniLM-L6-v2", "max_length": 256, "precision": "float32"}
    assert loadable_settings({**old, "quantize": "int8"})["precision"] == "int8"
    assert loadable_settings({**old, "dtype": "bfloat16"})["precision"] == "bfloat16"
    assert loadable_settings({"model": "m", "precision": "bfloat16"}) == {"model": "m", "precision": "bfloat16"}
    assert loadable_settings({"model": "m", "precision": "float16"})["precision"] == "auto"  # GPUs only: a CPU's own


def test_auto_precision_is_bf16_on_cpus_with_amx_and_unchanged_on_gpus():
    """auto: GPU autocast as before ("auto", decided on the GPU); on a CPU bf16 where it has AMX-BF16
    (the kernel's cpuinfo flag, cross-checked with lscpu's), else float32; resolved in the driver
    for the pool's device, as the embed stage's key records it."""
    flags = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout.split()
    assert cpu_has_amx_bf16() == ("amx_bf16" in flags)
    cpu = "bfloat16" if cpu_has_amx_bf16() else "float32"
    assert resolve_precision("auto", gpu=False) == cpu and resolve_precision("auto", gpu=True) == "auto"
    assert resolve_precision("int8", gpu=False) == "int8"
    settings = {"model": "all-MiniLM-L6-v2", "precision": "auto"}
    assert resolve_embedder(settings, {"num_gpus": 0})["precision"] == cpu
    assert resolve_embedder(settings, {"num_gpus": 1})["precision"] == "auto"
    keys = {embed_key("x", {}, resolve_embedder(settings, {"num_gpus": n}), "fingerprint") for n in (0, 1)}
    assert len(keys) == 2  # a CPU run and a GPU run never resume each other's shards
    default = TextEmbedder("all-MiniLM-L6-v2", device="cpu")
    assert default.precision == cpu and default.autocast_dtype is None
    assert next(default.model.parameters()).dtype == (torch.bfloat16 if cpu == "bfloat16" else torch.float32)


def test_bfloat16_on_the_cpu_casts_the_weights(embedder):
    bf16 = TextEmbedder("all-MiniLM-L6-v2", batch_size=4, precision="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    ours = bf16.embed(TEXTS)
    assert ours.dtype == np.float32
    cosine = np.sum(ours * embedder.embed(TEXTS), axis=1)
    assert cosine.min() > 0.99 and not np.allclose(cosine, 1, atol=1e-6)


def test_cpu_float32_batches_fill_a_token_budget(embedder):
    default = TextEmbedder("all-MiniLM-L6-v2", precision="float32")
    assert default.tokens_per_batch == CPU_TOKENS_PER_BATCH and embedder.tokens_per_batch is None  # batch_size set
    counts = np.array([4] * 300 + [60] * 40 + [256] * 3)
    # 256 rows of 4 tokens (the cap), the other 44, then 17 x 60 = 1020 tokens, and the 256-token rows 3 together.
    assert [s.stop - s.start for s in default.forward_batches(counts)] == [256, 44, 17, 17, 6, 3]
    assert [s.stop - s.start for s in embedder.forward_batches(counts)] == [4] * 85 + [3]
    np.testing.assert_allclose(default.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)


def test_onnx_int8_is_converted_once_into_the_cache_and_stays_close_to_float(embedder, tmp_path, monkeypatch):
    """precision=onnx-int8: the ONNX Runtime int8 graph, converted at the first load into the model cache,
    read from it at the next; an entry icc did not write is refused, never overwritten; never downloads."""
    from icc.models.onnx_encoder import MODEL_FILE, RECORD_FILE

    monkeypatch.setenv("ICC_CACHE", str(tmp_path))
    converted = TextEmbedder("all-MiniLM-L6-v2", batch_size=4, precision="onnx-int8")
    [entry] = (tmp_path / "models" / "onnx-int8").iterdir()  # no partial directory left beside it
    assert sorted(p.name for p in entry.iterdir()) == sorted([MODEL_FILE, RECORD_FILE])
    written = (entry / MODEL_FILE).stat().st_mtime_ns
    ours, lengths = converted.embed_with_lengths(TEXTS)
    reference, reference_lengths = embedder.embed_with_lengths(TEXTS)
    np.testing.assert_array_equal(lengths, reference_lengths)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() > 0.97 and not np.allclose(cosine, 1, atol=1e-4)  # close, yet computed in int8
    cached = TextEmbedder("all-MiniLM-L6-v2", batch_size=4, precision="onnx-int8")
    assert (entry / MODEL_FILE).stat().st_mtime_ns == written
    np.testing.assert_allclose(cached.embed(TEXTS), ours, atol=1e-6)
    record = (entry / RECORD_FILE).read_text()
    for foreign in ("not json", "[]", None):  # now an entry as if another program had put it there
        if foreign is None:
            (entry / RECORD_FILE).unlink()
        else:
            (entry / RECORD_FILE).write_text(foreign)
        with pytest.raises(ICCError, match="icc did not write"):
            TextEmbedder("all-MiniLM-L6-v2", precision="onnx-int8")
    (entry / RECORD_FILE).write_text(record)
    (entry / MODEL_FILE).rename(entry / "moved.onnx")
    with pytest.raises(ICCError, match="icc did not write"):  # a record without its graph
        TextEmbedder("all-MiniLM-L6-v2", precision="onnx-int8")
    (entry / "moved.onnx").rename(entry / MODEL_FILE)
    assert (entry / MODEL_FILE).stat().st_mtime_ns == written
    with pytest.raises(ICCError, match="never downloads"):
        TextEmbedder("sentence-transformers/all-mpnet-base-v2", precision="onnx-int8")
