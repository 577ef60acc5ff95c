"""Merge clusters of an icc cluster run in place: new assignments, clusters, hierarchy, metrics and report."""

from omegaconf import DictConfig, OmegaConf

from icc.corpus.merge import merge_run
from icc.errors import ICCError
from icc.pipeline import hydra_main


def run(cfg: DictConfig) -> None:
    for key, example in (("run", "run=<output.dir of icc cluster>"), ("clusters", "clusters=[3,7]")):
        if OmegaConf.is_missing(cfg, key):
            raise ICCError(f"give {example}")
    clusters = OmegaConf.to_object(cfg.clusters) if OmegaConf.is_config(cfg.clusters) else cfg.clusters
    metrics = merge_run(cfg.run, clusters)
    print(f"icc merge: clusters {', '.join(map(str, sorted(set(clusters))))} of {cfg.run} are cluster "
          f"{metrics['merges'][-1]['into']} now; k={metrics['k']}")


main = hydra_main("merge", run)

if __name__ == "__main__":
    main()
