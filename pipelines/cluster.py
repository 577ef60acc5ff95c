"""Cluster a text corpus: read, embed on a Ray actor pool, cluster, name the clusters, write Parquet, metrics and an HTML map."""

import sys
from pathlib import Path

import hydra
import numpy as np
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from icc.cluster import make_clusterer
from icc.config import CONFIG_DIR, to_kwargs
from icc.corpus.embed_stage import embed_corpus
from icc.corpus.incremental import run_incremental
from icc.corpus.labeler import make_labeler
from icc.corpus.report import check_projection, write_report
from icc.corpus.rundir import clusters_table, load_run
from icc.corpus.sharded import assign_shards, expand_contingency, fit_shards
from icc.data.parquet import take_texts
from icc.errors import ICCError, user_errors
from icc.files import write_json
from icc.metrics import external_metrics, internal_metrics
from icc.pipeline import StageTimer, package_versions
from icc.ray_runtime import start_ray

CENTRAL_TEXTS = 5  # per cluster in clusters.parquet
# Keys of the shared llm config that only the in-context pipeline's generation uses.
LLM_GENERATION_KEYS = ("max_new_tokens", "new_tokens_per_item", "episodes_per_batch")


def run(cfg: DictConfig) -> Path:
    if cfg.schedule.mode == "incremental":
        return run_scheduled(cfg)
    if cfg.schedule.mode != "full":
        raise ICCError(f"unknown schedule.mode '{cfg.schedule.mode}' (choose from full, incremental)")
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    labeler = _labeler(cfg)
    clusterer = make_clusterer(cfg.clusterer.name, **to_kwargs(cfg.clusterer, "name"))
    if cfg.report.enabled:
        check_projection(cfg.report.projection)
    start_ray(**cfg.ray)

    with timer("embed"):  # resumes a run cut off in this stage; skipped when out holds it complete
        shards, embedded_now = embed_corpus(cfg.data.path, to_kwargs(cfg.data, "path"), to_kwargs(cfg.embedder),
                                            out, cfg.output.shard_rows)
    n_rows, n_ok = shards.n_rows, shards.n_embedded
    if n_rows == 0:
        raise ICCError(f"the corpus is empty: {cfg.data.path}")
    if n_ok == 0:
        raise ICCError(f"no text to cluster: all {n_rows} rows were rejected (empty texts)")

    with timer("cluster"):
        fitted = fit_shards(clusterer, shards)
        clusterer = fitted.clusterer  # fitted in a Ray task: a copy comes back
    with timer("assign"):
        top = max(CENTRAL_TEXTS, labeler.texts_per_cluster if labeler else 0)
        assigned = assign_shards(fitted, shards, top)
        centers, sizes = clusterer.cluster_centers_, assigned.sizes
    with timer("write"):
        texts = take_texts(out / "texts.parquet", np.concatenate(assigned.central))
        splits = np.cumsum([len(c) for c in assigned.central])[:-1]
        member_texts = [list(t) for t in np.split(np.array(texts, dtype=object), splits)]
        central_texts = [t[:CENTRAL_TEXTS] for t in member_texts]

    with timer("label"):
        names = labeler.names(member_texts) if labeler else None
        pq.write_table(clusters_table(centers, sizes, central_texts, names), out / "clusters.parquet")

    with timer("metrics"):
        quality = internal_metrics(assigned.sample_vectors, assigned.sample_clusters)
        if shards.has_labels:
            quality.update(external_metrics(*expand_contingency(assigned.contingency)))

    metrics = {
        "rows": n_rows,
        "embedded": n_ok,
        "rows_embedded_this_run": embedded_now,
        "rejected": int(n_rows - n_ok),
        "reject_reasons": shards.reject_reasons,
        "undecodable_rows_replaced": shards.replaced,
        "truncated_to_max_length": shards.truncated,
        "k": len(centers),
        "noise": assigned.noise,
        "fit_rows": int(clusterer.fit_rows_),
        "fit": "distributed k-means over Ray blocks" if fitted.distributed else "in memory",
        "nodes": len(assigned.nodes),
        "seconds": timer.seconds,
        "driver_peak_rss_mib": timer.peak_rss_mib,
        "texts_per_s": round(embedded_now / max(timer.seconds["embed"], 1e-3), 2),
        "internal_metrics_rows": len(assigned.sample_clusters),
        **quality,
    }
    if getattr(clusterer, "inertia_", None) is not None:
        metrics["inertia"] = clusterer.inertia_
    if getattr(clusterer, "k_scores_", None):
        metrics["k_silhouette"] = clusterer.k_scores_
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", {
        "pipeline": "cluster",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "embedder": {"model": cfg.embedder.model, "dim": shards.dim, "pooling": cfg.embedder.get("pooling", "mean"),
                     "normalized": True, "max_length": cfg.embedder.max_length},
        "versions": package_versions(),
    })
    if cfg.report.enabled:
        write_report(load_run(out), out / "report.html", **to_kwargs(cfg.report, "enabled"))
    _print_summary(out, metrics, sizes, central_texts, names)
    return out


