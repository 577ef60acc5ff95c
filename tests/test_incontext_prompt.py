import time

import pytest

from icc.incontext.prompt import SYSTEM_PROMPT, chat_messages, numeric_prompt, parse_labels, text_prompt


def test_numeric_prompt_is_the_papers():
    prompt = numeric_prompt([[1.234, -4.5], [0.1, 2.0], [-0.001, 7]], k=2)
    assert prompt.text == (
        "Cluster the following data into 2 clusters. Only output the cluster labels for each point "
        "as a list of integers. Data: [[1.23, -4.5], [0.1, 2.0], [0.0, 7.0]] Labels:"
    )
    assert [prompt.text[a:b] for a, b in prompt.item_spans] == ["[1.23, -4.5]", "[0.1, 2.0]", "[0.0, 7.0]"]


def test_numeric_prompt_one_dimensional():
    prompt = numeric_prompt([[3.0], [-1.255]], k=1)
    assert "Data: [[3.0], [-1.25]] Labels:" in prompt.text  # the float 1.255 is 1.25499...
    assert [prompt.text[a:b] for a, b in prompt.item_spans] == ["[3.0]", "[-1.25]"]


def test_text_prompt_and_spans():
    texts = ["great film", "awful\n  movie", "1. tricky"]
    prompt = text_prompt(texts, k=2, condition="by sentiment")
    assert prompt.text == (
        "Cluster the following 3 texts into 2 clusters by sentiment. Only output the cluster labels "
        "for each text as a list of integers. Texts:\n1. great film\n2. awful movie\n3. 1. tricky\nLabels:"
    )
    assert [prompt.text[a:b] for a, b in prompt.item_spans] == ["great film", "awful movie", "1. tricky"]
    assert text_prompt(texts, k=2).text.startswith("Cluster the following 3 texts into 2 clusters. Only")


def test_chat_messages():
    assert chat_messages("hi") == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.parametrize(
    "answer, labels, status",
    [
        ("[0, 1, 0, 1]", [0, 1, 0, 1], "ok"),
        ("", [-1] * 4, "no_list"),
        ("I think the clusters are 0,1,0", [-1] * 4, "no_list"),
        ("[0, 1]", [0, 1, -1, -1], "padded"),
        ("[0, 1, 2, 0, 1, 2]", [0, 1, 2, 0], "trimmed"),
        ("[]", [-1] * 4, "padded"),
        ("[[0,1],[1,0]]", [0, 1, -1, -1], "padded"),
        ("Labels: [0, 1, 2, 99999999999999999999999999]", [0, 1, 2, -1], "ok"),
        ("[0, 1, 2, " + "9" * 400 + "]", [0, 1, 2, -1], "ok"),
        ("[0, 1", [0, 1, -1, -1], "padded"),
        ("[a, b]", [-1, -1, -1, -1], "padded"),
        ("[0.5, 1, x, 2]", [-1, 1, -1, 2], "ok"),
        ("```python\n[0,1,1,0]\n```", [0, 1, 1, 0], "ok"),
        ("Sure! The labels are [1, 0, 1, 0]. As a list: [9, 9, 9, 9]", [1, 0, 1, 0], "ok"),
        ('["0", "1", "1", "0"]', [0, 1, 1, 0], "ok"),
        ("[0 1\n1 0]", [0, 1, 1, 0], "ok"),
        ("[-2, +1, 0, 1,]", [-2, 1, 0, 1], "ok"),
        ("no list ] here", [-1] * 4, "no_list"),
    ],
)
def test_parse_labels(answer, labels, status):
    assert parse_labels(answer, 4) == (labels, status)


def test_parse_labels_zero_items():
    assert parse_labels("[]", 0) == ([], "ok")
    assert parse_labels("[1]", 0) == ([], "trimmed")


@pytest.mark.parametrize(
    "garbage",
    [
        "[" * 1_000_000,
        "[0, " * 250_000,
        "[" + "0, " * 330_000,
        "[" + "9" * 1_000_000 + "]",
        "x" * 1_000_000,
        "[" + "a" * 999_998 + "[",
        "-" * 1_000_000,
    ],
)
def test_parse_labels_linear_on_1mb_garbage(garbage):
    start = time.perf_counter()
    labels, _ = parse_labels(garbage, 50)
    assert time.perf_counter() - start < 1.0
    assert len(labels) == 50
