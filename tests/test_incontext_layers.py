"""The attention layer of `icc incontext`: the layers read, and the choice among them on hand-built
item attention (no model)."""

import numpy as np
import pytest

from icc.errors import ICCError
from icc.incontext.layers import check_layer_choice, check_layers, choose_layer

LABELS = [0, 1, 0, 1, 0, 1]


def row(labels=LABELS) -> dict:
    """A `run_episodes` row whose layer 3 attends within the true clusters and layer 5 across them."""
    same = np.equal.outer(LABELS, LABELS)
    causal = np.tril(np.ones_like(same, dtype=float))
    return {"labels": labels, "k": 2, "attention_orders": [list(range(6))],
            "attention_L3": [causal * np.where(same, 1.0, 0.01)], "attention_L5": [causal * np.where(same, 0.01, 1.0)]}


@pytest.mark.parametrize(
    "layers, expected",
    [("all", [0, 1, 2, 3, 4, 5, 6]), ("every_3", [0, 3, 6]), ("every_2", [0, 2, 4, 6]), ([-1, 2, 2], [2, 6])],
)
def test_check_layers(layers, expected):
    assert check_layers(layers, 7) == expected


@pytest.mark.parametrize("layers", ["every_0", "every_x", "some", 3, [7], [1.5]])
def test_check_layers_rejects(layers):
    with pytest.raises(ICCError, match="attention layers"):
        check_layers(layers, 7)


def test_check_layer_choice():
    assert check_layer_choice([3, 5], "auto", validation_seed=1, seed=0)
    assert not check_layer_choice([3, 5], 5, validation_seed=0, seed=0)
    assert not check_layer_choice([], "auto", validation_seed=0, seed=0)  # no layers: nothing to choose
    with pytest.raises(ICCError, match="attention.layer must be auto or one of"):
        check_layer_choice([3, 5], 4, validation_seed=1, seed=0)
    with pytest.raises(ICCError, match="validation_seed must differ"):
        check_layer_choice([3, 5], "auto", validation_seed=0, seed=0)


def test_auto_chooses_the_best_layer_on_validation_episodes():
    predictions, summary = choose_layer([row(), row()], [row()], [3, 5], "auto", seed=0)
    assert summary["layer"] == summary["oracle_layer"] == 3
    assert summary["layer_chosen_by"] == "mean ARI on validation episodes"
    assert summary["validation_ari_by_layer"][3] == 1.0 > summary["validation_ari_by_layer"][5]
    assert summary["oracle_test_ari_by_layer"][3] == 1.0
    for predicted in predictions:
        assert predicted["pred_attention"] == predicted["pred_attention_oracle"]
        assert len(set(zip(predicted["pred_attention"], LABELS))) == 2  # the true clusters


def test_the_positional_baseline_comes_from_test_and_validation_rows():
    """Attention dominated by recency (neighbours, which are in different clusters, attend most),
    times a weak content factor: the paper's affinity follows the neighbours; divided by the
    baseline of all the rows (the validation ones: recency alone) it finds the clusters."""
    p, q = np.indices((6, 6))
    recency = np.tril(np.exp(-2.0 * (p - q)))
    same = np.equal.outer(LABELS, LABELS)
    test = {**row(), "attention_L3": [recency * np.where(same, 1.0, 0.7)], "attention_L5": [recency]}
    validation = [{**row(), "attention_L3": [recency], "attention_L5": [recency]}] * 4
    _, paper = choose_layer([test], validation, [3, 5], 3, seed=0)
    _, debiased = choose_layer([test], validation, [3, 5], 3, seed=0, baseline=True)
    assert paper["oracle_test_ari_by_layer"][3] < 0.5
    assert debiased["oracle_test_ari_by_layer"][3] == 1.0


def test_a_configured_layer_and_no_layers():
    predictions, summary = choose_layer([row()], [], [3, 5], 5, seed=0)
    assert (summary["layer"], summary["oracle_layer"], summary["layer_chosen_by"]) == (5, 3, "config")
    assert summary["oracle_test_ari_by_layer"][5] < 1.0 and summary["validation_ari_by_layer"] == {}
    predictions, summary = choose_layer([row()], [], [], "auto", seed=0)
    assert predictions == [{}] and summary["layer"] is None and summary["oracle_layer"] is None
    with pytest.raises(ICCError, match="needs validation episodes with labels"):
        choose_layer([row()], [row(labels=None)], [3, 5], "auto", seed=0)
