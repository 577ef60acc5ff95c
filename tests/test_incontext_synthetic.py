import numpy as np
import pytest

from icc.incontext.episodes import episodes_table
from icc.incontext.synthetic import make_episode, make_episodes, sample_numeric_episodes

KS, DS, DFS = [2, 3, 5], [1, 4], [1.0, 1.5, 100.0]


@pytest.fixture(scope="module")
def episodes():
    return make_episodes(10, KS, DS, DFS, seed=0)


def test_reproducible_by_seed(episodes):
    assert make_episodes(10, KS, DS, DFS, seed=0) == episodes
    assert make_episodes(10, KS, DS, DFS, seed=1) != episodes
    e = episodes[7]
    assert make_episode(e["seed"], e["k"], e["d"], e["df"]) == e
    assert len({e["seed"] for e in episodes}) == len(episodes)


def test_cells_and_shapes(episodes):
    assert len(episodes) == 10 * len(KS) * len(DS) * len(DFS)
    cells = {(e["k"], e["d"], e["df"]) for e in episodes}
    assert cells == {(k, d, df) for k in KS for d in DS for df in DFS}
    for e in episodes:
        assert 10 <= e["n"] <= 50
        assert len(e["points"]) == len(e["labels"]) == e["n"]
        assert all(len(p) == e["d"] for p in e["points"])
        assert all(isinstance(x, float) for p in e["points"] for x in p)


def test_every_cluster_non_empty_even_at_n_equal_k():
    for k in range(1, 6):
        for s in range(20):
            assert sorted(make_episode(s, k, 2, 5.0, n_range=(k, k))["labels"]) == list(range(k))
    for e in make_episodes(20, KS, DS, DFS, seed=3):
        assert set(e["labels"]) == set(range(e["k"]))
    with pytest.raises(ValueError):
        make_episode(0, 5, 2, 1.0, n_range=(4, 10))


def test_labels_are_shuffled(episodes):
    assert any(e["labels"] != sorted(e["labels"]) for e in episodes)


def test_centroids_uniform_in_box_and_heavy_tails():
    # Near-Gaussian noise (std 1): points stay within 6 of the [-10, 10] box and fill it.
    light = np.concatenate([np.ravel(e["points"]) for e in make_episodes(50, [3], [2], [1e9], seed=0)])
    assert np.all(np.abs(light) < 16)
    assert light.min() < -9 and light.max() > 9
    heavy = np.concatenate([np.ravel(e["points"]) for e in make_episodes(50, [3], [2], [1.0], seed=0)])
    assert np.abs(heavy).max() > 100  # Cauchy noise at df=1


def test_the_episodes_table_keeps_synthetic_and_sampled_episodes(episodes):
    X, y = np.random.default_rng(0).normal(size=(60, 3)), np.repeat([1, 2, 3], 20)
    mixed = episodes[:5] + sample_numeric_episodes(X, y, 3, (5, 10), (2, 3), seed=0)
    unset = {"split": None, "texts": None, "condition": None}  # what `build_episodes` adds
    assert episodes_table(mixed).to_pylist() == [{**e, **unset, "episode": i} for i, e in enumerate(mixed)]


def test_sample_numeric_episodes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, size=500)  # label 0 is noise
    X = np.column_stack([y, rng.normal(size=500)]).astype(float)  # column 0 tells the class
    episodes = sample_numeric_episodes(X, y, 40, (10, 30), (2, 4), seed=0, exclude_labels=(0,))
    assert episodes == sample_numeric_episodes(X, y, 40, (10, 30), (2, 4), seed=0, exclude_labels=(0,))
    for e in episodes:
        original = np.array(e["points"])[:, 0]
        labels = np.array(e["labels"])
        assert 0 not in original
        assert 2 <= e["k"] <= 4 and 10 <= e["n"] <= 30 and e["d"] == 2 and e["df"] is None
        assert sorted(set(e["labels"])) == list(range(e["k"]))
        # relabelling is one-to-one: each new label holds exactly one original class
        assert len(set(zip(original, labels))) == e["k"] == len(set(original))
        assert len({tuple(p) for p in e["points"]}) == e["n"]  # no point drawn twice


def test_sample_numeric_caps_k_and_n():
    X, y = np.arange(5.0)[:, None], np.array([0, 1, 1, 2, 2])
    for e in sample_numeric_episodes(X, y, 10, (10, 20), (3, 5), seed=0, exclude_labels=(0,)):
        assert e["k"] == 2 and e["n"] == 4
