"""A grid of runs: methods × densities × seeds, resumable, with a table and plots.

Each cell is a full run (:class:`tf_awt.running.pipeline.Run`) in ``DIR/cells/<method>-d<density>-s<seed>``.
A cell whose ``summary.json`` exists is finished and is not run again, so re-running the same
sweep after an interruption only runs the missing cells. With MLflow, the sweep is one parent run
(its id kept in ``DIR/sweep.json`` so a resumed sweep continues it) and each cell a child run.

Outputs: ``sweep.csv`` (one row per cell), ``sweep.md`` (mean ± std over seeds),
``accuracy_vs_density.png`` (natural and robust accuracy per method, error bars = std over
seeds) and ``search_distances.png`` (kernel/target distance curves of the searched tickets per
density).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from tf_awt import _validate
from tf_awt._files import atomic_write_json
from tf_awt.running.cells import Cell, check_parallel, run_cells, unfinished
from tf_awt.running.grid import cell_name, mean_std, pyplot, read_summary, write_csv, write_markdown
from tf_awt.running.plots import save
from tf_awt.running.recipes import Recipe
from tf_awt.running.report import attacks_note, search_and_training_passes
from tf_awt.running.run_inputs import check_inputs
from tf_awt.running.tracking import NullTracker, Tracker
from tf_awt.tickets.methods import get_method, method_names
from tf_awt.tickets.ticket import Ticket

__all__ = ["sweep"]

FIELDS = ("method", "density", "seed", "natural_accuracy", "robust_accuracy", "achieved_density", "seconds", "search_seconds",
          "train_seconds", "evaluate_seconds", "cpu_seconds", "passes", "jacobians", "cell", "collapsed", "robust_accuracy_attacks")
"""sweep.csv's columns: ``seconds`` is the cell's wall time, ``*_seconds`` each phase's, ``cpu_seconds``
the CPU time of every phase, ``passes`` and ``jacobians`` the search's and training's forward +
backward passes and exact-kernel Jacobians (:mod:`tf_awt.engine.passes`; each empty for a cell run
before it was recorded)."""


def _cells(methods: Sequence[str], densities: Sequence[float], seeds: int):
    for method in methods:
        for density in (densities if get_method(method).prunes else [1.0]):
            for seed in range(seeds):
                yield method, float(density), seed


def sweep(recipe: Recipe, out: str, methods: Sequence[str], densities: Sequence[float], seeds: int = 1,
          recipe_name: str = "", data_dir: Optional[str] = None, progress=None, track: bool = True,
          log: Callable[[str], None] = print, force: bool = False, workers: int = 1, address: Optional[str] = None,
          verbose: bool = False) -> List[dict]:
    """Runs (or resumes) the grid; returns one row per cell.

    Args:
      recipe, out, methods, densities, seeds: the grid (``out/cells/<cell>`` per cell).
      recipe_name, data_dir, progress, log: as :class:`tf_awt.running.pipeline.Run`'s.
      track: record the sweep in MLflow, one parent run and a child run per cell (default True).
      force: rerun finished cells too (default False).
      workers: cells run at once (default 1: one after another in this process); more runs them
        as Ray tasks on a local Ray instance started for the call (:mod:`tf_awt.running.cells`).
      address: an existing Ray cluster to run the cells on (default None; ``RAY_ADDRESS`` too).
      verbose: show Ray's own log lines and the cells' output (default False).
    """

    bad = [m for m in methods if m not in method_names()]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty list from {method_names()}. You passed: {list(methods)}")

    if not densities or any(not (_validate.is_real(d) and 0 < d <= 1) for d in densities):
        raise ValueError(f"densities must be numbers in (0, 1]. You passed: {list(densities)}")
    densities = [float(d) for d in densities]
    seeds = _validate.integer(seeds, "seeds", low=1)
    workers = check_parallel(workers, address)
    check_inputs(recipe, data_dir)
    os.makedirs(os.path.join(out, "cells"), exist_ok=True)
    state_path = os.path.join(out, "sweep.json")
    state = {}
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as fh:
            state = json.load(fh)
    parent = Tracker() if track else NullTracker()
    state["parent_run_id"] = parent.start_parent(
        f"sweep-{recipe_name or 'recipe'}", {"sweep.methods": ",".join(methods), "sweep.densities": ",".join(map(str, densities)),
                                             "sweep.seeds": seeds}, run_id=state.get("parent_run_id"))
    state.update({"recipe": recipe.to_dict(), "methods": list(methods), "densities": list(densities), "seeds": seeds})
    atomic_write_json(state_path, state)
    rows, grid = [], list(_cells(methods, densities, seeds))
    try:
        cells = [Cell(cell_name(m, d, s), dataclasses.replace(recipe, method=m, density=d, seed=s),
                      os.path.join(out, "cells", cell_name(m, d, s)), recipe_name, data_dir, force) for m, d, s in grid]
        run_cells(unfinished(cells, log, "sweep"), workers, address, parent.run_id, track, log=log, verbose=verbose,
                  progress=progress)
        for method, density, seed in grid:
            name = cell_name(method, density, seed)
            s = read_summary(os.path.join(out, "cells", name))
            rows.append({"method": method, "density": density, "seed": seed, "natural_accuracy": s["natural_accuracy"],
                         "robust_accuracy": s["robust_accuracy"], "achieved_density": s["density"],
                         "seconds": round(sum(s["phase_seconds"].values()), 1), **phase_costs(s), "cell": name,
                         "collapsed": bool(s.get("collapsed", False)),
                         "robust_accuracy_attacks": s.get("robust_accuracy_attacks") or "PGD-only (attacks not recorded)"})
        _write_outputs(out, rows)
        for name in ("sweep.csv", "sweep.md", "accuracy_vs_density.png", "search_distances.png"):
            if os.path.exists(os.path.join(out, name)):
                parent.log_artifact(os.path.join(out, name))
        return rows
    finally:
        parent.end_all()


def phase_costs(summary: dict) -> dict:
    """A run's cost columns: wall seconds of search, training and evaluation, its CPU seconds, and
    the passes of search and training."""
    wall, cpu = summary.get("phase_seconds", {}), summary.get("phase_cpu_seconds")
    return {**{f"{phase}_seconds": round(wall.get(phase, 0.0), 1) for phase in ("search", "train", "evaluate")},
            "cpu_seconds": round(sum(cpu.values()), 1) if cpu else None, **search_and_training_passes(summary)}


def summarize(rows: List[dict]) -> List[dict]:
    """Mean and std over seeds per (method, density)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["density"]), []).append(r)
    out = []
    for (method, density), items in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        (nat_mean, nat_std), (rob_mean, rob_std) = mean_std(items, "natural_accuracy"), mean_std(items, "robust_accuracy")
        out.append({"method": method, "density": density, "seeds": len(items), "natural_mean": nat_mean,
                    "natural_std": nat_std, "robust_mean": rob_mean, "robust_std": rob_std,
                    "collapsed": sum(bool(i.get("collapsed")) for i in items),
                    "cost_mean": sum(i.get("search_seconds", 0) + i.get("train_seconds", 0) for i in items) / len(items),
                    "passes_mean": _mean_or_none([i.get("passes") for i in items])})
    return out


