"""Constrained answers: a transformers `LogitsProcessor` under which a causal LM can only write a
labelling of an episode's n items into k clusters, in the form the fine-tuning teaches
(`icc.finetune.data.answer_text`), and then end its turn:

    [0, 1, 0, 2]    n labels in 0..k-1, each at most one more than the largest before it

The answer is a character automaton (`Labelling`); a token is allowed when the text it writes keeps
the answer a prefix of a valid one. The text each token writes is read once per tokenizer
(`answer_tokens`: only the few tokens made of "[", "]", ",", " " and digits can ever be allowed),
and the tokens allowed in a state by a scan of those few, once per state and `generate` call; a
step then costs a look-up per row and one masking of the (B, vocab) scores.
"""

import functools
from typing import NamedTuple

import torch
from transformers import LogitsProcessor

from icc.errors import ICCError

DIGITS = frozenset("0123456789")
CHARS = DIGITS | set("[], ")  # the characters of an answer

OPEN, LABEL, NUMBER, SPACE, DONE = "open", "label", "number", "space", "done"


class State(NamedTuple):
    """Where an answer stands. phase: OPEN (nothing written), LABEL (a label's first digit comes
    next), NUMBER (inside the label `value`), SPACE (after a ","), DONE (after the "]");
    written: the labels completed; top: the largest of them (-1: none)."""

    phase: str
    written: int = 0
    top: int = -1
    value: int = 0


START = State(OPEN)


def answer_length(n: int, k: int) -> int:
    """Characters of the longest answer for n items and k clusters, [0, 1, 2, ..., k-1, k-1, ...]:
    since every allowed token writes at least one, that many new tokens end any constrained answer."""
    return 2 * n + sum(len(str(min(i, k - 1))) for i in range(n))


class Labelling:
    """The valid answers for n items and k clusters, read character by character."""

    def __init__(self, n: int, k: int):
        if n < 1 or k < 1:
            raise ICCError(f"a labelling needs n >= 1 items and k >= 1 clusters, got n={n}, k={k}")
        self.n, self.k = n, k

    def advance(self, state: State, text: str) -> State | None:
        """The state after writing `text` in `state`; None when no valid answer goes on so."""
        for char in text:
            state = self._step(state, char)
            if state is None:
                return None
        return state

    def _step(self, state: State, char: str) -> State | None:
        limit = min(self.k - 1, state.top + 1)  # the largest label allowed next: first-appearance order
        if state.phase == OPEN and char == "[":
            return State(LABEL)
        if state.phase == SPACE and char == " ":
            return state._replace(phase=LABEL)
        if state.phase == LABEL and char in DIGITS and int(char) <= limit:
            return state._replace(phase=NUMBER, value=int(char))
        if state.phase == NUMBER:
            longer = 10 * state.value + int(char) if char in DIGITS else None
            if longer is not None:  # no leading zeros
                return state._replace(value=longer) if state.value and longer <= limit else None
            written, top = state.written + 1, max(state.top, state.value)
            if char == "," and written < self.n:
                return State(SPACE, written, top)
            if char == "]" and written == self.n:
                return State(DONE, written, top)
        return None


class AnswerTokens(NamedTuple):
    """{token id: the text it writes} for the tokens made only of answer characters, special tokens
    left out: `first` at the start of an answer, `later` after other text. They differ for
    SentencePiece, whose "▁[" writes "[" first and " [" later."""

    first: dict[int, str]
    later: dict[int, str]


@functools.lru_cache(maxsize=8)
def answer_tokens(tokenizer) -> AnswerTokens:
    """The `AnswerTokens` of a tokenizer (SmolLM2: 56 of its 49152 tokens), a later text being read
    after an anchor token. ICCError unless every answer character is also a token on its own (then
    every valid prefix can go on): WordPiece, say, writes "]" only as " ]"."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
    head = tokenizer.decode(anchor)
    special = set(tokenizer.all_special_ids)

    def made_of_answer_characters(texts: list[str]) -> dict[int, str]:
        return {token: text for token, text in enumerate(texts) if token not in special and text and set(text) <= CHARS}

    first = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    later = tokenizer.batch_decode([anchor + [token] for token in range(len(tokenizer))])
    tokens = AnswerTokens(
        made_of_answer_characters(first),
        made_of_answer_characters([text[len(head):] if text.startswith(head) else "" for text in later]),
    )
    missing = (CHARS - set(tokens.later.values())) | ({"["} - set(tokens.first.values()))
    if missing:
        raise ICCError(f"the tokenizer has no token of its own for {sorted(missing)}, so it cannot write every answer")
    return tokens


class LabellingProcessor(LogitsProcessor):
    """Scores of one `generate` call, masked so that row b writes a labelling for `sizes[b]` = (n, k)
    and then one of `eos_token_ids` (an id, a list, as `generation_config.eos_token_id` has them).

    One sequence per prompt (greedy or sampled, no beams), and a new processor for each call: it
    follows each row's answer by the token it last chose. Rows that have ended get padding, ignored.
    """

    def __init__(self, tokenizer, sizes: list[tuple[int, int]], eos_token_ids: int | list[int] | None):
        self.tokens = answer_tokens(tokenizer)
        self.eos = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids or [])
        if not self.eos:
            raise ICCError("the model has no end-of-sequence token to end its answers with")
        labellings = {size: Labelling(*size) for size in set(sizes)}
        self.rows = [labellings[size] for size in sizes]
        self.states: list[State] | None = None  # per row, None before the first step
        self.cache: dict[tuple[Labelling, State], dict[int, State]] = {}  # `allowed`

    def allowed(self, labelling: Labelling, state: State) -> dict[int, State]:
        """{token id: the state after it} for the tokens allowed in `state` (DONE: the EOS ids)."""
        key = (labelling, state)
        if key not in self.cache:
            if state.phase == DONE:
                self.cache[key] = dict.fromkeys(self.eos, state)
            else:
                texts = self.tokens.first if state.phase == OPEN else self.tokens.later
                after = {token: labelling.advance(state, text) for token, text in texts.items()}
                self.cache[key] = {token: next_state for token, next_state in after.items() if next_state}
        return self.cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids (B, T): the prompts and the tokens chosen so far; scores (B, vocab). Returns the
        scores with -inf on every token that the row's answer does not allow next."""
        if self.states is None:
            self.states = [START] * len(self.rows)
        else:
            self.states = [
                state if state.phase == DONE else self.allowed(labelling, state)[token]
                for labelling, state, token in zip(self.rows, self.states, input_ids[:, -1].tolist())
            ]
        moves = [self.allowed(labelling, state) for labelling, state in zip(self.rows, self.states)]
        rows = torch.tensor([row for row, row_moves in enumerate(moves) for _ in row_moves], device=scores.device)
        tokens = torch.tensor([token for row_moves in moves for token in row_moves], device=scores.device)
        masked = torch.full_like(scores, float("-inf"))
        masked[rows, tokens] = scores[rows, tokens]
        return masked
