"""Which decoder layer's attention clusters the items (the `attention` method of `icc incontext`).

`check_layers` names the layers whose item attention is read; `check_layer_choice` says, before
any episode runs, whether validation episodes will choose among them (`attention.layer: auto`);
`choose_layer` then labels every episode by spectral clustering at each layer (of its item
affinity over its prompt orders, divided by the positional baseline of the run's episodes when
asked: `order_affinity`) and picks the layer (the configured one, or the best mean ARI on the
validation episodes), and reports the oracle layer (the best on the test episodes themselves: an
upper bound on any choice).
"""

import numpy as np

from icc.errors import ICCError
from icc.incontext.attention import order_affinity, position_baseline, spectral_labels
from icc.incontext.runner import attention_column
from icc.incontext.scoring import mean_by_layer


def check_layers(layers, count: int) -> list[int]:
    """Decoder layer indices for a model of `count` layers, sorted, without duplicates, from "all",
    "every_<s>" (every s-th layer, counted so that the last layer is in) or a list of ints
    (negative ones count from the last)."""
    if layers == "all":
        return list(range(count))
    if isinstance(layers, str) and layers.startswith("every_") and layers[6:].isdigit() and int(layers[6:]) > 0:
        return list(range(count - 1, -1, -int(layers[6:])))[::-1]
    if isinstance(layers, (str, int)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise ICCError(f"attention layers must be 'all', 'every_<s>' or a list of integers, got {layers!r}")
    if any(not -count <= x < count for x in layers):
        raise ICCError(f"attention layers {list(layers)} outside the model's {count} layers (0..{count - 1})")
    return sorted({x % count for x in layers})


def check_layer_choice(layers: list[int], layer, validation_seed: int, seed: int) -> bool:
    """Whether validation episodes choose the layer: `layer` is "auto" and there are layers to read.

    ICCError when `layer` is neither "auto" nor one of `layers`, or when validation episodes would
    be drawn with the test episodes' `seed`.
    """
    auto = bool(layers) and layer == "auto"
    if layers and not auto and layer not in layers:
        raise ICCError(f"attention.layer must be auto or one of attention.layers {layers}, got {layer!r}")
    if auto and validation_seed == seed:
        raise ICCError("attention.validation_seed must differ from seed: validation episodes choose the layer")
    return auto


def choose_layer(
    test: list[dict], validation: list[dict], layers: list[int], layer, seed: int, baseline: bool = False
) -> tuple[list[dict], dict]:
    """The attention method's labels for the test episodes, from the chosen layer and the oracle one.

    test, validation: `run_episodes` rows (`labels`, `k`, `attention_orders` (R, n) and an
        `attention_L<layer>` (R, n, n) per layer of `layers`); `layer`: "auto" (the best mean ARI
        on `validation`) or one of `layers`.
    seed: spectral clustering's.
    baseline: divide each layer's attention by its `position_baseline` over all the rows, test and
        validation (their attention only: no labels).
    Returns per test row {"pred_attention", "pred_attention_oracle"}: n labels each ({} without
    layers), and the `attention` entry of metrics.json: `layers`, `layer`, `layer_chosen_by`,
    `validation_ari_by_layer`, `oracle_layer` and `oracle_test_ari_by_layer` ({layer: mean ARI}).
    """
    auto = bool(layers) and layer == "auto"
    baselines = {
        layer: position_baseline([r[attention_column(layer)] for r in test + validation]) if baseline else None
        for layer in layers
    }
    test_labels = _labels_by_layer(test, baselines, seed)
    validation_ari = mean_by_layer([r["labels"] for r in validation], _labels_by_layer(validation, baselines, seed))
    test_ari = mean_by_layer([r["labels"] for r in test], test_labels)
    if auto and not validation_ari:
        raise ICCError("attention.layer=auto needs validation episodes with labels")
    chosen = max(validation_ari, key=validation_ari.get) if auto else layer
    oracle = max(test_ari, key=test_ari.get) if test_ari else None
    predictions = [{} for _ in test]
    for i, predicted in enumerate(predictions):
        if layers:
            predicted["pred_attention"] = test_labels[chosen][i].tolist()
        if oracle is not None:
            predicted["pred_attention_oracle"] = test_labels[oracle][i].tolist()
    summary = {
        "layers": layers,
        "layer": chosen if layers else None,
        "layer_chosen_by": "mean ARI on validation episodes" if auto else "config",
        "validation_ari_by_layer": validation_ari,
        "oracle_layer": oracle,
        "oracle_test_ari_by_layer": test_ari,
    }
    return predictions, summary


def _labels_by_layer(rows: list[dict], baselines: dict, seed: int) -> dict[int, list[np.ndarray]]:
    """{layer: labels (n,) per row} by spectral clustering of each row's item affinity at that
    layer; `baselines`: {layer: its positional baseline, or None}."""
    return {
        layer: [
            spectral_labels(order_affinity(r[attention_column(layer)], np.asarray(r["attention_orders"]), base),
                            r["k"], seed)
            for r in rows
        ]
        for layer, base in baselines.items()
    }
