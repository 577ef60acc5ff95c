"""Episodes for `icc incontext`, built from its data config: a synthetic grid, episodes sampled from
a numeric data set (`.data` + `.labels0` files), or item sets of texts sampled from a labelled file.

An episode is a dict with `points` (n lists of d floats) or `texts` (n strings), `labels` (n ints
in 0..k-1, or None when nothing scores it), `k`, `n`, `d` and `df` (None where they do not apply),
`condition` (None, or a text such as "by sentiment"), `seed` (episodes on the same items share it)
and `split` ("test" or "validation").
"""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from icc.checks import check_bool, check_positive_int
from icc.data.corpus import clean_texts, list_files
from icc.errors import ICCError
from icc.incontext.synthetic import make_episodes, sample_numeric_episodes

# Larger values overflow the standardisation (squares beyond float64) or the float32 distances
# of the k-means baseline: 1e308 would silently become 0 after scaling by an infinite deviation.
MAX_ABS_VALUE = 1e15

SCHEMA = pa.schema([
    ("episode", pa.int64()),
    ("split", pa.string()),
    ("seed", pa.int64()),
    ("k", pa.int64()),
    ("n", pa.int64()),
    ("d", pa.int64()),
    ("df", pa.float64()),
    ("condition", pa.string()),
    ("points", pa.list_(pa.list_(pa.float64()))),
    ("texts", pa.list_(pa.string())),
    ("labels", pa.list_(pa.int64())),
])


def build_episodes(data: dict, seed: int, count: int, split: str) -> list[dict]:
    """Episodes from a data config (`data.kind`: synthetic, numeric or text).

    count: episodes per (k, d, df) cell for synthetic data, item sets otherwise (a text item set
        gives one episode per condition).
    """
    builders = {"synthetic": _synthetic, "numeric": _numeric, "text": _text}
    kind = data.get("kind")
    if kind not in builders:
        raise ICCError(f"data must be one of {', '.join(builders)} for icc incontext (got data.kind={kind!r})")
    check_positive_int(count, "the number of episodes")
    return [{"texts": None, "condition": None, **e, "split": split} for e in builders[kind](data, seed, count)]


def episodes_table(episodes: list[dict]) -> pa.Table:
    """Episodes as an Arrow table in SCHEMA, `episode` numbering the rows."""
    rows = [{**e, "episode": i} for i, e in enumerate(episodes)]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _synthetic(data: dict, seed: int, count: int) -> list[dict]:
    try:
        return make_episodes(count, data["ks"], data["ds"], data["dfs"], seed, tuple(data["n_range"]))
    except ValueError as e:  # e.g. more clusters than points
        raise ICCError(f"synthetic episodes: {e}") from None


def read_numeric(path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, d) float64 from a whitespace-separated matrix and labels (N,) int64, one a line.
    ICCError unless every value is finite and at most MAX_ABS_VALUE in magnitude."""
    try:
        X = np.loadtxt(path, ndmin=2)
        y = np.loadtxt(labels_path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as e:
        raise ICCError(f"cannot read numeric data {path} / {labels_path}: {e}") from None
    if len(X) != len(y):
        raise ICCError(f"{path} has {len(X)} rows but {labels_path} has {len(y)} labels")
    if not np.isfinite(X).all():
        raise ICCError(f"{path} holds NaN or infinite values")
    if np.abs(X).max(initial=0) > MAX_ABS_VALUE:
        raise ICCError(f"{path} holds values up to {np.abs(X).max():g}, beyond {MAX_ABS_VALUE:g}: rescale the data")
    return X, y


def _numeric(data: dict, seed: int, count: int) -> list[dict]:
    """Episodes of `data.path` points; label 0 (noise) is left out. With `standardize`, every column
    is scaled to zero mean and unit variance over the whole set (labels unused)."""
    X, y = read_numeric(data["path"], data["labels"])
    if check_bool(data["standardize"], "data.standardize"):
        X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    try:
        return sample_numeric_episodes(
            X, y, count, tuple(data["n_range"]), tuple(data["k_range"]), seed, exclude_labels=(0,)
        )
    except ValueError as e:
        raise ICCError(f"{data['path']}: {e}") from None


def read_texts(path: str, text_column: str, label_columns: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Texts and their labels (as str) from a CSV, JSONL or Parquet file (or directory/glob).

    Rows with an empty text or without a label in the first of `label_columns` are dropped.
    """
    files, fmt = list_files(path)
    readers = {
        "csv": lambda f: pacsv.read_csv(f, parse_options=pacsv.ParseOptions(newlines_in_values=True)),
        "json": pajson.read_json,
        "parquet": pq.read_table,
    }
    table = pa.concat_tables([readers[fmt](f) for f in files], promote_options="permissive")
    for column in [text_column, *label_columns]:
        if column not in table.column_names:
            raise ICCError(f"column '{column}' not in {path} (columns: {', '.join(table.column_names)})")
    texts, reject, _ = clean_texts(table.column(text_column).to_pylist())
    labels = {c: table.column(c).to_pylist() for c in label_columns}
    keep = [i for i, r in enumerate(reject) if not r and labels[label_columns[0]][i] is not None]
    return [texts[i] for i in keep], {c: np.array([str(v[i]) for i in keep]) for c, v in labels.items()}


def _text(data: dict, seed: int, count: int) -> list[dict]:
    """Item sets of texts of k classes of `data.label_column` (drawn as numeric episodes are, see
    `sample_numeric_episodes`), each cut to `max_chars` characters; every item set gives one episode
    per condition, on the same items in the same order. Condition i is scored against the column
    `condition_labels[i]` (null: not scored; `condition_labels: null`: every condition against
    `label_column`)."""
    check_positive_int(data["max_chars"], "data.max_chars")
    conditions = list(data["conditions"])
    scored_by = data["condition_labels"]
    scored_by = [data["label_column"]] * len(conditions) if scored_by is None else list(scored_by)
    if not conditions or len(scored_by) != len(conditions):
        raise ICCError(f"data.condition_labels needs one entry (a column or null) per condition: {conditions}")
    label_columns = list(dict.fromkeys([data["label_column"], *(c for c in scored_by if c)]))
    texts, labels = read_texts(data["path"], data["text_column"], label_columns)
    if not texts:
        raise ICCError(f"no labelled texts in {data['path']}")
    rows_as_points = np.arange(len(texts), dtype=np.float64)[:, None]
    try:
        draws = sample_numeric_episodes(
            rows_as_points, labels[data["label_column"]], count, tuple(data["n_range"]), tuple(data["k_range"]), seed
        )
    except ValueError as e:
        raise ICCError(f"{data['path']}: {e}") from None
    episodes = []
    for draw in draws:
        rows = [int(p[0]) for p in draw["points"]]
        items = [texts[r][: data["max_chars"]] for r in rows]
        for condition, column in zip(conditions, scored_by):
            truth = None
            if column:
                truth = np.unique(labels[column][rows], return_inverse=True)[1].ravel().tolist()
            episodes.append({
                "texts": items, "labels": truth, "k": draw["k"], "n": draw["n"], "d": None, "df": None,
                "condition": condition, "seed": draw["seed"], "points": None,
            })
    return episodes
