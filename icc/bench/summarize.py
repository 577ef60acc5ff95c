"""The paper's summarisation experiment: an LLM summary of each text, embedded instead of the text.

Summaries are written once per (dataset, LLM settings) to a cached Parquet file (columns text,
label; rows in input order), which then goes through the bench like any other dataset. A row
that was rejected (empty text) keeps an empty summary, and so stays rejected.
"""

import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from icc.bench.cache import commit_entry, entry_path, new_entry
from icc.bench.datasets import read_dataset
from icc.bench.grid import DatasetSpec
from icc.checks import check_positive_int
from icc.data.fingerprint import cache_key
from icc.errors import ICCError
from icc.files import read_json, write_json
from icc.models.llm import PromptActor, check_causal_lm
from icc.ray_runtime import check_pool, map_actors


class Summarizer(PromptActor):
    """Ray Data actor: one causal LM; a batch (pyarrow, columns text and reject) gets its `text`
    replaced by the model's summary; rejected rows keep "". prompt: a format string with {text};
    each text is cut to `max_chars` characters in it. Other keyword arguments: `PromptActor`'s."""

    def __init__(self, model: str, prompt: str, max_new_tokens: int = 64, max_chars: int = 2000, **load_options):
        super().__init__(model, max_new_tokens, **load_options)
        self.prompt, self.max_chars = prompt, max_chars

    def prompts(self, batch: pa.Table) -> dict[int, str]:
        texts, reject = batch.column("text").to_pylist(), batch.column("reject").to_pylist()
        return {i: self.prompt.format(text=" ".join(text.split())[: self.max_chars])
                for i, (text, rejected) in enumerate(zip(texts, reject)) if not rejected}

    def answered(self, batch: pa.Table, answers: list[str | None]) -> pa.Table:
        summaries = ["" if answer is None else answer.strip() for answer in answers]
        return batch.set_column(batch.schema.get_field_index("text"), "text", pa.array(summaries, pa.string()))


def check_summarize(llm: dict, pool: dict, prompt: str, max_new_tokens: int = 64, max_chars: int = 2000,
                    texts_per_batch: int = 8) -> None:
    """ICCError for a `summarized_dataset` setting of the wrong type or range (the llm, its pool
    and the `summarize` group), before any work."""
    check_causal_lm(**llm)
    check_pool(**pool)
    if not isinstance(prompt, str) or "{text}" not in prompt:
        raise ICCError(f"summarize.prompt must be a text with {{text}} where the text goes, got {prompt!r}")
    check_positive_int(max_new_tokens, "summarize.max_new_tokens")
    check_positive_int(max_chars, "summarize.max_chars")
    check_positive_int(texts_per_batch, "summarize.texts_per_batch")


def summarized_dataset(dataset: DatasetSpec, cache_dir, llm: dict, pool: dict, prompt: str, max_new_tokens: int = 64,
                       max_chars: int = 2000, texts_per_batch: int = 8) -> tuple[DatasetSpec, dict]:
    """The dataset of summaries (cached; see module docstring) and its meta: seconds, texts, cached.

    llm: what loads the model (the config's `llm` group: model, dtype, adapter, ...), which with
    the prompt settings keys the cache; pool: how Ray runs it (`llm.pool`, see `map_actors`).
    """
    check_summarize(llm, pool, prompt, max_new_tokens, max_chars, texts_per_batch)
    settings = {"prompt": prompt, "max_new_tokens": max_new_tokens, "max_chars": max_chars, **llm}
    key = cache_key(**dataset.cache_parts(), summarizer=settings)
    entry = entry_path(cache_dir, "summaries", key)
    summary = replace(dataset, name=f"{dataset.name} (summaries)", path=str(entry / "summaries.parquet"),
                      text_column="text", label_column="label", sample=None)
    if (entry / "meta.json").exists():
        return summary, {**read_json(entry / "meta.json"), "cached": True}

    partial = new_entry(entry)
    start = time.perf_counter()
    ds = map_actors(read_dataset(dataset), Summarizer, settings, texts_per_batch, **pool, batch_format="pyarrow")
    writer, n = None, 0
    for batch in ds.select_columns(["text", "label"]).iter_batches(batch_format="pyarrow", batch_size=None):
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        writer = writer or pq.ParquetWriter(partial / "summaries.parquet", table.schema)
        writer.write_table(table)
        n += table.num_rows
    if writer:
        writer.close()
    meta = {"dataset": dataset.name, "summarizer": settings, "texts": n,
            "seconds": round(time.perf_counter() - start, 3)}
    write_json(partial / "meta.json", meta)
    commit_entry(partial, entry)
    return summary, {**meta, "cached": False}
