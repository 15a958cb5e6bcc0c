"""``tf-awt graft RUN_DIR``: the paper's Figure 9 for one run (:mod:`tf_awt.adversarial.grafting`).

A run made with ``train.dense_reference: true`` keeps the ticket's and the dense network's weights
after every training epoch (``epochs/ticket-eN.npz``, ``epochs/dense-eN.npz``: same θ0, data order
and attack seeds). The dense reference depends on no method or density: runs of one seed may share
it (``tf-awt run --dense-from RUN_DIR`` copies RUN_DIR's, checked by :func:`check_dense_source`,
instead of training it again). :func:`graft` grafts them at every epoch and layer boundary, both directions,
on the first ``examples`` examples of the run's evaluation split, and writes

* ``graft.csv``: one row per (epoch, direction, boundary) with the natural and adversarial error
  increase over the better of the two networks (adversarial: PGD with the run's training attack
  against each grafted network);
* ``graft.json``: the same, the originals' errors, and the summary: the mean increase, and the mean
  error above the *worse* of the two networks (the part of a graft's error that the ticket's own
  error does not explain: a ticket that trains badly has a large increase over the dense network
  at every graft, see :mod:`tf_awt.adversarial.grafting`);
* ``graft.png``: the heat map (epochs × boundaries, for each direction and kind).

:func:`log_graft` puts the same on the run's MLflow run (``tf-awt graft`` does, unless ``--no-mlflow``).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Callable, Dict, List

import numpy as np

__all__ = ["graft", "log_graft", "check_dense_source", "OUTPUTS"]

OUTPUTS = ("graft.csv", "graft.json", "graft.png")

_NOT_DENSE = ("description", "method", "density", "search", "eval", "export")
"""Recipe keys the dense reference does not depend on (it trains θ0 unpruned, before any evaluation)."""


def check_dense_source(recipe, source: str) -> List[str]:
    """The dense reference's weight files (``epochs/dense-eN.npz``, N = 1 … ``train.epochs``) that run
    directory ``source`` holds for a run of ``recipe`` to reuse (``tf-awt run --dense-from``); a ValueError
    unless ``recipe`` asks for one (``train.dense_reference``) and ``source``'s was trained with the same
    data, model, init, seed, attack and train settings (what the dense training depends on: every
    recipe key but the method, density, search, evaluation and export). Reads files only (no TensorFlow)."""
    from tf_awt.running.recipes import load_recipe

    if not recipe.train.dense_reference:
        raise ValueError("--dense-from reuses another run's dense reference: it needs train.dense_reference: true. "
                         "You passed: train.dense_reference: false")
    if not os.path.isfile(os.path.join(source, "recipe.yaml")):
        raise ValueError(f"--dense-from takes a run directory (with recipe.yaml). You passed: {source!r}")
    mine, theirs = recipe.flat(), load_recipe(os.path.join(source, "recipe.yaml")).flat()
    differ = sorted(k for k in set(mine) | set(theirs) if k.split(".")[0] not in _NOT_DENSE and mine.get(k) != theirs.get(k))
    if differ:
        raise ValueError(f"--dense-from {source}: its dense reference was trained with other settings: "
                         + ", ".join(f"{k} {theirs.get(k)!r} (this run: {mine.get(k)!r})" for k in differ)
                         + ". Allowed: a run with the same data, model, init, seed, attack and train settings")
    files = [os.path.join(source, "epochs", f"dense-e{e}.npz") for e in range(1, recipe.train.epochs + 1)]
    missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"--dense-from {source}: it holds no {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''} "
                         f"(its dense reference has not finished its {recipe.train.epochs} epochs)")
    return files


def _epochs(run_dir: str) -> List[int]:
    """The epochs both networks' weights were kept for."""
    folder = os.path.join(run_dir, "epochs")
    found: Dict[str, set] = {"ticket": set(), "dense": set()}
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        match = re.fullmatch(r"(ticket|dense)-e(\d+)\.npz", name)
        if match:
            found[match.group(1)].add(int(match.group(2)))
    epochs = sorted(found["ticket"] & found["dense"])
    if not epochs:
        raise ValueError(f"{run_dir} holds no per-epoch weights of a ticket and its dense reference (epochs/ticket-eN.npz, "
                         "epochs/dense-eN.npz): make the run with --set train.dense_reference=true")
    return epochs


def _network(base, path: str):
    import tf_keras

    with np.load(path) as arrays:
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    model = tf_keras.models.clone_model(base)
    model.set_weights(weights)
    return model