def _mean_or_none(values) -> Optional[float]:
    """The mean, or None when a value is missing (a cell run before it was recorded)."""
    return None if any(v is None or v == "" for v in values) else float(sum(float(v) for v in values) / len(values))


def _passes(value: Optional[float]) -> str:
    """``1.23e+07``, or ``—`` when not recorded."""
    return "—" if value is None else f"{value:.3g}"


def _write_outputs(out: str, rows: List[dict]) -> None:
    write_csv(os.path.join(out, "sweep.csv"), FIELDS, rows)
    lines = ["| method | density | seeds | natural accuracy | robust accuracy | search + training (s, mean) | "
             "search + training (passes, mean) | collapsed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summarize(rows):
        lines.append(f"| {s['method']} | {s['density']:g} | {s['seeds']} | {s['natural_mean']:.4f} ± {s['natural_std']:.4f} "
                     f"| {s['robust_mean']:.4f} ± {s['robust_std']:.4f} | {s['cost_mean']:.0f} | {_passes(s['passes_mean'])} "
                     f"| {s['collapsed']} of {s['seeds']} |")
    lines += ["", attacks_note(rows)]
    write_markdown(os.path.join(out, "sweep.md"), lines)
    _plots(out, rows)


def _plots(out: str, rows: List[dict]) -> None:
    plt = pyplot()
    stats = summarize(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, key in zip(axes, ("natural", "robust")):
        for method in sorted({s["method"] for s in stats}):
            pts = sorted((s for s in stats if s["method"] == method), key=lambda s: s["density"])
            d = [p["density"] for p in pts]
            ax.errorbar(d, [p[f"{key}_mean"] for p in pts], yerr=[p[f"{key}_std"] for p in pts], marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("density")
        ax.set_title(f"{key} accuracy")
    axes[0].legend(fontsize=7)
    save(fig, os.path.join(out, "accuracy_vs_density.png"))
    plt.close(fig)

    searched = [r for r in rows if get_method(r["method"]).trains and r["seed"] == 0]
    if searched:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for r in sorted(searched, key=lambda r: r["density"]):
            hist = Ticket.load(os.path.join(out, "cells", r["cell"], "ticket.npz")).history
            for ax, key in zip(axes, ("kernel_distance", "target_distance")):
                ax.plot(hist["step"], hist[key], label=f"{r['method']} d={r['density']:g}")
        for ax, key in zip(axes, ("kernel distance", "target distance")):
            ax.set_yscale("log")
            ax.set_xlabel("search step")
            ax.set_title(key)
        axes[0].legend(fontsize=7)
        save(fig, os.path.join(out, "search_distances.png"))
        plt.close(fig)
