"""Scheduled incremental clustering: embed and assign a growing corpus's new partitions, refit on drift."""


from omegaconf import DictConfig

from icc.cluster import make_clusterer
from icc.config import to_kwargs
from icc.corpus.embed_stage import check_embed_settings, resolve_embedder
from icc.corpus.incremental import open_state, print_summary, run_incremental
from icc.corpus.shares import check_shares_report, write_shares_report
from icc.pipeline import hydra_main, write_run_record
from icc.ray_runtime import start_ray


def run(cfg: DictConfig) -> None:
    state_dir = cfg.schedule.state  # first: a missing schedule.state stops the run here, before Ray starts
    clusterer = make_clusterer(**to_kwargs(cfg.clusterer))
    pool = to_kwargs(cfg.embedder.pool)
    embedder = resolve_embedder(to_kwargs(cfg.embedder, "pool"), pool)  # as the stages' keys record it
    check_embed_settings(embedder, pool, cfg.output.shard_rows)
    check_shares_report(state_dir)
    with open_state(state_dir, cfg.schedule.rebuild) as state:  # a state in use or torn stops the run before Ray
        start_ray(**cfg.ray)
        run_dir, metrics = run_incremental(state, cfg.data.path, to_kwargs(cfg.data, "path"), embedder, pool,
                                           clusterer, cfg.output.shard_rows,
                                           **to_kwargs(cfg.schedule, "state", "rebuild"))
        write_run_record(run_dir, "incremental", cfg)
        write_shares_report(state_dir)  # the cluster shares over the partitions, in schedule.state/report.html
    print_summary(run_dir, metrics)


main = hydra_main("incremental", run)

if __name__ == "__main__":
    main()
