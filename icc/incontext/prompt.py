"""Prompts that ask a language model to cluster the items they list, and parsing of its answer.

The numeric prompt is the one of Wang et al. (2025); the text prompt follows it, with an optional
condition ("by sentiment"). Each prompt records the character span of every item, so that
attention can later be read per item.
"""

import itertools
import math
import re
from dataclasses import dataclass

from icc.errors import ICCError

SYSTEM_PROMPT = "You are a data clustering expert."

# The first flat [...] list, or else an unclosed one running to the end of the answer (a truncated
# generation). Possessive `*+` and bracket-free content keep the search linear in the answer length.
_LIST = re.compile(r"\[([^\[\]]*+)(?:\]|\Z)")
_TOKEN = re.compile(r"[^\s,'\"]+")  # list elements: split on commas, whitespace and quotes
_INT = re.compile(r"[+-]?\d{1,18}")  # larger numbers (>= 10**18) are no label: -1


@dataclass(frozen=True)
class Prompt:
    """`text`: the user prompt; `item_spans`: (start, end) character offsets, text[start:end] being
    item i as written (a point's inner list, or a text after its number)."""

    text: str
    item_spans: list[tuple[int, int]]


def _concat(parts: list[tuple[str, bool]]) -> Prompt:
    """Concatenate (piece, is_item) parts, recording the span of every item piece."""
    text, spans, pos = [], [], 0
    for piece, is_item in parts:
        if is_item:
            spans.append((pos, pos + len(piece)))
        text.append(piece)
        pos += len(piece)
    return Prompt("".join(text), spans)


def _number(x: float) -> str:
    """x rounded to 2 decimals, shortest form: 1.23, -4.5, 2.0 (as str() of a Python list); ICCError
    for NaN and infinities, which no prompt can show as numbers."""
    if not math.isfinite(x):
        raise ICCError(f"cannot write {x} into a prompt: points must be finite")
    return repr(round(float(x), 2) + 0.0)  # + 0.0 turns -0.0 into 0.0


def numeric_prompt(points, k: int) -> Prompt:
    """The paper's prompt for points (n, d): `Cluster the following data into {k} clusters. Only
    output the cluster labels for each point as a list of integers. Data: [[x, y], ...] Labels:`."""
    head = (
        f"Cluster the following data into {k} clusters. Only output the cluster labels for each "
        "point as a list of integers. Data: ["
    )
    parts = [(head, False)]
    for i, point in enumerate(points):
        if i:
            parts.append((", ", False))
        parts.append(("[" + ", ".join(_number(x) for x in point) + "]", True))
    parts.append(("] Labels:", False))
    return _concat(parts)


def text_prompt(texts: list[str], k: int, condition: str | None = None) -> Prompt:
    """Prompt for n short texts, one numbered line each, clustered by an optional `condition`
    (e.g. "by sentiment"). Whitespace runs inside a text (newlines too) become one space, so each
    text stays on its line; the item spans point at these normalised texts."""
    by = f" {condition}" if condition else ""
    head = (
        f"Cluster the following {len(texts)} texts into {k} clusters{by}. Only output the cluster "
        "labels for each text as a list of integers. Texts:\n"
    )
    parts = [(head, False)]
    for i, text in enumerate(texts, start=1):
        parts += [(f"{i}. ", False), (" ".join(text.split()), True), ("\n", False)]
    parts.append(("Labels:", False))
    return _concat(parts)


def chat_messages(prompt_text: str) -> list[dict]:
    """System and user messages for a chat template."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt_text}]


def parse_labels(answer: str, n: int) -> tuple[list[int], str]:
    """n labels from a model's answer, and a status: "ok", "padded", "trimmed" or "no_list".

    Reads the first flat `[...]` list (the first inner list when lists are nested); when no list
    is closed, the text after the last `[` (a generation cut off mid-list). Elements are separated
    by commas, whitespace or quotes; each is parsed as a (signed) integer, and anything else --
    words, floats such as 0.5, numbers of 19 or more digits -- becomes -1 in its place, so later
    labels keep their positions. Too few labels are padded with -1 ("padded"), too many cut to n
    ("trimmed"). An answer with no `[` gives [-1] * n ("no_list"). Linear time in len(answer).

    "[0, 1, 0]" -> [0, 1, 0]; "[[0,1],[1,0]]" -> [0, 1]; "[0, 1" -> [0, 1]; "[0.5, 1]" -> [-1, 1];
    "[a, b]" -> [-1, -1]; "the clusters are 0,1,0" -> no_list.
    """
    match = _LIST.search(answer)
    if match is None:
        return [-1] * n, "no_list"
    tokens = [t.group() for t in itertools.islice(_TOKEN.finditer(match.group(1)), n + 1)]
    labels = [int(t) if _INT.fullmatch(t) else -1 for t in tokens]
    if len(labels) > n:
        return labels[:n], "trimmed"
    if len(labels) < n:
        return labels + [-1] * (n - len(labels)), "padded"
    return labels, "ok"
