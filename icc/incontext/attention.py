"""Attention spectral clustering (Wang et al., 2025): cluster the items of a prompt with the
attention the model pays between them, instead of reading its answer.

Pipeline: `capture_item_attention` (item-level attention of chosen layers, heads averaged, read
during the pass that answers the prompt; items located by `char_spans_to_token_spans` and
`item_membership`, reduced by `item_attention`) -> `affinity_from_attention` -> `spectral_labels`.

Item attention follows prompt position (items near each other, or near the end, attend more),
so the paper's affinity clusters positions. Two corrections take position out: the same items in
R orders (`item_orders`), and a positional baseline (`position_baseline`: the mean attention between
positions p and q over many shuffled prompts); `order_affinity` divides by the one and averages
over the other.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.cluster import SpectralClustering

from icc.errors import ICCError


class _AttentionRead(Exception):
    """Raised by the hook of the last requested layer to end a pass whose output is not needed."""


@contextmanager
def capture_item_attention(model, layers: Sequence[int], membership: torch.Tensor,
                           stop: bool = False) -> Iterator[dict[int, np.ndarray]]:
    """Record item-level attention during the next forward pass of `model` over a batch.

    membership: (B, n, T) item weights of the batch's B sequences of T tokens (left-padded, as
        `generate` pads): row i of sequence b is 1 / len(item i) on item i's tokens, 0 elsewhere
        (all-zero for the items a shorter episode does not have); see `item_membership`.
    layers: indices into the decoder's layers (`model.get_decoder().layers`).
    stop: end the pass once the last requested layer is read (the layers after it and the logits
        are not computed; the pass, e.g. `prefill`, returns nothing): for a pass run only for its
        attention. The `with` block then ends quietly.
    Yields {layer: (B, n, n) float32}, filled once the pass has run: M W M^T with W the layer's
    head-averaged attention (B, T, T), so entry [b, i, j] is the mean attention of item i's tokens
    to item j's. Only the first pass is read, so the prefill of `model.generate` serves: the
    prompt's attention comes from the pass that answers it.

    The requested layers run eager attention in that pass (sdpa and flash kernels never form the
    weights), so the weights are exactly the model's own, whatever it adds to plain softmax
    attention (sliding windows, soft-capping, sinks); every other layer keeps the model's kernel.
    A forward hook reduces each requested layer's (B, heads, T, T) weights to items at once: the
    pass keeps (B, n, n) per requested layer, where `output_attentions=True` keeps (B, heads, T, T)
    for every layer; and only the layer being computed holds its weights, as eager attention does.
    """
    decoder_layers = model.get_decoder().layers
    membership = membership.to(device=model.device, dtype=torch.float32)
    previous = model.config._attn_implementation
    captured: dict[int, np.ndarray] = {}
    wanted = set(layers)

    # The pass starts under eager attention, so the model builds the additive float mask that eager
    # needs (and other kernels accept); then each layer's pre-hook picks its kernel: eager for a
    # requested layer not read yet, the previous, faster one for every other layer and every later
    # pass (generate's decoding steps).
    def choose_kernel(layer: int):
        def pre_hook(module, args) -> None:
            model.set_attn_implementation("eager" if layer in wanted and layer not in captured else previous)

        return pre_hook

    def reduce_to_items(layer: int):
        def hook(module, args, output) -> None:
            if layer in captured:
                return
            weights = output[1]
            if weights is None:
                raise ICCError(f"{type(module).__name__} returns no attention weights under eager attention")
            if weights.shape[-1] != membership.shape[-1]:
                raise ICCError(f"attention over {weights.shape[-1]} tokens, but items over {membership.shape[-1]}")
            captured[layer] = item_attention(weights.mean(dim=1, dtype=torch.float32), membership).cpu().numpy()
            model.set_attn_implementation(previous)
            if stop and len(captured) == len(wanted):
                raise _AttentionRead

        return hook

    handles = []
    if layers:
        for index, layer in enumerate(decoder_layers):
            handles.append(layer.self_attn.register_forward_pre_hook(choose_kernel(index)))
        for layer in wanted:
            handles.append(decoder_layers[layer].self_attn.register_forward_hook(reduce_to_items(layer)))
    model.set_attn_implementation("eager" if layers else previous)
    try:
        yield captured
    except _AttentionRead:
        pass
    finally:
        for handle in handles:
            handle.remove()
        model.set_attn_implementation(previous)


def char_spans_to_token_spans(
    offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Token index spans [start, end) of character spans [start, end) of the tokenised string.

    offsets: (T, 2) character offsets per token, from a fast tokenizer with
        `return_offsets_mapping=True`; empty ones (special tokens) belong to no span.
    A token belongs to a span when their characters overlap, so a token that straddles the end of
    one span and the start of the next belongs to both.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    token_spans = []
    for start, end in char_spans:
        (inside,) = np.nonzero((starts < end) & (ends > start) & (ends > starts))
        if inside.size == 0:
            raise ICCError(f"characters [{start}, {end}) cover no token")
        token_spans.append((int(inside[0]), int(inside[-1]) + 1))
    return token_spans


def item_membership(token_spans: Sequence[tuple[int, int]], length: int) -> np.ndarray:
    """(n, length) float32 item weights: row i is 1 / len(item i) on the tokens [start, end) of
    `token_spans[i]` and 0 elsewhere, so that M attn M^T averages attention over item blocks."""
    membership = np.zeros((len(token_spans), length), dtype=np.float32)
    for i, (start, end) in enumerate(token_spans):
        if not 0 <= start < end <= length:
            raise ICCError(f"token span [{start}, {end}) is empty or outside the {length} tokens")
        membership[i, start:end] = 1.0 / (end - start)
    return membership


def item_attention(attention: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """Item-level attention (B, n, n) from token-level attention (B, T, T) and item weights
    (B, n, T) (`item_membership`): M A M^T, so entry [b, i, j] is the mean of attention over all
    (token of item i, token of item j) pairs of sequence b."""
    return membership @ attention @ membership.transpose(1, 2)


def affinity_from_attention(attention: np.ndarray) -> np.ndarray:
    """Symmetric non-negative affinity (n, n) from item-level attention (n, n), as in the paper.

    (1) Each row is normalised to sum 1 (all-zero rows stay zero); (2) row i is multiplied by its
    number of non-zero entries: under the causal mask item i sees only the i + 1 items up to
    itself, so its weights average 1 / (i + 1), and the product puts every row on the same scale
    (mean weight 1); (3) the lower triangle, which holds the attention of later items to earlier
    ones, is copied to the upper. The diagonal (an item's attention to itself) is kept; spectral
    clustering ignores it (the graph Laplacian drops self-loops).
    """
    attention = np.asarray(attention, dtype=np.float64)
    if not (np.isfinite(attention).all() and (attention >= 0).all()):
        raise ICCError("attention must be finite and non-negative")
    sums = attention.sum(axis=1, keepdims=True)
    normalised = np.divide(attention, sums, out=np.zeros_like(attention), where=sums > 0)
    scaled = normalised * np.count_nonzero(attention, axis=1)[:, None]
    lower = np.tril(scaled)
    return lower + np.tril(scaled, k=-1).T


def item_orders(n: int, orders: int, seed) -> np.ndarray:
    """(orders, n) int64: row r lists the items 0..n-1 in the order prompt r shows them. Row 0 is
    the given order (so orders=1 is the paper's single prompt); the others are random permutations
    drawn from `seed` (anything `np.random.default_rng` takes)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(orders - 1)])


