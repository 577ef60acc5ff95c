"""Attention spectral clustering (Wang et al., 2025): cluster the items of a prompt with the
attention the model pays between them, instead of reading its answer.

Pipeline: `layer_attention` (token-level attention of chosen layers, heads averaged) ->
`point_attention` (item-level, through `char_spans_to_token_spans`) -> `affinity_from_attention`
-> `spectral_labels`.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.cluster import SpectralClustering

from icc.cluster.base import check_k
from icc.errors import ICCError


@torch.inference_mode()
def layer_attention(
    model, input_ids: Sequence[int] | torch.Tensor, layers: Sequence[int]
) -> dict[int, np.ndarray]:
    """Head-averaged attention of one sequence at the decoder layers `layers`.

    input_ids: the T token ids of one unpadded sequence (tokenised with add_special_tokens=False
        from a rendered prompt, see `icc.models.llm`), so row/column t is token t.
    layers: indices into the decoder's layers (`model.get_decoder().layers`).
    Returns {layer: (T, T) float32}, row q the attention weights of query token q over the key
    tokens (each row sums to 1; zero above the diagonal).

    One forward pass, with the model switched to eager attention for its duration (sdpa and flash
    kernels never form the weights; the previous implementation is restored after), so the weights
    are exactly the model's own, whatever it adds to plain softmax attention (sliding windows,
    soft-capping, sinks). A forward hook on each requested attention module reduces its
    (1, heads, T, T) weights to their head mean at once, so the pass keeps one (T, T) matrix per
    requested layer, where `output_attentions=True` keeps (heads, T, T) for every layer. Besides,
    only the layer being computed holds its (heads, T, T) weights, as eager attention always does.
    """
    ids = torch.as_tensor(input_ids, device=model.device).reshape(1, -1)
    decoder_layers = model.get_decoder().layers
    head_means: dict[int, torch.Tensor] = {}

    def keep_head_mean(layer: int):
        def hook(module, args, output) -> None:
            weights = output[1]
            if weights is None:
                raise ICCError(f"{type(module).__name__} returns no attention weights under eager attention")
            head_means[layer] = weights[0].mean(dim=0, dtype=torch.float32)

        return hook

    handles = [
        decoder_layers[layer].self_attn.register_forward_hook(keep_head_mean(layer)) for layer in layers
    ]
    try:
        with _eager_attention(model):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return {layer: head_means[layer].cpu().numpy() for layer in layers}


@contextmanager
def _eager_attention(model) -> Iterator[None]:
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
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


def point_attention(attn: np.ndarray, token_spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Item-level attention (n, n) float64 from token-level attention `attn` (T, T).

    A[i, j] is the mean of attn over all (token of item i, token of item j) pairs, item i being
    tokens [start, end) of `token_spans[i]`.
    """
    # A = M attn M^T, where M[i, t] = 1 / len(item i) if token t is in item i.
    membership = np.zeros((len(token_spans), attn.shape[0]))
    for i, (start, end) in enumerate(token_spans):
        if not 0 <= start < end <= attn.shape[0]:
            raise ICCError(f"token span [{start}, {end}) is empty or outside the {attn.shape[0]} tokens")
        membership[i, start:end] = 1.0 / (end - start)
    return membership @ attn @ membership.T


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


def spectral_labels(affinity: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels (n,) in [0, k) by spectral clustering of a symmetric affinity (n, n).

    A small constant (1e-6 of the largest affinity; 1 if all are zero) is added to every entry, so
    that items with zero affinity to all others keep the graph connected and the eigensolver stable.
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    k = check_k(k, affinity.shape[0])
    affinity = affinity + 1e-6 * (affinity.max() or 1.0)
    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed)
    return model.fit_predict(affinity)
