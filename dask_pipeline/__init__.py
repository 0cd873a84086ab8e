"""dask-pipeline: a Dask-distributed batch framework for quantitative research.

    cfg = dask_pipeline.load_config("configs/quickstart.yaml", ["cluster.n_workers=2"])
    result = dask_pipeline.run(cfg)            # starts a local cluster, writes cfg.run_dir
    with dask_pipeline.connect(cfg.cluster) as client:
        result = dask_pipeline.run(cfg, client=client)
"""

__version__ = "0.1.0"

__all__ = ["__version__", "connect", "load_config", "run"]


def __getattr__(name: str):
    # Lazy, so that `import dask_pipeline.data` on a worker does not import the runner.
    if name == "load_config":
        from dask_pipeline.config import load_config

        return load_config
    if name == "run":
        from dask_pipeline.runner import run

        return run
    if name == "connect":
        from dask_pipeline.cluster import connect

        return connect
    raise AttributeError(f"module 'dask_pipeline' has no attribute {name!r}")