def position_baseline(attention: Sequence[np.ndarray]) -> np.ndarray:
    """(N, N) float64 expected item attention between prompt positions: entry [p, q] is the mean
    of A[p, q] over every matrix that has positions p and q.

    attention: item-level matrices (R, n, n) indexed by prompt position, R and n varying,
        N the largest n. Over prompts whose items are shuffled, content averages out and what is
        left is the attention that position alone draws. Under the causal mask, position p's
        attention depends only on what comes before it, so prompts of different n pool.
    """
    matrices = [m for a in attention for m in np.asarray(a, dtype=np.float64)]
    size = max(len(m) for m in matrices)
    sums, counts = np.zeros((size, size)), np.zeros((size, size))
    for m in matrices:
        sums[: len(m), : len(m)] += m
        counts[: len(m), : len(m)] += 1
    return sums / counts.clip(min=1)


def order_affinity(attention: np.ndarray, orders: np.ndarray, baseline: np.ndarray | None = None) -> np.ndarray:
    """Symmetric item affinity (n, n), indexed by item, averaged over R prompt orders.

    attention: (R, n, n) item-level attention of the R prompts, indexed by prompt position.
    orders: (R, n) the item at each position of each prompt (`item_orders`).
    baseline: None, or (N >= n, N) expected attention by position (`position_baseline`); each
        matrix is divided by its top-left (n, n) block element-wise (0 where the baseline is 0),
        so that an entry says how much more item i attends to item j than its position would.
    Each (divided) matrix becomes an affinity as in the paper (`affinity_from_attention`: row
    normalisation, causal-mask correction, symmetrisation, all defined by position), which is then
    mapped back to item ids, and the R affinities are averaged.
    """
    attention = np.asarray(attention, dtype=np.float64)
    n = attention.shape[-1]
    if baseline is not None:
        block = np.asarray(baseline, dtype=np.float64)[:n, :n]
        attention = np.divide(attention, block, out=np.zeros_like(attention), where=block > 0)
    affinity = np.zeros((n, n))
    for matrix, order in zip(attention, orders):
        affinity[np.ix_(order, order)] += affinity_from_attention(matrix)
    return affinity / len(attention)


def spectral_labels(affinity: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels (n,) in [0, k) by spectral clustering of a symmetric affinity (n, n).

    A small constant (1e-6 of the largest affinity; 1 if all are zero) is added to every entry, so
    that items with zero affinity to all others keep the graph connected and the eigensolver stable.
    """
    from icc.cluster.base import check_k  # here: the icc.cluster package imports faiss and Ray

    affinity = np.asarray(affinity, dtype=np.float64)
    k = check_k(k, affinity.shape[0])
    affinity = affinity + 1e-6 * (affinity.max() or 1.0)
    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed)
    return model.fit_predict(affinity)
