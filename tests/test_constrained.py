"""Constrained answers (`icc.incontext.constrained`): whatever a model scores, each answer is a labelling
`[0, 1, 0, ...]` of its episode's n items into k clusters, in first-appearance order, then EOS.

Fake models (scores drawn each step) drive the processor on the SmolLM2 tokenizer (byte-level BPE,
one digit a token) and on a small SentencePiece-style BPE trained here (multi-digit tokens such as
"▁10,", leading spaces); a tiny random Llama with that BPE and the real SmolLM2 answer through
`cluster_episodes`.
"""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from icc.errors import ICCError
from icc.finetune.data import answer_text
from icc.incontext.constrained import LabellingProcessor, answer_length, answer_tokens
from icc.incontext.prompt import numeric_prompt, parse_labels
from icc.incontext.runner import cluster_episodes
from icc.models.hub import MINILM, SMOLLM2, resolve_model
from icc.models.llm import load_causal_lm


def small_bpe() -> PreTrainedTokenizerFast:
    """A 300-token BPE with SentencePiece's spaces ("▁1,"), trained on answers with k = 12 and on
    numeric prompts, so that it has multi-digit tokens and every character of a prompt."""
    rng = np.random.default_rng(0)
    corpus = [answer_text(rng.integers(0, 12, size=30)) for _ in range(200)]
    corpus += [numeric_prompt(rng.normal(0, 5, (20, 2)), 3).text for _ in range(20)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>", padding_side="left")


@pytest.fixture(scope="module", params=["smollm2", "bpe"])
def tokenizer(request):
    if request.param == "smollm2":
        return AutoTokenizer.from_pretrained(resolve_model(SMOLLM2), padding_side="left")
    return small_bpe()


def assert_labellings(answers: list[str], sizes: list[tuple[int, int]]) -> None:
    """Each answer is exactly `answer_text` of n labels below k: first-appearance order, ", " apart."""
    for answer, (n, k) in zip(answers, sizes):
        labels, status = parse_labels(answer, n)
        assert status == "ok" and answer == answer_text(labels) and max(labels) < k, (answer, n, k)


def fake_generate(tokenizer, sizes: list[tuple[int, int]], scores, seed: int) -> list[str]:
    """Greedy generation as `model.generate` does it, under `LabellingProcessor`, from a fake model:
    `scores(generator)` gives each step's (B, vocab) scores. Every row must end with EOS within
    `answer_length` + 1 steps (the EOS after the longest answer); returns the decoded answers."""
    eos, generator = tokenizer.eos_token_id, torch.Generator().manual_seed(seed)
    processor = LabellingProcessor(tokenizer, sizes, eos)
    ids = torch.full((len(sizes), 3), eos)  # the prompts
    ended = torch.zeros(len(sizes), dtype=torch.bool)
    for _ in range(max(answer_length(n, k) for n, k in sizes) + 1):
        token = processor(ids, scores(generator)).argmax(dim=-1).masked_fill(ended, eos)  # ended rows: padding
        ended |= token == eos
        ids = torch.cat([ids, token[:, None]], dim=1)
    assert ended.all()
    return tokenizer.batch_decode(ids[:, 3:], skip_special_tokens=True)


def test_random_scores_give_a_labelling_for_every_n_and_k(tokenizer):
    """Every garbage token scores above every answer token, and answer tokens score at random.
    One batch per n (the k of its rows 2..12), so that no row waits long for the others."""
    answer_ids = list(answer_tokens(tokenizer).later)
    for n in range(1, 61):
        sizes = [(n, k) for k in range(2, 13)]

        def garbage_first(generator):
            scores = torch.full((len(sizes), len(tokenizer)), 10.0)
            scores[:, answer_ids] = torch.randn(len(sizes), len(answer_ids), generator=generator)
            return scores

        assert_labellings(fake_generate(tokenizer, sizes, garbage_first, seed=n), sizes)


def token_bias(tokenizer, wanted) -> torch.Tensor:
    """(vocab,) float32: 50 for the tokens whose text satisfies `wanted(text)`, else 0."""
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    return torch.tensor([50.0 if wanted(text) else 0.0 for text in texts])


ADVERSARIES = {
    "letters": lambda text: any(c.isalpha() for c in text),
    "close_early": lambda text: "]" in text,
    "never_close": lambda text: "," in text or "[" in text,
    "big_labels": lambda text: any(c in "56789" for c in text) or "11" in text,
    "zeros": lambda text: "00" in text or text.strip() == "0",
    "spaces": lambda text: text.isspace(),
}


@pytest.mark.parametrize("adversary", ADVERSARIES)
def test_a_model_drawn_to_garbage_still_writes_a_labelling(tokenizer, adversary):
    bias = token_bias(tokenizer, ADVERSARIES[adversary])
    bias[tokenizer.eos_token_id] = 100.0  # and it would end at once
    sizes = [(1, 2), (2, 2), (7, 3), (13, 11), (25, 12), (60, 12), (60, 2)]
    for seed in range(3):
        answers = fake_generate(tokenizer, sizes, lambda g: bias + torch.randn(len(sizes), len(bias), generator=g), seed)
        assert_labellings(answers, sizes)


def test_answer_length_is_the_longest_answer():
    assert answer_length(1, 2) == len("[0]")
    assert answer_length(3, 2) == len("[0, 1, 1]")
    assert answer_length(13, 11) == len(answer_text(list(range(11)) + [10, 10]))


def test_a_wordpiece_tokenizer_is_refused():
    """BERT's WordPiece writes "]" only as " ]" after a label, so some answers could not end."""
    with pytest.raises(ICCError, match="cannot write every answer"):
        answer_tokens(AutoTokenizer.from_pretrained(resolve_model(MINILM)))


def numeric_episodes(sizes: list[tuple[int, int]], seed: int = 0) -> list[dict]:
    """Episodes of n points, in k well separated groups along a line."""
    rng = np.random.default_rng(seed)
    episodes = []
    for n, k in sizes:
        labels = rng.permutation(np.arange(n) % k)
        episodes.append({"points": (10.0 * labels[:, None] + rng.normal(0, 0.5, (n, 1))).tolist(), "k": k, "n": n})
    return episodes


def assert_answered(results: list[dict], episodes: list[dict]) -> None:
    """`cluster_episodes` parsed every answer ("ok"), and each is a labelling of its episode."""
    assert [r["parse_status"] for r in results] == ["ok"] * len(episodes), [r["answer"] for r in results]
    assert_labellings([r["answer"] for r in results], [(e["n"], e["k"]) for e in episodes])


def test_a_random_llama_answers_batched_episodes_through_cluster_episodes():
    """Left-padded prompts of different lengths, n and k per row; random weights: random answers."""
    tokenizer = small_bpe()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    episodes = numeric_episodes([(25, 12), (3, 2), (40, 7), (12, 11)])

    assert_answered(cluster_episodes(model, tokenizer, episodes), episodes)
    free = cluster_episodes(model, tokenizer, episodes, max_new_tokens=20, constrained=False)
    assert all(result["parse_status"] != "ok" for result in free)


def test_smollm2_answers_numeric_episodes_with_labellings():
    model, tokenizer = load_causal_lm(SMOLLM2, device="cpu")
    episodes = numeric_episodes([(10, 2), (12, 11)])

    assert_answered(cluster_episodes(model, tokenizer, episodes), episodes)