def graft(run_dir: str, examples: int = 500, log: Callable[[str], None] = print) -> dict:
    """Grafts a run's ticket and dense reference at every kept epoch (module docstring); returns graft.json's content.

    (Reached as ``tf_awt.running.grafts.graft``: the front door, ``tf_awt.__all__``, stays at 20 names.)

    Args:
      run_dir: a run directory made with ``train.dense_reference: true``.
      examples: the first this many examples of the run's evaluation split (default 500), >= 1.
      log: one line per epoch (default ``print``).
    """
    from tf_awt import _validate
    from tf_awt._files import atomic_write_bytes
    from tf_awt.adversarial.grafting import graft_errors
    from tf_awt.running.recipes import load_recipe
    from tf_awt.running.run_inputs import RunInputs

    examples = _validate.integer(examples, "examples", low=1)
    if not os.path.isfile(os.path.join(run_dir, "recipe.yaml")):
        raise ValueError(f"{run_dir} is not a run directory (no recipe.yaml)")
    epochs = _epochs(run_dir)
    recipe = load_recipe(os.path.join(run_dir, "recipe.yaml"))
    inputs = RunInputs(recipe)
    split = inputs.split
    x, y = split.x_test[:examples], split.y_test[:examples]
    attack, base = inputs.in_range(recipe.train_attack()), inputs.base_model()
    rows, originals, above_worse = [], {}, []
    for epoch in epochs:
        result = graft_errors(_network(base, os.path.join(run_dir, "epochs", f"ticket-e{epoch}.npz")),
                              _network(base, os.path.join(run_dir, "epochs", f"dense-e{epoch}.npz")), (x, y), attack, recipe.seed)
        originals[epoch] = {"ticket": result.originals["a"], "dense": result.originals["b"]}
        above_worse.append([result.mean_above_worse(kind) for kind in ("natural", "adversarial")])
        for direction, label in (("a_to_b", "ticket_to_dense"), ("b_to_a", "dense_to_ticket")):
            for i, boundary in enumerate(result.boundaries):
                rows.append({"epoch": epoch, "direction": label, "boundary": boundary,
                             "natural_increase": result.increase[direction]["natural"][i],
                             "adversarial_increase": result.increase[direction]["adversarial"][i]})
        log(f"graft: epoch {epoch}: mean increase natural {result.mean_increase('natural'):+.4f}, "
            f"adversarial {result.mean_increase('adversarial'):+.4f}")
    summary = {"examples": int(len(y)), "attack": attack.get_config(), "epochs": epochs, "originals": originals, "rows": rows,
               "mean_natural_increase": float(np.mean([r["natural_increase"] for r in rows])),
               "mean_adversarial_increase": float(np.mean([r["adversarial_increase"] for r in rows])),
               "mean_natural_above_worse": float(np.mean([a[0] for a in above_worse])),
               "mean_adversarial_above_worse": float(np.mean([a[1] for a in above_worse]))}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(os.path.join(run_dir, "graft.csv"), buffer.getvalue().encode())
    _heat_map(rows, epochs, os.path.join(run_dir, "graft.png"))
    atomic_write_bytes(os.path.join(run_dir, "graft.json"), json.dumps(summary, indent=2).encode())
    return summary


def log_graft(tracker, run_dir: str, summary: dict) -> None:
    """Logs a graft to the run's MLflow run (``tracker`` started on it): the mean increases
    (``graft_mean_natural_increase``, ``graft_mean_adversarial_increase``) and the errors above the
    worse network (``graft_mean_natural_above_worse``, ``graft_mean_adversarial_above_worse``), each epoch's mean at its
    epoch as step (``graft_natural_increase``, ``graft_adversarial_increase``) and the three files."""
    tracker.log_metrics({"graft_mean_natural_increase": summary["mean_natural_increase"],
                         "graft_mean_adversarial_increase": summary["mean_adversarial_increase"],
                         "graft_mean_natural_above_worse": summary["mean_natural_above_worse"],
                         "graft_mean_adversarial_above_worse": summary["mean_adversarial_above_worse"]})
    for epoch in summary["epochs"]:
        rows = [r for r in summary["rows"] if r["epoch"] == epoch]
        tracker.log_metrics({f"graft_{kind}_increase": float(np.mean([r[f"{kind}_increase"] for r in rows]))
                             for kind in ("natural", "adversarial")}, step=epoch)
    for name in OUTPUTS:
        tracker.log_artifact(os.path.join(run_dir, name))


def _heat_map(rows: List[dict], epochs: List[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from tf_awt.running.plots import save

    boundaries = list(dict.fromkeys(r["boundary"] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(2.2 + 1.3 * len(boundaries) * 2, 1.8 + 0.25 * len(epochs) * 2), squeeze=False)
    for i, direction in enumerate(("ticket_to_dense", "dense_to_ticket")):
        for j, kind in enumerate(("natural_increase", "adversarial_increase")):
            grid = np.array([[next(r[kind] for r in rows if r["epoch"] == e and r["direction"] == direction and r["boundary"] == b)
                              for b in boundaries] for e in epochs])
            ax = axes[i][j]
            image = ax.imshow(grid, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(boundaries)))
            ax.set_xticklabels([f"after {b}" for b in boundaries], fontsize=7)
            ax.set_yticks(range(len(epochs)))
            ax.set_yticklabels(epochs, fontsize=7)
            ax.set_ylabel("epoch")
            ax.set_title(f"{direction.replace('_', ' ')}: {kind.replace('_', ' ')}", fontsize=8)
            fig.colorbar(image, ax=ax)
    save(fig, path)
    plt.close(fig)
