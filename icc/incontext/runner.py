"""Run a causal LM on clustering episodes: its generated labels and the item-level attention of
chosen layers.

`cluster_episodes` does the work for a loaded model; `EpisodeRunner` holds one model per Ray Data
actor and applies it to batches of episodes (`run_episodes`; `results_table` holds the rows as
episodes.parquet does); `ICCClusterer` applies it to one data set.
"""

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from icc.checks import check_bool, check_positive_int
from icc.errors import ICCError
from icc.incontext.attention import capture_item_attention, char_spans_to_token_spans, item_membership, item_orders
from icc.incontext.constrained import LabellingProcessor, answer_length
from icc.incontext.prompt import chat_messages, numeric_prompt, parse_labels, text_prompt
from icc.models.hub import resolve_model
from icc.models.llm import generate, load_causal_lm, prefill, render_chat
from icc.ray_runtime import actor_pool, check_pool

# Tokens a free-form answer needs besides its n labels: brackets, a few words before the list, end of turn.
_ANSWER_OVERHEAD_TOKENS = 10
ATTENTION_TYPE = pa.list_(pa.list_(pa.list_(pa.float32())))  # (R, n, n) item attention, one matrix per prompt order
ORDERS_TYPE = pa.list_(pa.list_(pa.int64()))  # (R, n) the item at each position of each prompt


