"""Clustering episodes as next-token-prediction examples, and their batches.

An example is the chat prompt of an episode (as `icc incontext` renders it) followed by the answer
`[0, 1, 0, ...]` and the tokenizer's EOS token (the end-of-turn token of instruct models: <|im_end|>
for SmolLM2 and Qwen, <|eot_id|> for Llama 3). The loss is on the answer and that token only
(LOSS_TOKENS "answer"), or on the label tokens only ("labels"): the brackets, ", " and EOS, two
thirds of an answer's tokens, are what constrained decoding writes anyway.
Answers number the clusters in order of first appearance, so that one partition has one answer.
"""

import numpy as np
import torch

from icc.errors import ICCError
from icc.incontext.runner import render_episode

IGNORE = -100  # the label of a token without loss (torch cross-entropy's ignore_index)
GROUP = 50  # micro-batches per length-sorted chunk: long enough to group lengths, short enough to mix
LOSS_TOKENS = ("answer", "labels")  # the answer tokens with loss: all of them (and EOS), or the labels' digits


def first_appearance(labels) -> list[int]:
    """Labels renumbered 0, 1, ... in the order in which they first appear: [2, 2, 0, 1] -> [0, 0, 1, 2]."""
    ids: dict = {}
    return [ids.setdefault(label, len(ids)) for label in labels]


def shuffled(episode: dict, rng: np.random.Generator) -> dict:
    """The episode with its points (and their labels) in a random order: the same clustering task."""
    order = rng.permutation(episode["n"])
    return {**episode, "points": [episode["points"][i] for i in order], "labels": [episode["labels"][i] for i in order]}


def answer_text(labels) -> str:
    """The answer for true labels (n,): `[0, 1, 0, ...]`, numbered by first appearance."""
    return "[" + ", ".join(map(str, first_appearance(labels))) + "]"


def label_spans(answer: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the labels in an `answer_text`: "[0, 12]" -> [(1, 2), (4, 6)]."""
    spans, start = [], 1
    for label in answer[1:-1].split(", "):
        spans.append((start, start + len(label)))
        start += len(label) + 2
    return spans


def check_loss_tokens(loss_tokens: str) -> None:
    """ICCError unless `loss_tokens` is one of LOSS_TOKENS."""
    if loss_tokens not in LOSS_TOKENS:
        raise ICCError(f"data.loss_tokens must be one of {', '.join(LOSS_TOKENS)}, got {loss_tokens!r}")


def encode(tokenizer, episode: dict, loss_tokens: str = "answer") -> dict[str, list[int]]:
    """`input_ids` (prompt, answer, EOS) and `labels`: the token id where there is loss, else IGNORE.

    loss_tokens "answer": loss on the answer and EOS; "labels": on the tokens that write a label's
    digits only (a token overlapping a label counts). The prompt and the answer are tokenised apart,
    as at generation, where the answer's tokens follow the prompt's.
    """
    check_loss_tokens(loss_tokens)
    if tokenizer.eos_token_id is None:
        raise ICCError("the tokenizer has no EOS token to end the answers with")
    prompt, _ = render_episode(tokenizer, episode)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = answer_text(episode["labels"])
    tokens = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    answer_ids = tokens["input_ids"] + [tokenizer.eos_token_id]
    targets = list(answer_ids)
    if loss_tokens == "labels":
        spans = label_spans(answer)
        targets = [
            token if any(start < end_label and start_label < end for start_label, end_label in spans) else IGNORE
            for token, (start, end) in zip(targets, tokens["offset_mapping"] + [(0, 0)])
        ]
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE] * len(prompt_ids) + targets}


class TrainingSet:
    """Training episodes as examples (`encode` with `loss_tokens`): episode `index` in epoch `epoch`
    (with `augment`, its points in an order drawn from (seed, epoch, index)), collated into batches."""

    def __init__(self, tokenizer, episodes: list[dict], augment: bool, seed: int, loss_tokens: str = "answer"):
        self.tokenizer, self.episodes, self.augment, self.seed = tokenizer, episodes, augment, seed
        self.loss_tokens = loss_tokens
        self.encoded = [encode(tokenizer, e, loss_tokens) for e in episodes]
        self.lengths = [len(e["input_ids"]) for e in self.encoded]  # in tokens, before augmentation

    def example(self, index: int, epoch: int) -> dict[str, list[int]]:
        if not self.augment:
            return self.encoded[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        return encode(self.tokenizer, shuffled(self.episodes[index], rng), self.loss_tokens)

    def batch(self, indices: list[int], epoch: int) -> dict[str, torch.Tensor]:
        return collate([self.example(i, epoch) for i in indices], self.tokenizer.pad_token_id)


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) int64 tensors `input_ids`, `attention_mask` and `labels` (IGNORE on padding)."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.int64),
        "labels": torch.full((len(examples), width), IGNORE),
    }
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        batch["input_ids"][row, :length] = torch.tensor(example["input_ids"])
        batch["attention_mask"][row, :length] = 1
        batch["labels"][row, :length] = torch.tensor(example["labels"])
    return batch


def micro_batches(lengths, batch_size: int, rng: np.random.Generator | None = None) -> list[list[int]]:
    """Example indices in batches of `batch_size` (the last may be smaller) of similar lengths.

    Without `rng`: all examples sorted by length, longest first. With `rng`: shuffled, sorted by length
    within chunks of GROUP batches, and the batches shuffled.
    """
    lengths = np.asarray(lengths)
    if rng is None:
        chunks = [np.argsort(-lengths, kind="stable")]
    else:
        order = rng.permutation(len(lengths))
        chunks = [order[i : i + batch_size * GROUP] for i in range(0, len(order), batch_size * GROUP)]
        chunks = [chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in chunks]
    batches = [chunk[i : i + batch_size].tolist() for chunk in chunks for i in range(0, len(chunk), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def epoch_steps(lengths, micro_batch_size: int, workers: int, accumulation: int, seed: int, epoch: int) -> list:
    """One epoch's optimizer steps: `steps[s][rank]` is the list of `accumulation` micro-batches
    (example indices) that worker `rank` runs for step s. The epoch's last micro-batches that do not
    fill a step are left out. The same (seed, epoch) gives the same steps, so a resumed run goes on
    where it stopped."""
    batches = micro_batches(lengths, micro_batch_size, np.random.default_rng([seed, epoch]))
    per_step = workers * accumulation
    return [
        [batches[start + rank : start + per_step : workers] for rank in range(workers)]
        for start in range(0, len(batches) - per_step + 1, per_step)
    ]
