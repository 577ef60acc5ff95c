"""In-context clustering of one small data set, scikit-learn style: a language model reads the
items in its prompt and either writes their labels or lends its attention to spectral clustering.

    labels = ICCClusterer(method="attention", layer=12).fit_predict(X, k=3)   # X: (n, d) or n texts
"""

import numpy as np

from icc.cluster.base import check_k
from icc.errors import ICCError
from icc.incontext.attention import affinity_from_attention, spectral_labels
from icc.incontext.runner import check_layers, cluster_episodes
from icc.models.hub import SMOLLM2
from icc.models.llm import load_causal_lm

METHODS = ("generate", "attention")


class ICCClusterer:
    """Cluster n items (points or texts) into k clusters with a causal language model.

    model: HF id, local directory or a known offline name (see `icc.models.hub`).
    method: "generate" (the model's answer, parsed; items it gives no label get -1) or "attention"
        (spectral clustering of the item-level attention of decoder layer `layer`).
    layer: the decoder layer for "attention"; None: the middle one.
    max_new_tokens, new_tokens_per_item: bounds on the answer (see `cluster_episodes`).
    condition: for texts, what to cluster by, e.g. "by sentiment" (goes into the prompt).
    max_items: larger data sets are refused (prompts grow with n; the method is meant for <= 50).
    seed: spectral clustering's seed (generation is greedy).
    load_options: passed to `load_causal_lm` (dtype, device, trust_remote_code, adapter, ...).

    After `fit(X, k)`: `labels_` (n,) int64; for "generate" also `answer_` (the model's text) and
    `parse_status_` ("ok", "padded", "trimmed" or "no_list"); for "attention" `attention_` (n, n),
    the item-level attention. The model is loaded on the first fit and kept.
    """

    def __init__(
        self,
        model: str = SMOLLM2,
        method: str = "generate",
        layer: int | None = None,
        max_new_tokens: int = 250,
        new_tokens_per_item: int | None = None,
        condition: str | None = None,
        max_items: int = 50,
        seed: int = 0,
        **load_options,
    ):
        self.model = model
        self.method = method
        self.layer = layer
        self.max_new_tokens = max_new_tokens
        self.new_tokens_per_item = new_tokens_per_item
        self.condition = condition
        self.max_items = max_items
        self.seed = seed
        self.load_options = load_options

    def fit(self, X, k: int) -> "ICCClusterer":
        """Cluster X, an (n, d) array of finite numbers or a list of n non-empty strings."""
        if self.method not in METHODS:
            raise ICCError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        episode = self._episode(X, k)
        if not hasattr(self, "model_"):
            self.model_, self.tokenizer_ = load_causal_lm(self.model, **self.load_options)
        if self.method == "attention":
            count = self.model_.config.get_text_config().num_hidden_layers
            layer = count // 2 if self.layer is None else check_layers([self.layer], count)[0]
            (result,) = cluster_episodes(self.model_, self.tokenizer_, [episode], [layer], answer=[False])
            self.attention_ = result["attention"][layer]
            self.labels_ = spectral_labels(affinity_from_attention(self.attention_), episode["k"], self.seed)
        else:
            (result,) = cluster_episodes(
                self.model_, self.tokenizer_, [episode], (), self.max_new_tokens, self.new_tokens_per_item
            )
            self.answer_, self.parse_status_ = result["answer"], result["parse_status"]
            self.labels_ = np.asarray(result["labels"], dtype=np.int64)
        return self

    def fit_predict(self, X, k: int) -> np.ndarray:
        """`fit(X, k)`, then `labels_` (n,)."""
        return self.fit(X, k).labels_

    def _episode(self, X, k: int) -> dict:
        """The episode dict that `cluster_episodes` reads, after checking X and k."""
        if isinstance(X, (list, tuple)) and X and all(isinstance(x, str) for x in X):
            if any(not x.strip() for x in X):
                raise ICCError("texts must be non-empty")
            items = {"texts": list(X), "condition": self.condition}
        else:
            if self.condition is not None:
                raise ICCError("a condition applies to texts only")
            try:
                points = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError):
                raise ICCError("X must be an (n, d) array of numbers or a list of strings") from None
            if points.ndim != 2 or points.size == 0:
                raise ICCError(f"X must be a non-empty (n, d) array of numbers, got shape {points.shape}")
            if not np.isfinite(points).all():
                raise ICCError("X contains NaN or infinite values")
            items = {"points": points.tolist()}
        n = len(X)
        if n > self.max_items:
            raise ICCError(f"{n} items is more than max_items={self.max_items}: in-context clustering is for small sets")
        return {**items, "k": check_k(k, n), "n": n}
