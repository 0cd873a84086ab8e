"""Examples of user code for dask-pipeline: an indicator module and a graph (installed by nothing).

Importable from the repository root (``python -m``, the ``dask-pipeline`` command and
notebooks look in the current directory), and used by ``configs/extend.yaml`` and
``notebooks/04-extend.ipynb``. A real project keeps such modules in its own package,
installed on every worker.
"""