def model_config(model: str, trust_remote_code: bool = False):
    """The model's transformers config (its `model_type`, ...), read without loading the weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)


def num_layers(model: str, trust_remote_code: bool = False) -> int:
    """The number of decoder layers of a model, from its config alone."""
    return model_config(model, trust_remote_code).get_text_config().num_hidden_layers


def render_episode(tokenizer, episode: dict) -> tuple[str, list[tuple[int, int]]]:
    """The chat prompt for an episode (its `points` or `texts`, `k`, `condition`) and the character
    spans (start, end) of its n items inside that string."""
    if episode.get("texts") is not None:
        prompt = text_prompt(episode["texts"], episode["k"], episode.get("condition"))
    else:
        prompt = numeric_prompt(episode["points"], episode["k"])
    rendered = render_chat(tokenizer, chat_messages(prompt.text))
    base = rendered.find(prompt.text)
    if base < 0:
        raise ICCError("the chat template changes the prompt text, so its items cannot be located")
    return rendered, [(base + start, base + end) for start, end in prompt.item_spans]


def cluster_episodes(
    model,
    tokenizer,
    episodes: list[dict],
    layers: Sequence[int] = (),
    max_new_tokens: int = 250,
    new_tokens_per_item: int | None = None,
    constrained: bool = True,
    answer: Sequence[bool] | None = None,
    orders: int = 1,
    seed: int = 0,
) -> list[dict]:
    """Generated labels and item attention for each episode (see `render_episode` for its keys).

    layers: decoder layers whose attention is read, during the prefill of the batched `generate`
        call that answers the episodes (a forward pass of their prompts for the unanswered ones).
    max_new_tokens: bound on each free-form answer; with `new_tokens_per_item`, also at most
        new_tokens_per_item * n + 10 tokens, n being the largest episode of the batch.
    constrained: each answer can only be a labelling `[0, 1, 0, ...]` of its n items into k clusters
        (`icc.incontext.constrained`), with exactly the tokens the longest one needs; False: free form.
    answer: which episodes get a generated answer (None: all); the others only attention.
    orders: with layers, prompts read per episode: the given order of its items, then orders - 1
        random ones (`item_orders`, drawn from `seed` and the episode's `seed`), each a forward
        pass only; the answer comes from the given order.
    Returns per episode {"answer": str, "labels": n ints (-1: missing), "parse_status": str}
    (None each when not answered), {"orders": (R, n) int64}, the items at each position of the R
    prompts, and {"attention": {layer: (R, n, n) float32}}, A[r, p, q] the mean head-averaged
    attention of the tokens at item position p of prompt r to those at position q (see
    `item_attention`): indexed by position, as `order_affinity` and `position_baseline` read it.
    """
    check_positive_int(orders, "attention.orders")
    answer = [True] * len(episodes) if answer is None else list(answer)
    count = orders if layers else 1
    results = [
        {"answer": None, "labels": None, "parse_status": None, "attention": {},
         "orders": item_orders(e["n"], count, (seed, e.get("seed") or 0))}
        for e in episodes
    ]
    options = {"max_new_tokens": max_new_tokens, "new_tokens_per_item": new_tokens_per_item, "constrained": constrained}
    read = {i: {layer: [] for layer in layers} for i in range(len(episodes))}
    for r in range(count):
        for asked in (True, False):
            group = [i for i, a in enumerate(answer) if (a and r == 0) == asked]
            if not group or not (asked or layers):
                continue
            prompts = [_reordered(episodes[i], results[i]["orders"][r]) for i in group]
            replies, attention = _read_prompts(model, tokenizer, prompts, layers, options if asked else None)
            for row, i in enumerate(group):
                n = episodes[i]["n"]
                if asked:
                    labels, status = parse_labels(replies[row], n)
                    results[i].update(answer=replies[row], labels=labels, parse_status=status)
                for layer in layers:
                    read[i][layer].append(attention[layer][row, :n, :n])
    for i, result in enumerate(results):
        result["attention"] = {layer: np.stack(matrices) for layer, matrices in read[i].items()}
    return results


def _reordered(episode: dict, order: np.ndarray) -> dict:
    """The episode with its items (points or texts) in `order`."""
    key = "texts" if episode.get("texts") is not None else "points"
    return {**episode, key: [episode[key][j] for j in order]}


def _read_prompts(model, tokenizer, episodes: list[dict], layers: Sequence[int], options: dict | None):
    """One batch: the episodes' prompts answered by `generate` (options: those of `cluster_episodes`)
    or, with options None, only run forward. Returns (the replies or None, {layer: (B, n_max,
    n_max) item attention}, read in the prefill)."""
    rendered = [render_episode(tokenizer, episode) for episode in episodes]
    prompts = [prompt for prompt, _ in rendered]
    batch = tokenizer(prompts, padding=True, add_special_tokens=False, return_offsets_mapping=True)
    length = len(batch["input_ids"][0])
    n_max = max(episode["n"] for episode in episodes)
    membership = np.zeros((len(episodes), n_max, length), dtype=np.float32)
    for row, (offsets, (_, spans)) in enumerate(zip(batch["offset_mapping"], rendered)):
        membership[row, : len(spans)] = item_membership(char_spans_to_token_spans(offsets, spans), length)
    replies = None
    with capture_item_attention(model, layers, torch.from_numpy(membership), stop=options is None) as attention:
        if options is None:
            prefill(model, batch["input_ids"], batch["attention_mask"])
        else:
            sizes = [(episode["n"], episode["k"]) for episode in episodes]
            budget, processor = options["max_new_tokens"], None
            if options["constrained"]:
                budget = max(answer_length(n, k) for n, k in sizes)
                processor = LabellingProcessor(tokenizer, sizes, model.generation_config.eos_token_id)
            elif options["new_tokens_per_item"] is not None:
                budget = min(budget, options["new_tokens_per_item"] * n_max + _ANSWER_OVERHEAD_TOKENS)
            replies = generate(model, tokenizer, prompts, budget, processor)
    return replies, attention


def attention_column(layer: int) -> str:
    return f"attention_L{layer}"


class EpisodeRunner:
    """Ray Data actor: one causal LM; a batch (pyarrow, episodes in `episodes.SCHEMA`) gains
    `answer`, `pred_generate`, `parse_status` (null for validation episodes, which get no answer),
    `attention_orders` (R x n) and `attention_L<layer>` (R x n x n lists) per layer, read from R
    prompt orders (`cluster_episodes`). Rows out equal rows in, in order.

    Other keyword arguments go to `load_causal_lm` (dtype, device, adapter, num_threads, ...).
    """

    def __init__(
        self,
        model: str,
        layers: Sequence[int] = (),
        max_new_tokens: int = 250,
        new_tokens_per_item: int | None = None,
        constrained: bool = True,
        orders: int = 1,
        seed: int = 0,
        **load_options,
    ):
        self.model, self.tokenizer = load_causal_lm(model, **load_options)
        self.layers = list(layers)
        self.max_new_tokens = max_new_tokens
        self.new_tokens_per_item = new_tokens_per_item
        self.constrained = constrained
        self.orders = orders
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        episodes = batch.to_pylist()
        results = cluster_episodes(
            self.model, self.tokenizer, episodes, self.layers, self.max_new_tokens, self.new_tokens_per_item,
            self.constrained, answer=[e["split"] == "test" for e in episodes], orders=self.orders, seed=self.seed,
        )
        batch = batch.append_column("answer", pa.array([r["answer"] for r in results], pa.string()))
        batch = batch.append_column("pred_generate", pa.array([r["labels"] for r in results], pa.list_(pa.int64())))
        batch = batch.append_column("parse_status", pa.array([r["parse_status"] for r in results], pa.string()))
        batch = batch.append_column("attention_orders", pa.array([r["orders"].tolist() for r in results], ORDERS_TYPE))
        for layer in self.layers:
            values = [r["attention"][layer].tolist() for r in results]
            batch = batch.append_column(attention_column(layer), pa.array(values, ATTENTION_TYPE))
        return batch


def check_episode_settings(generate: dict, pool: dict, orders: int = 1) -> None:
    """ICCError for a `run_episodes` setting of the wrong type or range, before any work: the llm
    config's `generate` and `pool` groups and `orders`."""
    check_positive_int(generate["max_new_tokens"], "llm.generate.max_new_tokens")
    check_positive_int(generate["new_tokens_per_item"], "llm.generate.new_tokens_per_item", allow_none=True)
    check_bool(generate["constrained"], "llm.generate.constrained")
    check_positive_int(generate["episodes_per_batch"], "llm.generate.episodes_per_batch")
    check_pool(**pool)
    check_positive_int(orders, "attention.orders")


def run_episodes(
    table: pa.Table, load: dict, generate: dict, pool: dict, layers: Sequence[int] = (), orders: int = 1, seed: int = 0
) -> list[dict]:
    """Run `EpisodeRunner` over a table of episodes (`episodes.SCHEMA`) on a Ray Data pool of actors,
    one model each. Returns the output rows in `episode` order.

    The three groups of the `llm` config:
    load: what loads the model (its top keys): `model` and the keyword arguments of `load_causal_lm`
        (dtype, trust_remote_code, allow_pickle, adapter, attn_implementation).
    generate: `max_new_tokens`, `new_tokens_per_item`, `constrained` (see `cluster_episodes`) and
        `episodes_per_batch`.
    pool: `actors`, `num_gpus`, `cpus_per_actor` (see `icc.ray_runtime.actor_pool`) and `num_threads`
        (torch CPU threads per actor).
    layers: decoder layers whose item attention each row gets, read from `orders` prompt orders
        (drawn from `seed`; see `cluster_episodes`).

    Episodes are sorted by size (d, then n) so that each `generate` call of `episodes_per_batch`
    episodes pads little, and each such batch is a block of its own: blocks spread over the actors,
    and the dataset shows progress batch by batch.

    On a cluster without GPUs, `actors` None fills its CPUs with actors of `cpus_per_actor` cores
    (torch threads unless `num_threads`), at most one per batch: decoding small batches gains little
    from threads (SmolLM2, 16 episodes, 2 cores: 2 actors x 1 thread answer 1.3x as many as 1 actor x 2).
    """
    import ray
    import ray.data

    check_episode_settings(generate, pool, orders)
    size = generate["episodes_per_batch"]
    table = table.sort_by([("d", "ascending"), ("n", "ascending")])
    blocks = [table.slice(start, size) for start in range(0, table.num_rows, size)]
    actors, num_threads = pool_size(pool, len(blocks))
    runner = {
        **load, "num_threads": num_threads, "layers": list(layers),
        "max_new_tokens": generate["max_new_tokens"], "new_tokens_per_item": generate["new_tokens_per_item"],
        "constrained": generate["constrained"], "orders": orders, "seed": seed,
    }
    ds = ray.data.from_arrow(blocks).map_batches(
        EpisodeRunner,
        fn_constructor_kwargs=runner,
        batch_size=size,
        batch_format="pyarrow",
        **actor_pool(actors, pool["num_gpus"], pool["cpus_per_actor"]),
    )
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by("episode").to_pylist()


def pool_size(pool: dict, batches: int) -> tuple[int | None, int | None]:
    """(actors, num_threads) for a pool (`run_episodes`'s `pool`) that runs `batches` batches: as
    configured, but on a cluster without GPUs `actors` None fills its CPUs with actors of
    `cpus_per_actor` cores (that many torch threads unless `num_threads`), at most one per batch."""
    import ray

    actors, num_threads = pool["actors"], pool["num_threads"]
    resources = ray.cluster_resources()
    if actors is None and not pool["num_gpus"] and not resources.get("GPU"):
        actors = max(1, min(batches, int(resources.get("CPU", 1) // pool["cpus_per_actor"])))
        num_threads = num_threads or max(1, int(pool["cpus_per_actor"]))
    return actors, num_threads


def results_table(rows: list[dict], layers: Sequence[int]) -> pa.Table:
    """Scored test rows as episodes.parquet holds them: without `split`, the attention matrices
    (`attention_L<layer>`, (R, n, n) float32) last."""
    matrices = [attention_column(layer) for layer in layers]
    table = pa.Table.from_pylist(rows).drop_columns("split")
    table = table.select([name for name in table.column_names if name not in matrices] + matrices)
    for name in matrices:
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(ATTENTION_TYPE))
    return table
