"""Attention spectral clustering: the item-level aggregation on hand-built matrices, and attention
capture and generation on the real SmolLM2 (CPU, float32)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from icc.errors import ICCError
from icc.incontext.attention import (
    affinity_from_attention,
    capture_item_attention,
    char_spans_to_token_spans,
    item_attention,
    item_membership,
    item_orders,
    order_affinity,
    position_baseline,
    spectral_labels,
)
from icc.incontext.clusterer import ICCClusterer
from icc.incontext.runner import cluster_episodes
from icc.models.hub import SMOLLM2
from icc.models.llm import generate, load_causal_lm, prefill, render_chat


def test_item_attention_averages_token_blocks():
    attn = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.2, 0.2, 0.6, 0.0],
            [0.1, 0.3, 0.2, 0.4],
        ]
    )
    membership = torch.from_numpy(item_membership([(0, 2), (2, 4)], 4))
    items = item_attention(attn[None], membership[None])
    np.testing.assert_allclose(items[0].numpy(), [[0.5, 0.0], [0.2, 0.3]], atol=1e-7)


def test_item_membership_rejects_empty_span():
    with pytest.raises(ICCError):
        item_membership([(0, 1), (2, 2)], 3)


def test_affinity_normalises_corrects_causal_mask_and_symmetrises():
    attention = np.array([[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [1.0, 1.0, 2.0]])
    # rows normalised: [1, 0, 0], [.25, .75, 0], [.25, .25, .5]; times non-zeros 1, 2, 3;
    # lower triangle copied to the upper.
    expected = [[1.0, 0.5, 0.75], [0.5, 1.5, 0.75], [0.75, 0.75, 1.5]]
    np.testing.assert_allclose(affinity_from_attention(attention), expected)


def test_affinity_rejects_negative_or_nan():
    for bad in (-1.0, np.nan):
        with pytest.raises(ICCError):
            affinity_from_attention(np.array([[1.0, 0.0], [bad, 1.0]]))


def test_spectral_labels_recover_blocks_from_causal_attention():
    truth = np.arange(12) % 3  # interleaved, so that the causal mask cannot fake the blocks
    same = truth[:, None] == truth[None, :]
    attention = np.tril(np.where(same, 1.0, 0.05))
    labels = spectral_labels(affinity_from_attention(attention), k=3, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_spectral_labels_survive_degenerate_affinities():
    isolated = np.ones((6, 6))
    isolated[2, :] = isolated[:, 2] = 0.0
    for affinity in (np.zeros((6, 6)), isolated):
        labels = spectral_labels(affinity, k=2, seed=0)
        assert labels.shape == (6,) and set(labels) <= {0, 1}


def positional(n: int) -> np.ndarray:
    """(n, n) causal item attention that depends on positions only: a sink on the first item, more
    to recent items, a floor."""
    p, q = np.indices((n, n))
    return np.tril(0.2 + np.exp(-(p - q) / 2.0) + 2.0 * (q == 0))


def test_position_only_attention_clusters_positions_today():
    """The paper's affinity on attention that ignores content: contiguous runs of positions, so the
    same items in another order get another partition."""
    n, orders = 12, item_orders(12, 6, seed=0)
    by_position = spectral_labels(affinity_from_attention(positional(n)), k=2, seed=0)
    assert np.count_nonzero(np.diff(by_position[1:])) == 1  # two runs of positions after the sink
    by_item = []
    for order in orders:
        labels = np.empty(n, dtype=int)
        labels[order] = by_position  # the item at position p gets position p's label
        by_item.append(labels)
    assert np.mean([adjusted_rand_score(by_item[0], other) for other in by_item[1:]]) < 0.2


def test_position_only_attention_has_no_structure_after_the_baseline():
    """Divided by its positional baseline, position-only attention is the same for every pair of
    items, in any number of orders, for episodes of any size pooled into the baseline."""
    episodes = [np.stack([positional(n)] * 3) for n in (8, 12, 10)]
    baseline = position_baseline(episodes)
    assert baseline.shape == (12, 12)
    for attention in episodes:
        n = attention.shape[-1]
        affinity = order_affinity(attention, item_orders(n, 3, seed=n), baseline)
        np.testing.assert_allclose(affinity, np.ones((n, n)))


def test_position_baseline_pools_the_positions_each_episode_has():
    small, large = np.ones((2, 2, 2)), np.full((1, 3, 3), 4.0)
    expected = [[2.0, 2.0, 4.0], [2.0, 2.0, 4.0], [4.0, 4.0, 4.0]]  # (1 + 1 + 4) / 3 where all three have it
    np.testing.assert_allclose(position_baseline([small, large]), expected)


def test_order_affinity_recovers_content_under_positional_attention():
    """Attention = position factor x content factor, in 4 orders: the baseline and the orders leave
    the content, the true clusters, whatever the order the items came in."""
    truth = np.repeat([0, 1, 2], 4)
    n = len(truth)
    orders = item_orders(n, 4, seed=1)
    same = truth[:, None] == truth[None, :]
    attention = np.stack([positional(n) * np.where(same[np.ix_(o, o)], 1.0, 0.3) for o in orders])
    baseline = position_baseline([positional(n)[None]])
    labels = spectral_labels(order_affinity(attention, orders, baseline), 3, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    shuffled = np.random.default_rng(2).permutation(4)
    np.testing.assert_allclose(order_affinity(attention[shuffled], orders[shuffled], baseline),
                               order_affinity(attention, orders, baseline))


def test_item_orders_start_with_the_given_order():
    orders = item_orders(7, 3, seed=0)
    assert orders.shape == (3, 7) and orders[0].tolist() == list(range(7))
    assert all(sorted(order) == list(range(7)) for order in orders)
    np.testing.assert_array_equal(orders, item_orders(7, 3, seed=0))


def test_char_spans_to_token_spans():
    offsets = [(0, 0), (0, 3), (3, 5), (5, 6), (6, 10), (0, 0)]  # special tokens at both ends
    assert char_spans_to_token_spans(offsets, [(0, 4), (5, 10)]) == [(1, 3), (3, 5)]
    # token 2 (characters 3-5) straddles both spans
    assert char_spans_to_token_spans(offsets, [(0, 4), (4, 10)]) == [(1, 3), (2, 5)]
    with pytest.raises(ICCError):
        char_spans_to_token_spans(offsets, [(10, 12)])


@pytest.fixture(scope="module")
def smollm2():
    return load_causal_lm(SMOLLM2, device="cpu")


def test_char_spans_find_items_in_a_rendered_chat_prompt(smollm2):
    _, tokenizer = smollm2
    items = ["[1.25, -3.5]", "[0.75, 2.0]"]
    user = f"Data: {items[0]}, {items[1]} Labels:"
    rendered = render_chat(tokenizer, [{"role": "user", "content": user}])
    base = rendered.index(user)
    char_spans = [(base + user.index(item), base + user.index(item) + len(item)) for item in items]
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    token_spans = char_spans_to_token_spans(encoded["offset_mapping"], char_spans)
    for item, (start, end) in zip(items, token_spans):
        assert item in tokenizer.decode(encoded["input_ids"][start:end])


def token_attention(model, ids: list[int], layers: list[int]) -> dict[int, np.ndarray]:
    """Head-averaged (T, T) attention of one unpadded sequence: every token an item of its own."""
    with capture_item_attention(model, layers, torch.eye(len(ids))[None]) as captured:
        prefill(model, [ids], [[1] * len(ids)])
    return {layer: captured[layer][0] for layer in layers}


def test_captured_attention_matches_eager_output_attentions(smollm2):
    model, tokenizer = smollm2
    assert model.config._attn_implementation == "sdpa"  # a kernel that never forms the weights
    ids = tokenizer("Cluster the points [1, 2], [1, 3] and [8, 9].", add_special_tokens=False)["input_ids"]
    layers = [0, model.config.num_hidden_layers - 1]

    captured = token_attention(model, ids, layers)

    assert model.config._attn_implementation == "sdpa"
    reference_model, _ = load_causal_lm(SMOLLM2, device="cpu", attn_implementation="eager")
    with torch.inference_mode():
        reference = reference_model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    for layer in layers:
        expected = reference[layer][0].mean(dim=0).numpy()
        assert captured[layer].shape == (len(ids), len(ids)) and captured[layer].dtype == np.float32
        np.testing.assert_allclose(captured[layer], expected, atol=1e-4)


def test_attention_read_in_the_prefill_of_a_padded_batch_equals_each_prompt_alone(smollm2):
    """Left padding (and generate's positions) must not change an episode's item attention."""
    model, tokenizer = smollm2
    episodes = [
        {"points": [[1.0], [1.5], [9.0]], "k": 2, "n": 3},
        {"points": [[-4.25, 2.0], [-4.0, 2.5], [6.0, -1.0], [6.5, -1.5], [0.0, 0.0]], "k": 2, "n": 5},
    ]
    layers = [3, 20]

    batched = cluster_episodes(model, tokenizer, episodes, layers, max_new_tokens=4)
    unanswered = cluster_episodes(model, tokenizer, episodes, layers, answer=[False, False])
    alone = [cluster_episodes(model, tokenizer, [e], layers, answer=[False])[0] for e in episodes]

    plain = cluster_episodes(model, tokenizer, episodes, (), max_new_tokens=4)
    assert [r["answer"] for r in batched] == [r["answer"] for r in plain]  # reading attention changes no answer
    assert model.config._attn_implementation == "sdpa"
    for batch_result, forward_result, single, episode in zip(batched, unanswered, alone, episodes):
        assert batch_result["answer"] is not None and forward_result["answer"] is None
        for layer in layers:
            assert single["attention"][layer].shape == (1, episode["n"], episode["n"])  # one prompt order
            np.testing.assert_allclose(batch_result["attention"][layer], single["attention"][layer], atol=1e-5)
            np.testing.assert_allclose(forward_result["attention"][layer], single["attention"][layer], atol=1e-5)


def test_orders_read_each_prompt_as_alone(smollm2):
    """Order r of an episode is the episode with its items in that order, read on its own."""
    model, tokenizer = smollm2
    episode = {"points": [[1.0], [1.5], [9.0], [8.5]], "k": 2, "n": 4, "seed": 3}
    (result,) = cluster_episodes(model, tokenizer, [episode], [20], answer=[False], orders=3)
    assert result["orders"].shape == (3, 4) and result["attention"][20].shape == (3, 4, 4)
    order = result["orders"][2]
    shuffled = {**episode, "points": [episode["points"][j] for j in order]}
    (alone,) = cluster_episodes(model, tokenizer, [shuffled], [20], answer=[False])
    np.testing.assert_allclose(result["attention"][20][2], alone["attention"][20][0], atol=1e-5)
    with pytest.raises(ICCError, match="positive integer"):
        cluster_episodes(model, tokenizer, [episode], [20], answer=[False], orders=0)


def test_smollm2_partition_follows_the_order_today_and_not_with_orders_and_baseline():
    """A well-separated episode and the same points permuted: the paper's affinity (one prompt)
    gives unrelated partitions; 8 orders and the positional baseline give the true one twice."""
    rng = np.random.default_rng(0)
    truth = rng.permutation(np.repeat([0, 1], 6))
    X = np.array([[-8.0], [8.0]])[truth] + rng.normal(0, 0.5, (12, 1))
    permutation = rng.permutation(12)
    back = np.argsort(permutation)
    clusterer = ICCClusterer(n_clusters=2, method="attention", layer=20, orders=1, position_baseline=False)
    today = clusterer.fit_predict(X), clusterer.fit_predict(X[permutation])[back]
    assert adjusted_rand_score(*today) < 0.5
    clusterer.set_params(orders=8, position_baseline=True)
    fixed = clusterer.fit_predict(X), clusterer.fit_predict(X[permutation])[back]
    assert adjusted_rand_score(*fixed) >= 0.9 and adjusted_rand_score(truth, fixed[0]) >= 0.9
    assert clusterer.attention_.shape == (8, 12, 12) and clusterer.affinity_.shape == (12, 12)
    with pytest.raises(ICCError, match="orders >= 2"):
        clusterer.set_params(orders=1).fit(X)


def test_generate_left_pads_a_batch_without_changing_greedy_answers(smollm2):
    model, tokenizer = smollm2
    questions = ["What is 2 + 2?", "List three colours of the rainbow, separated by commas, nothing else."]
    prompts = [render_chat(tokenizer, [{"role": "user", "content": q}]) for q in questions]

    batched = generate(model, tokenizer, prompts, max_new_tokens=8)

    assert all(isinstance(answer, str) and answer for answer in batched)
    assert batched == [generate(model, tokenizer, [prompt], max_new_tokens=8)[0] for prompt in prompts]


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # from peft
def test_adapter_loads_from_safetensors_only(smollm2, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = smollm2
    untrained, _ = load_causal_lm(SMOLLM2, device="cpu")
    # random LoRA weights, so that the adapter changes the attention
    lora = LoraConfig(r=4, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
    get_peft_model(untrained, lora).save_pretrained(tmp_path)
    ids = tokenizer("Cluster these.", add_special_tokens=False)["input_ids"]

    adapted, _ = load_causal_lm(SMOLLM2, device="cpu", adapter=str(tmp_path))

    assert not adapted.training
    changed = token_attention(adapted, ids, [1])[1] - token_attention(model, ids, [1])[1]
    assert np.abs(changed).max() > 1e-3
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(ICCError, match="allow_pickle"):
        load_causal_lm(SMOLLM2, device="cpu", adapter=str(tmp_path))

