"""Where tasks run: the executor interface and the local process pool (``executors``), a Dask
cluster (``dask_executor``), task bookkeeping (``tasks``), and the object-store path for
workers that do not see the runner's files (``task_sync``). Stages never import an executor."""
