"""What a finished run says about itself: the collapse diagnosis, the summary and its description.

Plain functions of explicit arguments (the recipe, the data split, the training history, the
evaluation, the ticket): :class:`tf_awt.running.pipeline.Run` composes them; nothing here runs a phase.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np


__all__ = ["collapse_report", "summary", "description", "training_line", "evaluation_line", "attacks_note",
           "evaluate_quietly", "warning_line"]


def collapse_report(recipe, split, history: dict, result) -> List[str]:
    """Why training looks collapsed (empty: it does not), from the history and the evaluation."""
    from tf_awt.adversarial.collapse import collapse_reasons  # tf_keras: not loaded by sweep's and compare's argument checks

    n_eval = result.num_examples
    shares = np.bincount(split.y_test[:n_eval], minlength=split.num_classes) / max(n_eval, 1)
    return collapse_reasons(history, result.natural_accuracy, split.num_classes, n_eval, float(shares.max()),
                            result.zero_gradient_fraction)


def summary(recipe, recipe_name: str, ticket, result, sizes: dict, reasons: List[str], timings: dict, cpu_seconds: dict,
            passes: dict, saved_model: Optional[str], run_id: Optional[str]) -> dict:
    """The run's ``summary.json``: headline numbers, densities, sizes, wall and CPU seconds and passes
    (:mod:`tf_awt.engine.passes`) per phase (seconds per attack suite too), collapse, MLflow ids."""
    from tf_awt.adversarial.collapse import advice

    return {
        "natural_accuracy": result.natural_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "robust_accuracy_attacks": result.attack_label,
        "suites": dict(result.suites),
        "broken_by": dict(result.broken_by),
        "density": ticket.density,
        "layer_density": ticket.layer_density,
        "method": recipe.method,
        "recipe": recipe_name,
        "dataset": recipe.dataset,
        "seed": recipe.seed,
        "phase_seconds": dict(timings),
        "phase_cpu_seconds": {k: round(v, 2) for k, v in cpu_seconds.items()},
        "phase_passes": {k: dict(v) for k, v in passes.items()},
        "evaluation_seconds": dict(result.seconds),
        "model_size": sizes,
        "sanity_warnings": result.warnings,
        "collapsed": bool(reasons),
        "collapse_reason": (f"{'; '.join(reasons)}. {advice(recipe.train)}" if reasons else None),
        "saved_model": os.path.abspath(saved_model) if saved_model else None,
        "mlflow_run_id": run_id,
        "model_uri": None,
        "registered_model": None,
    }


def description(recipe, summary: dict) -> str:
    """The MLflow run description: the recipe's own, then the headline numbers."""
    r = recipe
    line = (f"{r.method} ticket of the {r.model} at density {summary['density']:.4f} on {r.dataset} "
            f"({r.attack.norm} ε = {r.attack.eps:g}): natural accuracy {summary['natural_accuracy']:.4f}, robust "
            f"accuracy {summary['robust_accuracy']:.4f} ({summary['robust_accuracy_attacks']}, {r.eval.split} split)")
    after = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("suites", {}).items())
    if after and len(summary.get("suites", {})) > 1:
        line += f"; robust accuracy after each attack: {after}"
    if summary.get("sanity_warnings"):
        line += ". Evaluation warnings: " + " | ".join(summary["sanity_warnings"])
    if summary["collapsed"]:
        line += f". Training collapsed: {summary['collapse_reason']}"
    return f"{r.description.strip()}\n\n{line}." if r.description.strip() else line + "."


def training_line(epochs: int, seconds: float, history: dict) -> str:
    """``train: 8 epochs (23 s): loss 0.98, ...``: the last epoch's values."""
    last = ", ".join(f"{k} {v[-1]:.4g}" for k, v in history.items() if v)
    return f"train: {epochs} epochs ({seconds:.0f} s){': ' + last if last else ''}"


def evaluate_quietly(*args, **kwargs):
    """:func:`tf_awt.evaluate` for a command line: its sanity checks' findings stay in
    ``result.warnings`` (printed as :func:`warning_line`), not Python warnings with a source line,
    and third-party notes (ART's import warnings) are dropped."""
    import warnings

    from tf_awt.adversarial import evaluation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return evaluation.evaluate(*args, **kwargs)


def warning_line(message: str) -> str:
    """A sanity check's finding as the one line the commands print."""
    return f"warning: evaluate sanity check: {message}"


def evaluation_line(recipe, result, seconds: float) -> str:
    """``evaluate: natural 0.85, robust 0.68 (worst case of PGD-100 ×5, APGD-CE-100, ..., eps 0.1, 1000 examples, 60 s)``."""
    return (f"evaluate: natural {result.natural_accuracy:.4f}, robust {result.robust_accuracy:.4f} "
            f"({result.attack_label}, eps {recipe.attack.eps:g}, {result.num_examples} examples, {seconds:.0f} s)")


def export_line(path: Optional[str], sizes: dict) -> str:
    """The export's log line: where the SavedModel went and the sizes written."""
    extra = "".join(f", {name} {sizes[key]:,} B" for key, name in (("tflite_bytes", "model.tflite"),
                                                                   ("keras3_bytes", "model.keras")) if key in sizes)
    return (f"export: {path or 'no SavedModel (export.saved_model: false)'} (weights gzip: dense "
            f"{sizes['dense_gzip_bytes']:,} B, sparse {sizes['sparse_gzip_bytes']:,} B{extra})")


def search_and_training_passes(summary: dict) -> dict:
    """A run's cost in passes (:mod:`tf_awt.engine.passes`), search and training together:
    ``{"passes": forward + backward passes, "jacobians": ...}``, both None for a run made before
    passes were recorded."""
    phases = [summary.get("phase_passes", {}).get(p) for p in ("search", "train")]
    if not all(phases):
        return {"passes": None, "jacobians": None}
    return {"passes": sum(p["forward"] + p["backward"] for p in phases), "jacobians": sum(p["jacobians"] for p in phases)}


def attacks_note(summaries) -> str:
    """The line under a table that says which attacks its robust accuracies are the worst case of
    (a summary written before the attacks were recorded counts as PGD-only)."""
    labels = sorted({s.get("robust_accuracy_attacks") or "PGD-only (attacks not recorded)" for s in summaries})
    if not labels:
        return ""
    return "Robust accuracy: " + ("; ".join(labels) if len(labels) > 1 else labels[0]) + "."
