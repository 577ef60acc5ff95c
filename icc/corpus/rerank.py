"""Pairwise LLM reranking: "which of these two texts better matches the query? A or B".

A `PairwiseJudge` reads the LLM's choice from the next-token logits of "A" and "B" (no text to
parse) and asks every pair in both orders, averaging the two, so that a model that favours the
first (or second) position gains nothing from it: prefer(a, b) = 1 - prefer(b, a).
`PairwiseReranker` sorts the candidates with a merge sort over these judgments, all merges of a
level asked in one batch, within a bound on the number of prompts.
"""

import numpy as np
import torch

from icc.checks import check_int, check_positive_int
from icc.errors import ICCError
from icc.models.llm import check_causal_lm, load_causal_lm, next_token_logits, render_chat

PROMPT = (
    "Query: {query}\n\nText A: {a}\n\nText B: {b}\n\n"
    "Which text better matches the query? Answer with one letter: A or B."
)
CHOICES = ("A", "B")


class PairwiseJudge:
    """An LLM comparing two texts for a query.

    model, tokenizer: from `icc.models.llm.load_causal_lm` (left padding).
    max_chars: each text (and the query) is cut to this many characters in the prompt.
    batch_size: prompts per forward pass.
    `prompts` counts the prompts scored so far (two per compared pair).
    """

    def __init__(self, model, tokenizer, max_chars: int = 600, batch_size: int = 16):
        self.model, self.tokenizer = model, tokenizer
        self.max_chars, self.batch_size = max_chars, batch_size
        self.choice_ids = [_single_token(tokenizer, c) for c in CHOICES]
        self.prompts = 0

    @classmethod
    def load(cls, model: str, max_chars: int = 600, batch_size: int = 16, **load_options) -> "PairwiseJudge":
        """Load `model` (see `load_causal_lm` for `load_options`: dtype, device, adapter, num_threads, ...)."""
        return cls(*load_causal_lm(model, **load_options), max_chars=max_chars, batch_size=batch_size)

    def prefer(self, query: str, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(len(pairs),) probability that the first text of each pair matches the query better,
        from the pair asked in both orders (A, B) and (B, A): exactly 1 - prefer for the swapped pair."""
        if not pairs:
            return np.zeros(0)
        self.prompts += 2 * len(pairs)
        p_a = self.first_choice(query, list(pairs) + [(b, a) for a, b in pairs])
        return (p_a[: len(pairs)] + 1 - p_a[len(pairs) :]) / 2

    def first_choice(self, query: str, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(len(pairs),) the LLM's probability of answering "A" rather than "B", each pair shown
        once as (Text A, Text B)."""
        cut = self.max_chars
        prompts = [
            render_chat(self.tokenizer, [{"role": "user", "content": PROMPT.format(query=query[:cut], a=a[:cut], b=b[:cut])}])
            for a, b in pairs
        ]
        logits = torch.cat([
            next_token_logits(self.model, self.tokenizer, prompts[i : i + self.batch_size])[:, self.choice_ids]
            for i in range(0, len(prompts), self.batch_size)
        ])
        return torch.softmax(logits, dim=-1)[:, 0].numpy()


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ICCError(f"the LLM's tokenizer splits the answer '{text}' into {len(ids)} tokens; pairwise reranking needs one")
    return ids[0]


def worst_case_comparisons(n: int) -> int:
    """The most comparisons `PairwiseReranker` makes to sort n items (each costs two prompts)."""
    runs, total = [1] * n, 0
    while len(runs) > 1:
        pairs = list(zip(runs[::2], runs[1::2]))
        total += sum(a + b - 1 for a, b in pairs)
        runs = [a + b for a, b in pairs] + runs[2 * len(pairs) :]
    return total


class PairwiseReranker:
    """Reorder retrieved texts by pairwise LLM judgments, in at most `max_calls` prompts.

    A bottom-up merge sort: ties (prefer = 0.5) keep the retrieval order. The longest prefix of the
    candidates whose worst-case sort fits in `max_calls` prompts is sorted; the rest keep their
    retrieval order below it.
    """

    def __init__(self, judge: PairwiseJudge, max_calls: int = 100):
        check_int(max_calls, "rerank.max_calls")
        self.judge, self.max_calls = judge, max_calls

    def sortable(self, n: int) -> int:
        """How many of n candidates fit in the budget."""
        m = n
        while m > 1 and 2 * worst_case_comparisons(m) > self.max_calls:
            m -= 1
        return m

    def rerank(self, query: str, texts: list[str]) -> np.ndarray:
        """The new order of `texts` (given best first by retrieval): (len(texts),) indices into them."""
        m = self.sortable(len(texts))
        runs = [[i] for i in range(m)]
        while len(runs) > 1:
            merges = [(left, right, []) for left, right in zip(runs[::2], runs[1::2])]
            carry = runs[2 * len(merges) :]
            while active := [(left, right, out) for left, right, out in merges if left and right]:
                p = self.judge.prefer(query, [(texts[left[0]], texts[right[0]]) for left, right, _ in active])
                for (left, right, out), p_left in zip(active, p):
                    out.append(left.pop(0) if p_left >= 0.5 else right.pop(0))
            runs = [out + left + right for left, right, out in merges] + carry
        return np.array([*(runs[0] if runs else []), *range(m, len(texts))], dtype=np.int64)


RERANKERS = ("none", "llm")


def check_reranker(kind: str, llm: dict, num_threads: int | None = None, max_calls: int = 100, max_chars: int = 600,
                   batch_size: int = 16) -> None:
    """ICCError for a `make_reranker` setting of the wrong type or range, before anything loads
    (the LLM's settings only with kind "llm")."""
    if kind not in RERANKERS:
        raise ICCError(f"unknown search.rerank '{kind}' (choose from {', '.join(RERANKERS)})")
    check_int(max_calls, "rerank.max_calls")
    check_positive_int(max_chars, "rerank.max_chars")
    check_positive_int(batch_size, "rerank.batch_size")
    if kind == "llm":
        check_causal_lm(**llm)
        check_positive_int(num_threads, "llm.pool.num_threads", allow_none=True)


def make_reranker(kind: str, llm: dict, num_threads: int | None = None, max_calls: int = 100, max_chars: int = 600,
                  batch_size: int = 16) -> "PairwiseReranker | None":
    """The reranker of `icc search`: None for "none"; for "llm", a `PairwiseReranker` whose judge is
    the LLM that `llm` loads (the config's `llm` load keys), scoring in this process."""
    check_reranker(kind, llm, num_threads, max_calls, max_chars, batch_size)
    if kind == "none":
        return None
    judge = PairwiseJudge.load(**llm, num_threads=num_threads, max_chars=max_chars, batch_size=batch_size)
    return PairwiseReranker(judge, max_calls)
