"""Search an icc cluster run: the query's nearest cluster(s), cosine ranking inside, optional LLM reranking; JSON lines out."""

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from icc.checks import check_bool
from icc.config import to_kwargs
from icc.corpus.report import write_report
from icc.corpus.rerank import check_reranker, make_reranker
from icc.corpus.rundir import SEARCH_REPORT
from icc.corpus.search import Searcher, check_search
from icc.errors import ICCError
from icc.pipeline import StageTimer, hydra_main


def run(cfg: DictConfig) -> None:
    for key, example in (("run", "run=<output.dir of icc cluster>"), ("query", 'query="your text"')):
        if OmegaConf.is_missing(cfg, key):
            raise ICCError(f"give {example}")
    # Every setting is checked before the run and the models load.
    check_search(cfg.top_k, cfg.search.filter, cfg.search.clusters, cfg.search.preview_chars)
    check_reranker(cfg.search.rerank, to_kwargs(cfg.llm, "generate", "pool"), cfg.llm.pool.num_threads,
                   **to_kwargs(cfg.rerank))
    check_bool(cfg.report, "report")
    timer = StageTimer()
    with timer("load"):
        searcher = Searcher.load(cfg.run, cfg.search.preview_chars)
        reranker = make_reranker(cfg.search.rerank, to_kwargs(cfg.llm, "generate", "pool"), cfg.llm.pool.num_threads,
                                 **to_kwargs(cfg.rerank))
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
        path = Path(cfg.report_path or Path(cfg.run) / SEARCH_REPORT)
        settings = {key: value for key, value in searcher.run.config["report"].items() if key != "enabled"}
        write_report(searcher.run, path, **settings, query=str(cfg.query), query_vector=vector, hits=hits)
        print(f"icc search: map with the query and its results in {path}", file=sys.stderr)


main = hydra_main("search", run)

if __name__ == "__main__":
    main()
