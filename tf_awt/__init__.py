"""tf_awt: Adversarial Winning Tickets for tf_keras and tensorflow-model-optimization.

The front door (``__all__``; everything else is reached through its sub-package):

* Ticket search: :func:`find_ticket`, :class:`TicketSearch`, :class:`TicketSearchCallback`,
  :class:`SearchConfig`, :class:`Ticket`, :func:`register_method`.
* The Mixed Tangent Kernel: :func:`mixed_tangent_kernel`, :func:`mixed_tangent_kernel_fn`,
  :func:`kernel_distance`.
* Attacks, adversarial training and evaluation: :class:`Attack`, :func:`pgd`,
  :func:`adversarial_fit`, :class:`TrainConfig`, :func:`evaluate`, :class:`EvalConfig`,
  :class:`EvaluationResult`.
* Export: :func:`export_saved_model`.
* Grids and comparisons: :func:`sweep`, :func:`compare`.
* :func:`quiet`: TensorFlow's log lines off for a Python program (what ``tf-awt`` does by default).

The sub-packages, each importing only the ones before it (checked by ``tests/test_structure.py``),
over shared top-level modules (:mod:`tf_awt.data`, :mod:`tf_awt.models`, :mod:`tf_awt.keras3`,
:mod:`tf_awt.checkpoint`, :mod:`tf_awt.paper`, :mod:`tf_awt.errors`):

* :mod:`tf_awt.engine`: the kernel engine (``kernel``: :class:`~tf_awt.engine.kernel.KernelImplementation`;
  ``kernel_sketch``: the matrix-free estimate; ``distances``; ``layer_rules``: what can be pruned
  and how the kernel sees each layer).
* :mod:`tf_awt.adversarial`: attacks, the standard AutoAttack's suites and their registry
  (``attack_suites``), training schedules (``training_schedule``), collapse detection, evaluation.
* :mod:`tf_awt.tickets`: the search, the method registry (``methods``) and what each method tunes
  (``search_space``), one-shot and iterative baselines, ``pruning_schedule`` (``AWTSchedule``),
  ``export`` (TFLite, Keras 3).
* :mod:`tf_awt.running`: recipes, runs, sweeps, comparisons, MLflow tracking, the ``tf-awt`` CLI.

Names are imported on first use (PEP 562), so ``import tf_awt`` and the ``tf-awt`` command start
without importing TensorFlow; the command line sets TensorFlow's logging before it does.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "find_ticket": "tf_awt.tickets.find",
    "TicketSearch": "tf_awt.tickets.search",
    "TicketSearchCallback": "tf_awt.tickets.search_callback",
    "SearchConfig": "tf_awt.tickets.search_config",
    "Ticket": "tf_awt.tickets.ticket",
    "register_method": "tf_awt.tickets.methods",
    "mixed_tangent_kernel": "tf_awt.engine.kernel",
    "mixed_tangent_kernel_fn": "tf_awt.engine.kernel",
    "kernel_distance": "tf_awt.engine.distances",
    "Attack": "tf_awt.adversarial.attacks",
    "pgd": "tf_awt.adversarial.attacks",
    "adversarial_fit": "tf_awt.adversarial.training",
    "TrainConfig": "tf_awt.adversarial.phase_config",
    "evaluate": "tf_awt.adversarial.evaluation",
    "EvalConfig": "tf_awt.adversarial.phase_config",
    "EvaluationResult": "tf_awt.adversarial.evaluation",
    "export_saved_model": "tf_awt.tickets.export",
    "sweep": "tf_awt.running.sweep",
    "compare": "tf_awt.running.compare",
    "quiet": "tf_awt.running.logs",
}
"""Public name -> the module that defines it."""

__all__ = list(_EXPORTS)

_SUBMODULES = ("data", "models", "keras3")
"""Shared modules reachable as attributes (``tf_awt.data.load``) without an import of their own."""


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f"tf_awt.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'tf_awt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
