"""A bench dataset read as a Ray Dataset of prepared rows: the whole corpus, or a stratified sample.

A sample (`DatasetSpec.sample` rows) keeps each label's share of the corpus and is the same
whatever order Ray Data reads the rows in: the rows are sorted by (label, text) before the
seeded draw. It is drawn in the driver, so it suits the labelled corpora a bench scores
(thousands to a few hundred thousand texts), not a corpus that does not fit in memory.
"""

import numpy as np
import pandas as pd
import pyarrow as pa

from icc.bench.grid import DatasetSpec
from icc.data.corpus import read_corpus


def read_dataset(dataset: DatasetSpec):
    """Ray Dataset of `read_corpus` rows (text, reject, replaced, label) of `dataset`, sampled
    to `dataset.sample` rows when that is set and smaller than the corpus."""
    import ray.data

    ds = read_corpus(dataset.path, dataset.text_column, label_column=dataset.label_column)
    if not dataset.sample:
        return ds
    batches = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
               for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
    table = pa.concat_tables(batches, promote_options="permissive")
    return ray.data.from_arrow(stratified_sample(table, dataset.sample, dataset.seed))


def stratified_sample(table: pa.Table, n: int, seed: int = 0) -> pa.Table:
    """`n` rows of `table` (columns text and label), each label (a missing label counts as one)
    drawn in proportion to its rows (largest remainder rounding), uniformly at random within it.
    The whole table when n >= its rows. Rows come out sorted by (label, text)."""
    if n >= table.num_rows:
        return table
    table = table.sort_by([("label", "ascending"), ("text", "ascending")])
    codes, _ = pd.factorize(table.column("label").to_pandas(), use_na_sentinel=False)
    counts = np.bincount(codes)
    quota = counts * n / table.num_rows
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(codes == c), size=t, replace=False) for c, t in enumerate(take)]
    return table.take(np.sort(np.concatenate(rows)))
