"""Search an icc cluster run: the query's nearest cluster(s), cosine ranking inside, optional LLM reranking; JSON lines out."""

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from icc.config import CONFIG_DIR, to_kwargs
from icc.corpus.report import write_report
from icc.corpus.search import Searcher
from icc.errors import ICCError, user_errors
from icc.pipeline import StageTimer

# Keys of the shared llm config for generation or for Ray actors: the judge scores prompts in this process.
LLM_UNUSED_KEYS = ("max_new_tokens", "new_tokens_per_item", "episodes_per_batch", "actors", "num_gpus", "cpus_per_actor")


def run(cfg: DictConfig) -> list[dict]:
    for key, example in (("run", "run=<output.dir of icc cluster>"), ("query", 'query="your text"')):
        if OmegaConf.is_missing(cfg, key):
            raise ICCError(f"give {example}")
    timer = StageTimer()
    with timer("load"):
        searcher = Searcher.load(cfg.run, cfg.search.preview_chars)
        reranker = _reranker(cfg) if cfg.search.rerank != "none" else None
        vector = searcher.embed(str(cfg.query))
    with timer("search"):
        clusters = searcher.query_clusters(vector, cfg.search.filter, cfg.search.clusters)
        hits = searcher.search(vector, cfg.top_k, cfg.search.filter, cfg.search.clusters)
    if reranker is not None:
        with timer("rerank"):
            hits = searcher.rerank(str(cfg.query), hits, reranker)
    for hit in hits:
        print(json.dumps(hit, ensure_ascii=False))
    where = "all clusters" if clusters is None else "cluster " + ", ".join(searcher.run.cluster_label(c) for c in clusters)
    print(f"icc search: {len(hits)} results from {where}; "
          + ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in timer.seconds.items()), file=sys.stderr)
    if cfg.report:
        path = Path(cfg.report_path or Path(cfg.run) / "search_report.html")
        report = searcher.run.config.get("report", {})
        write_report(searcher.run, path, report.get("max_points", 20000), report.get("projection", "pca"),
                     report.get("seed", 0), query=str(cfg.query), query_vector=vector, hits=hits)
        print(f"icc search: map with the query and its results in {path}", file=sys.stderr)
    return hits


def _reranker(cfg: DictConfig):
    from icc.corpus.rerank import PairwiseJudge, PairwiseReranker

    if cfg.search.rerank != "llm":
        raise ICCError(f"unknown search.rerank '{cfg.search.rerank}' (choose from none, llm)")
    judge = PairwiseJudge.load(**to_kwargs(cfg.llm, *LLM_UNUSED_KEYS), **to_kwargs(cfg.rerank, "max_calls"))
    return PairwiseReranker(judge, cfg.rerank.max_calls)


@hydra.main(config_path=CONFIG_DIR, config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
