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
from typing import Callable, Dict, Optional, Sequence

__all__ = ["Cell", "run_cells", "run_on_ray", "CellsFailed", "check_parallel", "unfinished"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a sweep: ``recipe`` (a :class:`tf_awt.running.recipes.Recipe`) run in ``out``."""

    name: str
    recipe: object
    out: str
    recipe_name: str = ""
    data_dir: Optional[str] = None
    force: bool = False


class CellsFailed(RuntimeError):
    """Some cells failed (after Ray's retries); every other cell ran to its end. ``failed`` maps a
    cell's name to its error's one line."""

    def __init__(self, failed: Dict[str, str], total: int):
        self.failed = dict(failed)
        lines = "; ".join(f"{name}: {why}" for name, why in failed.items())
        super().__init__(f"{len(failed)} of {total} cells failed (the others finished; run the same command again to "
                         f"retry these): {lines}")


class _Progress:
    """One line per finished cell: done, running, failed, left, elapsed and the ETA at the rate so far."""

    def __init__(self, total: int, log: Callable[[str], None], label: str):
        self.total, self.log, self.label, self.t0 = total, log, label, time.time()
        self.done, self.failed = 0, {}

    def finished(self, cell: "Cell", where: str = "", error: Optional[BaseException] = None, running: int = 0) -> None:
        if error is None:
            self.done += 1
        else:
            self.failed[cell.name] = f"{type(error).__name__}: {error}"
        ended = self.done + len(self.failed)
        left = self.total - ended
        elapsed = time.time() - self.t0
        eta = f", about {elapsed / ended * left:.0f} s to go" if left else ""
        state = "finished" + (f" on {where}" if where else "") if error is None else f"FAILED ({type(error).__name__}: {error})"
        self.log(f"{self.label}: {cell.name} {state} ({self.done} done, {running} running, {len(self.failed)} failed, "
                 f"{left} left of {self.total}; {elapsed:.0f} s{eta})")


def unfinished(cells, log: Callable[[str], None], label: str) -> list:
    """The cells still to run: a cell whose ``summary.json`` exists finished and is kept (logged),
    unless it is forced."""
    todo = []
    for cell in cells:
        if os.path.exists(os.path.join(cell.out, "summary.json")) and not cell.force:
            log(f"{label}: {cell.name} already finished, kept")
        else:
            todo.append(cell)
    return todo


def run_cells(cells: Sequence[Cell], workers: int = 1, address: Optional[str] = None, parent_run_id: Optional[str] = None,
              track: bool = False, log: Callable[[str], None] = print, verbose: bool = False, progress=None,
              label: str = "sweep") -> None:
    """Runs (or resumes) ``cells``: one after another in this process (``workers=1``, no
    ``address``), or as Ray tasks (:func:`run_on_ray`). A failing cell does not stop the others;
    :class:`CellsFailed` names every failed cell at the end.

    Args:
      cells: the cells to run.
      workers, address, verbose: as :func:`run_on_ray`'s (``RAY_ADDRESS`` when ``address`` is None).
      parent_run_id: the MLflow parent run the cells are children of (default None).
      track: record each cell as an MLflow child run of the active parent (default False).
      log: progress lines (default ``print``).
      progress: the per-phase progress bars of a sequential run (default None).
      label: the progress lines' prefix (default "sweep").
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if workers > 1 or address is not None:
        return run_on_ray(cells, workers, address, parent_run_id if track else None, log=log, verbose=verbose, label=label)
    from tf_awt.running.pipeline import Run
    from tf_awt.running.tracking import Tracker

    status = _Progress(len(cells), log, label)
    for cell in cells:
        log(f"{label}: running {cell.name}")
        try:
            Run(cell.recipe, cell.out, recipe_name=cell.recipe_name, data_dir=cell.data_dir, progress=progress,
                tracker=Tracker(nested=True) if track else None, log=log, force=cell.force).all()
        except Exception as err:  # the next cells still run; the error is reported at the end
            status.finished(cell, error=err)
            continue
        status.finished(cell)
    if status.failed:
        raise CellsFailed(status.failed, len(cells))


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


def check_parallel(workers, address: Optional[str] = None) -> int:
    """``workers`` checked (an integer >= 1), and Ray importable when the cells are to run on it
    (``workers > 1``, ``address`` or ``RAY_ADDRESS``): a one-line error before anything is written."""
    from tf_awt import _validate

    workers = _validate.integer(workers, "workers", low=1)
    if workers > 1 or address or os.environ.get("RAY_ADDRESS"):
        _import_ray()
    return workers


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("running cells in parallel (--workers > 1 or --address) needs Ray: pip install 'ray>=2.9' "
                         "(or the package's [ray] extra)") from None
    return ray


def run_on_ray(cells: Sequence[Cell], workers: int, address: Optional[str] = None, parent_run_id: Optional[str] = None,
               log: Callable[[str], None] = print, verbose: bool = False, cpus_per_cell: int = 1,
               max_retries: int = 2, label: str = "sweep") -> None:
    """Runs ``cells`` as Ray tasks, at most ``workers`` at once (locally; on a cluster, as many as
    it has room for); returns when every cell ended, raising :class:`CellsFailed` if any failed.

    Args:
      cells: the cells to run (their directories absolute or relative to this process's cwd).
      workers: the local Ray instance's CPUs (ignored with ``address``).
      address: an existing Ray cluster (default None: a local instance for this call, shut down after).
      parent_run_id: the sweep's MLflow parent run (default None: cells are not tracked).
      log: one-line progress messages: cells done, running, failed, ETA (default ``print``).
      verbose: Ray's own log lines and the cells' output on this terminal (default False).
      cpus_per_cell: CPUs a cell asks for and its TensorFlow thread-pool size (default 1).
      max_retries: Ray retries of a cell whose worker died (default 2); a retried cell resumes.
      label: the progress lines' prefix (default "sweep").
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
        status = _Progress(len(cells), log, label)
        log(f"{label}: {len(cells)} cells on Ray ({'cluster ' + address if address else f'{workers} local workers'})")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            running = min(len(pending), workers) if not address else len(pending)
            try:
                status.finished(cell, ray.get(ready[0]), running=running)
            except Exception as err:  # the cell's own error, after Ray's retries
                status.finished(cell, error=getattr(err, "cause", None) or err, running=running)
        if status.failed:
            raise CellsFailed(status.failed, len(cells))
    finally:
        ray.shutdown()
