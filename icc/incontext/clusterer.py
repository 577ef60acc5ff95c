"""In-context clustering of one small data set as a scikit-learn estimator: a language model reads
the items in its prompt and either writes their labels or lends its attention to spectral clustering.

    labels = ICCClusterer(n_clusters=3, method="attention", layer=12).fit_predict(X)   # X: (n, d) or n texts
"""

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from icc.cluster.base import check_k
from icc.errors import ICCError
from icc.incontext.attention import order_affinity, position_baseline, spectral_labels
from icc.incontext.layers import check_layers
from icc.incontext.runner import cluster_episodes
from icc.models.hub import SMOLLM2
from icc.models.llm import load_causal_lm

METHODS = ("generate", "attention")


class ICCClusterer(ClusterMixin, BaseEstimator):
    """Cluster n items (points or texts) into `n_clusters` clusters with a causal language model.

    n_clusters: the number of clusters k, told to the model (2 <= k <= n).
    model: HF id, local directory or a known offline name (see `icc.models.hub`).
    method: "generate" (the model's answer, parsed; items it gives no label get -1) or "attention"
        (spectral clustering of the item-level attention of decoder layer `layer`).
    layer: the decoder layer for "attention" (negative: counted from the last); None: the middle one.
    orders: for "attention", prompts read: the items as given, then in orders - 1 random orders
        (forward passes only, drawn from random_state); the affinity is their mean by item.
    position_baseline: for "attention", divide the attention by its mean between prompt positions
        over those prompts (`position_baseline`) before the paper's normalisation; needs orders >= 2.
    constrained: "generate" answers can only be a labelling `[0, 1, 0, ...]` of the n items into
        n_clusters clusters (`icc.incontext.constrained`); False: the model's free-form answer.
    max_new_tokens, new_tokens_per_item: bounds on a free-form answer (see `cluster_episodes`).
    condition: for texts, what to cluster by, e.g. "by sentiment" (goes into the prompt).
    max_items: larger data sets are refused (prompts grow with n; the method is meant for <= 50).
    random_state: the seed (an int) of the prompt orders and of spectral clustering; generation is greedy.
    dtype, device, trust_remote_code, allow_pickle, adapter, attn_implementation, num_threads: how
        the model is loaded (see `icc.models.llm.load_causal_lm`).

    After `fit(X)`: `labels_` (n,) int64; for "generate" also `answer_` (the model's text) and
    `parse_status_` ("ok", "padded", "trimmed" or "no_list"); for "attention" `layer_` (the layer
    read), `item_orders_` (orders, n), the item at each position of each prompt, `attention_`
    (orders, n, n) float32, the item-level attention of each prompt by position (lower-triangular:
    causal), and `affinity_` (n, n), the item affinity that spectral clustering read.
    `model_` and `tokenizer_` are the loaded model, kept for later fits while `model` and the load
    settings stay as they are, and loaded again when one of them changes (`set_params`).
    """

    def __init__(
        self,
        n_clusters: int = 2,
        model: str = SMOLLM2,
        method: str = "generate",
        layer: int | None = None,
        orders: int = 4,
        position_baseline: bool = True,
        constrained: bool = True,
        max_new_tokens: int = 250,
        new_tokens_per_item: int | None = None,
        condition: str | None = None,
        max_items: int = 50,
        random_state=0,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        adapter: str | None = None,
        attn_implementation: str | None = None,
        num_threads: int | None = None,
    ):
        self.n_clusters = n_clusters
        self.model = model
        self.method = method
        self.layer = layer
        self.orders = orders
        self.position_baseline = position_baseline
        self.constrained = constrained
        self.max_new_tokens = max_new_tokens
        self.new_tokens_per_item = new_tokens_per_item
        self.condition = condition
        self.max_items = max_items
        self.random_state = random_state
        self.dtype = dtype
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.allow_pickle = allow_pickle
        self.adapter = adapter
        self.attn_implementation = attn_implementation
        self.num_threads = num_threads

    def fit(self, X, y=None) -> "ICCClusterer":
        """Cluster X: an (n, d) array of finite numbers or a list of n non-empty strings. y: ignored."""
        if self.method not in METHODS:
            raise ICCError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        episode = self._episode(X)
        self._load()
        if self.method == "attention":
            count = self.model_.config.get_text_config().num_hidden_layers
            self.layer_ = count // 2 if self.layer is None else check_layers([self.layer], count)[0]
            if self.position_baseline and self.orders < 2:
                raise ICCError("position_baseline needs orders >= 2: one prompt is its own baseline")
            (result,) = cluster_episodes(
                self.model_, self.tokenizer_, [episode], [self.layer_], answer=[False], orders=self.orders,
                seed=self.random_state,
            )
            self.attention_, self.item_orders_ = result["attention"][self.layer_], result["orders"]
            baseline = position_baseline([self.attention_]) if self.position_baseline else None
            self.affinity_ = order_affinity(self.attention_, self.item_orders_, baseline)
            self.labels_ = spectral_labels(self.affinity_, episode["k"], self.random_state)
        else:
            (result,) = cluster_episodes(
                self.model_, self.tokenizer_, [episode], (), self.max_new_tokens, self.new_tokens_per_item,
                self.constrained,
            )
            self.answer_, self.parse_status_ = result["answer"], result["parse_status"]
            self.labels_ = np.asarray(result["labels"], dtype=np.int64)
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """`fit(X)`, then `labels_` (n,)."""
        return self.fit(X).labels_

    def _load(self) -> None:
        """Load the model into `model_` and `tokenizer_` unless the loaded one has these settings."""
        settings = {
            "name": self.model, "dtype": self.dtype, "device": self.device,
            "trust_remote_code": self.trust_remote_code, "allow_pickle": self.allow_pickle,
            "adapter": self.adapter, "attn_implementation": self.attn_implementation, "num_threads": self.num_threads,
        }
        if getattr(self, "load_settings_", None) != settings:
            self.model_, self.tokenizer_ = load_causal_lm(**settings)
            self.load_settings_ = settings

    def _episode(self, X) -> dict:
        """The episode dict that `cluster_episodes` reads, after checking X and n_clusters."""
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
        return {**items, "k": check_k(self.n_clusters, n), "n": n}