def run_scheduled(cfg: DictConfig) -> Path:
    """schedule.mode=incremental: embed and assign the new partitions of data.path (icc.incremental)."""
    if not cfg.schedule.state:
        raise ICCError("schedule.mode=incremental needs schedule.state=<directory that keeps the state between runs>")
    clusterer = make_clusterer(cfg.clusterer.name, **to_kwargs(cfg.clusterer, "name"))
    start_ray(**cfg.ray)
    run_dir, metrics = run_incremental(
        cfg.data.path, cfg.schedule.state, to_kwargs(cfg.data, "path"), to_kwargs(cfg.embedder), clusterer,
        cfg.output.shard_rows, **to_kwargs(cfg.schedule, "mode", "state"))
    write_json(run_dir / "run.json", {"pipeline": "cluster", "config": OmegaConf.to_container(cfg, resolve=True),
                                      "versions": package_versions()})
    drift = metrics.get("drift", {})
    print(f"\nicc cluster (incremental): new {metrics['new_partitions'] or 'none'}, skipped "
          f"{len(metrics['skipped_partitions'])}, {metrics['action']} {metrics['refit_reason']}".rstrip()
          + "".join(f", {name}={drift[name]:.3f}" for name in ("far_share", "size_tvd") if name in drift)
          + f" -> {run_dir}")
    return run_dir


def _labeler(cfg: DictConfig):
    params = to_kwargs(cfg.labeler, "name")
    if cfg.labeler.name == "llm":
        params.update(to_kwargs(cfg.llm, *LLM_GENERATION_KEYS))
    return make_labeler(cfg.labeler.name, **params)


def _print_summary(out: Path, metrics: dict, sizes: np.ndarray, central_texts: list[list[str]],
                   names: list[str | None] | None, rows: int = 15) -> None:
    print(f"\nicc cluster: {metrics['rows']} rows, {metrics['rejected']} rejected, k={metrics['k']} -> {out}")
    scores = {name: metrics[name] for name in ("acc", "ari", "nmi", "silhouette") if name in metrics}
    print("  " + "  ".join(f"{name}={value:.3f}" for name, value in scores.items()))
    print(f"  {'cluster':>7}  {'size':>6}  {'name' if names else 'text nearest the centroid'}")
    for c in np.argsort(-sizes, kind="stable")[:rows]:
        example = central_texts[c][0].replace("\n", " ") if central_texts[c] else ""
        print(f"  {c:>7}  {sizes[c]:>6}  {(names[c] or '') if names else example[:90]}")
    if len(sizes) > rows:
        print(f"  ... {len(sizes) - rows} more clusters in {out / 'clusters.parquet'}")


@hydra.main(config_path=CONFIG_DIR, config_name="cluster", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
