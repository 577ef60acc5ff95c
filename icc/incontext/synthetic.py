"""Clustering episodes for in-context clustering: synthetic (Wang et al. 2025) or sampled from a
labelled numeric data set.

An episode is a dict: `points` (n lists of d floats), `labels` (n ints in 0..k-1, every cluster
non-empty, in the same random order as the points), `k`, `d`, `n`, `df` (Student-t degrees of
freedom; None for sampled episodes) and `seed` (the int that regenerates it); `icc.incontext.episodes`
builds the episodes of `icc incontext` from these and holds their table schema.
"""

import itertools
import numbers

import numpy as np

from icc.checks import check_int_range, check_ints
from icc.errors import ICCError


def episode_seeds(seed: int, count: int) -> list[int]:
    """`count` 63-bit episode seeds hashed from `seed`, so that runs with nearby seeds (0 and 1)
    draw unrelated episodes, as seed + index would not."""
    state = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint64)
    return [int(s >> np.uint64(1)) for s in state]


def _episode(points: np.ndarray, labels: np.ndarray, k: int, df: float | None, seed: int) -> dict:
    """Episode dict from points (n, d) and labels (n,) in 0..k-1."""
    n, d = points.shape
    return {
        "points": points.tolist(), "labels": labels.tolist(), "k": k, "d": d, "n": n, "df": df, "seed": seed,
    }


def make_episode(seed: int, k: int, d: int, df: float, n_range: tuple[int, int] = (10, 50)) -> dict:
    """One synthetic episode: k centroids uniform in [-10, 10]^d, each point a centroid plus
    standard Student-t noise with `df` degrees of freedom (heavy tails at small df).

    n is uniform in [n_range[0], n_range[1]] (inclusive; pass (n, n) for a fixed size) and the
    cluster sizes are a uniformly random composition of n into k positive parts.
    """
    if n_range[0] < k:
        raise ValueError(f"n_range {n_range} allows fewer points than k={k} clusters")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    centroids = rng.uniform(-10.0, 10.0, size=(k, d))
    # Dirichlet(1) then multinomial: every composition of n - k into k parts is equally likely.
    sizes = 1 + rng.multinomial(n - k, rng.dirichlet(np.ones(k)))
    labels = rng.permutation(np.repeat(np.arange(k), sizes))
    points = centroids[labels] + rng.standard_t(df, size=(n, d))
    return _episode(points, labels, k, float(df), seed)


def check_grid(ks, ds, dfs, n_range) -> None:
    """ICCError unless `ks` and `ds` are non-empty lists of positive integers, `dfs` of positive
    numbers, and `n_range` is [low, high] with max(ks) <= low <= high (every cluster gets a point)."""
    check_ints(ks, "ks")
    check_ints(ds, "ds")
    if (not isinstance(dfs, (list, tuple)) or not dfs
            or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0 for v in dfs)):
        raise ICCError(f"dfs must be a non-empty list of positive numbers, got {dfs!r}")
    low, _ = check_int_range(n_range, "n_range")
    if low < max(ks):
        raise ICCError(f"n_range {list(n_range)} allows fewer points than k={max(ks)} clusters")


def make_episodes(
    n_episodes_per_cell: int,
    ks: list[int],
    ds: list[int],
    dfs: list[float],
    seed: int,
    n_range: tuple[int, int] = (10, 50),
) -> list[dict]:
    """`n_episodes_per_cell` episodes for every (k, d, df) cell, cells in itertools.product order."""
    check_grid(ks, ds, dfs, n_range)
    cells = [cell for cell in itertools.product(ks, ds, dfs) for _ in range(n_episodes_per_cell)]
    seeds = episode_seeds(seed, len(cells))
    return [make_episode(s, k, d, df, n_range) for s, (k, d, df) in zip(seeds, cells)]


def sample_numeric_episodes(
    X: np.ndarray,
    y: np.ndarray,
    n_episodes: int,
    n_range: tuple[int, int],
    k_range: tuple[int, int],
    seed: int,
    exclude_labels: tuple = (),
) -> list[dict]:
    """Episodes drawn from a labelled data set X (N, d), y (N,).

    Each episode picks k (uniform in k_range, at most the number of classes) classes not in
    `exclude_labels` (e.g. a noise label), then n points (uniform in n_range, at most the points of
    those classes, at least k) without replacement: one per class, the rest uniformly from the
    chosen classes, so class proportions follow the data. Classes are relabelled 0..k-1 in random
    order.
    """
    check_int_range(n_range, "n_range")
    check_int_range(k_range, "k_range")
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    classes = np.setdiff1d(np.unique(y), np.asarray(exclude_labels, dtype=y.dtype))
    if len(classes) == 0:
        raise ValueError("no classes left after exclude_labels")
    members = {c: np.flatnonzero(y == c) for c in classes}
    episodes = []
    for s in episode_seeds(seed, n_episodes):
        rng = np.random.default_rng(s)
        k = min(int(rng.integers(k_range[0], k_range[1] + 1)), len(classes))
        chosen = rng.choice(classes, size=k, replace=False)
        counts = np.array([len(members[c]) for c in chosen])
        pool = np.concatenate([members[c] for c in chosen])  # rows of X, class by class
        pool_labels = np.repeat(np.arange(k), counts)
        n = int(np.clip(rng.integers(n_range[0], n_range[1] + 1), k, len(pool)))
        firsts = np.cumsum(counts) - counts + rng.integers(0, counts)  # one pool index per class
        others = rng.choice(np.setdiff1d(np.arange(len(pool)), firsts), size=n - k, replace=False)
        take = rng.permutation(np.concatenate([firsts, others]))
        episodes.append(_episode(X[pool[take]], pool_labels[take], k, None, s))
    return episodes

