import numpy as np
import pytest

from icc.models.embedder import TextEmbedder
from icc.models.hub import resolve_model


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder("all-MiniLM-L6-v2", batch_size=4)


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
