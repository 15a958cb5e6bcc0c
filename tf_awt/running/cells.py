"""Where a sweep's cells run in parallel: Ray tasks, on a local Ray instance started for the sweep
or on an existing Ray cluster.

Each cell is one :class:`tf_awt.running.pipeline.Run` in its own directory, so a cell is a pure function of
its recipe: a Ray task that runs it can run anywhere the directory and the data can be reached, and
a task whose worker dies is retried by Ray (``max_retries``) and *resumes* the cell from its epoch
checkpoints, ending with the result an uninterrupted run gives. A cell whose ``summary.json``
exists is not sent at all (:func:`tf_awt.running.sweep.sweep` skips it).

Local: ``ray.init(num_cpus=workers)``; every cell asks for ``cpus_per_cell`` CPUs and its
TensorFlow thread pools are sized to them (``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS`` in
the task's environment), so ``workers`` cells share the cores instead of each spawning a pool per
core. On a cluster (``address``) the same, on as many nodes as it has; the cell directories must
be on storage every node sees (a shared or synced ``--out``) and MLflow must be a tracking server
every node reaches (docs/distributed.md). Ray is imported here only: without it, a sweep with one
worker and no address runs as before.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable, Optional, Sequence

__all__ = ["Cell", "run_on_ray"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a sweep: ``recipe`` (a :class:`tf_awt.running.recipes.Recipe`) run in ``out``."""

    name: str
    recipe: object
    out: str
    recipe_name: str = ""
    data_dir: Optional[str] = None
    force: bool = False


def _absolute_tracking_uri() -> str:
    """The driver's MLflow tracking URI, with a local store's path made absolute for the workers."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not os.path.isabs(uri[len("sqlite:///"):]):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def run_cell(cell: Cell, tracking_uri: Optional[str] = None, parent_run_id: Optional[str] = None) -> str:
    """Runs (or resumes) ``cell``; with ``parent_run_id``, as an MLflow child run of it at
    ``tracking_uri``. What a Ray task runs; returns the address of the node it ran on."""
    from tf_awt.running.logs import quiet
    from tf_awt.running.pipeline import Run
    from tf_awt.running.tracking import Tracker

    quiet()
    tracker = Tracker(tracking_uri=tracking_uri, parent_run_id=parent_run_id) if parent_run_id else None
    Run(cell.recipe, cell.out, recipe_name=cell.recipe_name, data_dir=cell.data_dir, tracker=tracker,
        log=lambda message: print(f"{cell.name}: {message}", file=sys.stderr, flush=True), force=cell.force).all()
    import ray

    return ray.util.get_node_ip_address() + " (node " + ray.get_runtime_context().get_node_id()[:8] + ")"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("running cells in parallel (--workers > 1 or --address) needs Ray: pip install 'ray>=2.9' "
                         "(or the package's [ray] extra)") from None
    return ray


def run_on_ray(cells: Sequence[Cell], workers: int, address: Optional[str] = None, parent_run_id: Optional[str] = None,
               log: Callable[[str], None] = print, verbose: bool = False, cpus_per_cell: int = 1,
               max_retries: int = 2) -> None:
    """Runs ``cells`` as Ray tasks, at most ``workers`` at once (locally; on a cluster, as many as
    it has room for); returns when every cell finished, raising the first cell's error otherwise.

    Args:
      cells: the cells to run (their directories absolute or relative to this process's cwd).
      workers: the local Ray instance's CPUs (ignored with ``address``).
      address: an existing Ray cluster (default None: a local instance for this call, shut down after).
      parent_run_id: the sweep's MLflow parent run (default None: cells are not tracked).
      log: one-line progress messages: cells done, running, failed, ETA (default ``print``).
      verbose: Ray's own log lines and the cells' output on this terminal (default False).
      cpus_per_cell: CPUs a cell asks for and its TensorFlow thread-pool size (default 1).
      max_retries: Ray retries of a cell whose worker died (default 2); a retried cell resumes.
    """
    if not cells:
        return
    ray = _import_ray()
    cells = [dataclasses.replace(c, out=os.path.abspath(c.out),
                                 data_dir=os.path.abspath(c.data_dir) if c.data_dir else None) for c in cells]
    threads = str(cpus_per_cell)
    env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads,
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")}
    local = dict(num_cpus=workers, include_dashboard=False, object_store_memory=100 * 2**20)
    ray.init(address=address, **({} if address else local), log_to_driver=verbose,
             logging_level="INFO" if verbose else "ERROR", runtime_env={"env_vars": env})
    try:
        uri = _absolute_tracking_uri() if parent_run_id else None
        task = ray.remote(num_cpus=cpus_per_cell, max_retries=max_retries)(run_cell)
        pending = {task.remote(cell, uri, parent_run_id): cell for cell in cells}
        t0, done = time.time(), 0
        log(f"sweep: {len(cells)} cells on Ray ({'cluster ' + address if address else f'{workers} local workers'})")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                node = ray.get(ready[0])
            except Exception as err:  # the cell's own error, after Ray's retries
                cause = getattr(err, "cause", None) or err
                raise RuntimeError(f"sweep cell {cell.name} failed: {type(cause).__name__}: {cause}") from None
            done += 1
            elapsed = time.time() - t0
            eta = elapsed / done * len(pending)  # at the rate cells have finished so far
            log(f"sweep: {cell.name} finished on {node} ({done} of {len(cells)} done, {len(pending)} left, "
                f"{elapsed:.0f} s{f', about {eta:.0f} s to go' if pending else ''})")
    finally:
        ray.shutdown()
