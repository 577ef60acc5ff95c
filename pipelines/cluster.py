"""Cluster a text corpus: read, embed on a Ray actor pool, cluster, name the clusters, write Parquet, metrics and an HTML map."""

from pathlib import Path

from omegaconf import DictConfig

from icc.cluster import make_clusterer
from icc.config import to_kwargs
from icc.corpus import rundir
from icc.corpus.describe import describe, members_needed
from icc.corpus.embed_stage import check_embed_settings, embed_corpus, embed_settings, resolve_embedder
from icc.corpus.hierarchy import hierarchy_table, write_hierarchy
from icc.corpus.labeler import make_labeler
from icc.corpus.report import check_report, write_report
from icc.corpus.sharded import assign_shards, fit_shards
from icc.corpus.summary import print_summary, quality, run_metrics
from icc.data.fingerprint import file_fingerprint
from icc.files import disk_full_as_error
from icc.pipeline import StageTimer, hydra_main, write_run_record
from icc.ray_runtime import start_ray


def run(cfg: DictConfig) -> None:
    # Every setting is checked before Ray starts and anything is written.
    out = Path(cfg.output.dir)
    columns, pool = to_kwargs(cfg.data, "path"), to_kwargs(cfg.embedder.pool)
    embedder = resolve_embedder(to_kwargs(cfg.embedder, "pool"), pool)  # as the key and run.json record it
    labeler = make_labeler(**to_kwargs(cfg.labeler), llm=to_kwargs(cfg.llm, "generate", "pool"),
                           pool=to_kwargs(cfg.llm.pool), embedder=embedder)
    attention = cfg.clusterer.name == "attention"  # clusters the corpus from an LLM's attention, not in fit_shards
    if attention:  # imported only here: it loads the in-context modules (a second of start-up)
        from icc.corpus.attention_graph import fit_attention, make_attention_clusterer
    clusterer = (make_attention_clusterer if attention else make_clusterer)(**to_kwargs(cfg.clusterer))
    check_embed_settings(embedder, pool, cfg.output.shard_rows)
    if cfg.report.enabled:
        check_report(cfg.report.max_points, cfg.report.projection)
    fingerprint = file_fingerprint(cfg.data.path)
    settings = embed_settings(cfg.data.path, columns, embedder, fingerprint)
    # open_run refuses before any work; a disk that fills up ends the run with one line (the next run resumes)
    with disk_full_as_error(out), rundir.open_run(out, cfg.data.path, settings, overwrite=cfg.output.overwrite):
        if labeler:  # its re-ranking encoder loads in this process while it waits on Ray's start and the embed stage
            labeler.preload()
        start_ray(**cfg.ray)
        timer = StageTimer(progress=cfg.ray.progress_bars)
        timer.started()
        # embed: resumes a run cut off in this stage; skipped when out holds it complete
        with timer("embed", rows=True) as progress:
            shards, embedded_now = embed_corpus(cfg.data.path, columns, embedder, pool, out,
                                                cfg.output.shard_rows, fingerprint, progress)
        shards.check_clusterable(cfg.data.path)
        with timer("cluster"):
            fitted = (fit_attention(clusterer, shards, to_kwargs(cfg.llm, "generate", "pool"), to_kwargs(cfg.llm.pool))
                      if attention else fit_shards(clusterer, shards))  # fitted in Ray tasks: fitted.clusterer is a copy
        with timer("assign", rows=True) as progress:
            assigned = assign_shards(fitted, shards, top=members_needed(labeler))
            progress.update(shards.n_rows)
        with timer("write"):
            member_texts = rundir.texts_at_rows(out, assigned.central)
        with timer("label"):
            centers = fitted.clusterer.cluster_centers_
            described = describe(member_texts, labeler, centers)
            rundir.write_clusters(out, rundir.clusters_table(centers, assigned.sizes, described.central_texts,
                                                             described.labels))
            write_hierarchy(out, hierarchy_table(centers, assigned.sizes))
        with timer("metrics"):
            scores = quality(assigned, shards.has_labels)

        metrics = run_metrics(shards, embedded_now, fitted, assigned, timer, scores)
        write_run_record(out, "cluster", cfg, metrics, embedder=embedder, vectors={"dim": shards.dim, "normalized": True})
        if cfg.report.enabled:
            write_report(rundir.load_run(out, finished=False), out / rundir.REPORT, **to_kwargs(cfg.report, "enabled"))
        rundir.mark_complete(out)  # last: a reader knows a complete run by it
    print_summary(out, metrics, assigned.sizes, described.central_texts, described.names)


main = hydra_main("cluster", run)

if __name__ == "__main__":
    main()
