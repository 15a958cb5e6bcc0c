"""tf_awt: Adversarial Winning Tickets for tf_keras and tensorflow-model-optimization.

Public API (everything else is private):

* Kernel engine: :func:`mixed_tangent_kernel`, :func:`mixed_tangent_kernel_fn`,
  :class:`KernelImplementation`, :func:`target_distance`, :func:`kernel_distance`; the matrix-free
  estimate :func:`kernel_distance_sketch` and its products :func:`tangent_products_fn`
  (:mod:`tf_awt.engine.kernel_sketch`, ``search.kernel: sketch``).
* Ticket search: :func:`find_ticket`, :class:`TicketSearch`, :class:`TicketSearchCallback`,
  :class:`SearchConfig`, :func:`search_optimizer`, :class:`AWTSchedule`, :class:`Ticket`; the method
  registry (:mod:`tf_awt.tickets.methods`): :func:`register_method`, :func:`get_method`, :func:`method_names`,
  :class:`TicketMethod`, :class:`FindOptions`, ``METHODS`` (the built-in pruning methods), and what each
  method tunes, :class:`SearchSpace`.
* Grids and comparisons (:mod:`tf_awt.running`): :func:`sweep` (methods × densities × seeds) and
  :func:`compare` (every method tuned with the same budget of tries on a validation split, the
  chosen tries once on the test split: ``tf-awt compare``); both run on Ray with ``workers``/``address``.
* Attacks: :class:`Attack`, :func:`pgd`; the suites an evaluation runs, :class:`AttackSuite`,
  :class:`PGDSuite`, the standard AutoAttack's :class:`APGDSuite` (APGD-CE, APGD-T) and
  :class:`SquareSuite`, and their registry :func:`register_attack_suite`, :func:`attack_suite_names`
  (:mod:`tf_awt.adversarial.attack_suites`; ``"autoattack"`` names the standard set).
* Adversarial training and evaluation: :class:`AdversarialTrainer`, :func:`adversarial_fit`,
  :class:`TrainingSchedule` (ε warm-up, :class:`WarmupDecay` learning rate, clipping),
  their settings :class:`TrainConfig` and :class:`EvalConfig` (with :class:`ExportConfig`, a
  recipe's ``train``/``eval``/``export`` sections: :mod:`tf_awt.running.recipes`),
  :class:`CollapseMonitor`, :func:`collapse_reasons`, :class:`TrainingCollapsed`,
  :func:`evaluate`, :class:`EvaluationResult`.
* Export: :func:`export_saved_model` (:class:`ExportResult`): a ticket as a servable SavedModel;
  :func:`export_tflite` / :func:`tflite_predict`: as TFLite with sparse kernels (faster inference);
  :func:`export_keras3`: as a Keras 3 ``.keras`` file.
* Runs that resume and scale out: ``find_ticket(..., checkpoint_dir=)`` and
  ``adversarial_fit(..., checkpoint_dir=)``; :class:`PhaseCheckpoint`, :func:`epoch_batches` (per-epoch
  checkpoints, stateless epoch order), :func:`strategy_for` (a recipe's ``distribute`` value as a
  ``tf.distribute`` strategy); ART's AutoAttack, the cross-check, in :mod:`tf_awt.adversarial.autoattack`.
* What can be pruned and how the kernel sees each layer: :class:`LayerRule`,
  :func:`register_layer_rule`, :func:`layer_rule` (:mod:`tf_awt.engine.layer_rules`).
* Keras 3 models at the edges: :mod:`tf_awt.keras3` (``to_tf_keras``, ``to_keras3``); every entry
  point above accepts a Keras 3 model of convertible layers.
* Data: :mod:`tf_awt.data`.
* :func:`quiet`: TensorFlow's log lines off for a Python program (what ``tf-awt`` does by default).
* Architectures of the paper: :mod:`tf_awt.models`.

Names are imported on first use (PEP 562), so ``import tf_awt`` and the ``tf-awt`` command start
without importing TensorFlow; the command line sets TensorFlow's logging before it does.

Layout: four layers, each a sub-package that imports only the ones below it (checked by
``tests/test_structure.py``): :mod:`tf_awt.engine` (the kernel engine), :mod:`tf_awt.adversarial`
(attacks, adversarial training, evaluation), :mod:`tf_awt.tickets` (ticket search, methods, the
ticket and its export) and :mod:`tf_awt.running` (recipes, runs, sweeps, tracking, the CLI), over
shared top-level modules (data, models, keras3, checkpoint, paper, errors and the private
``_options``/``_validate``/``_distribute``/``_files``). The module paths of earlier versions still
import (:mod:`tf_awt._moved`).
"""
import importlib

from tf_awt import _moved

__version__ = "0.1.0"

_EXPORTS = {
    "AWTSchedule": "tf_awt.tickets.pruning_schedule",
    "AdversarialTrainer": "tf_awt.adversarial.training",
    "EvaluationResult": "tf_awt.adversarial.evaluation",
    "adversarial_fit": "tf_awt.adversarial.training",
    "evaluate": "tf_awt.adversarial.evaluation",
    "evaluation_attack": "tf_awt.adversarial.evaluation",
    "training_attack": "tf_awt.adversarial.training",
    "Attack": "tf_awt.adversarial.attacks",
    "pgd": "tf_awt.adversarial.attacks",
    "AttackSuite": "tf_awt.adversarial.attack_suites",
    "PGDSuite": "tf_awt.adversarial.attack_suites",
    "APGDSuite": "tf_awt.adversarial.attack_suites",
    "SquareSuite": "tf_awt.adversarial.attack_suites",
    "register_attack_suite": "tf_awt.adversarial.attack_suites",
    "attack_suite_names": "tf_awt.adversarial.attack_suites",
    "search_optimizer": "tf_awt.tickets.search",
    "PhaseCheckpoint": "tf_awt.checkpoint",
    "epoch_batches": "tf_awt.checkpoint",
    "strategy_for": "tf_awt._distribute",
    "KernelImplementation": "tf_awt.engine.kernel",
    "mixed_tangent_kernel": "tf_awt.engine.kernel",
    "mixed_tangent_kernel_fn": "tf_awt.engine.kernel",
    "kernel_distance": "tf_awt.engine.distances",
    "kernel_distance_sketch": "tf_awt.engine.kernel_sketch",
    "tangent_products_fn": "tf_awt.engine.kernel_sketch",
    "target_distance": "tf_awt.engine.distances",
    "METHODS": "tf_awt.tickets.methods",
    "TicketMethod": "tf_awt.tickets.methods",
    "FindOptions": "tf_awt.tickets.methods",
    "register_method": "tf_awt.tickets.methods",
    "get_method": "tf_awt.tickets.methods",
    "method_names": "tf_awt.tickets.methods",
    "SearchSpace": "tf_awt.tickets.search_space",
    "compare": "tf_awt.running.compare",
    "sweep": "tf_awt.running.sweep",
    "SearchConfig": "tf_awt.tickets.search_config",
    "TicketSearch": "tf_awt.tickets.search",
    "TicketSearchCallback": "tf_awt.tickets.search",
    "find_ticket": "tf_awt.tickets.search",
    "Ticket": "tf_awt.tickets.ticket",
    "TrainConfig": "tf_awt.adversarial.phase_config",
    "EvalConfig": "tf_awt.adversarial.phase_config",
    "ExportConfig": "tf_awt.adversarial.phase_config",
    "TrainingSchedule": "tf_awt.adversarial.training_schedule",
    "WarmupDecay": "tf_awt.adversarial.training_schedule",
    "CollapseMonitor": "tf_awt.adversarial.collapse",
    "collapse_reasons": "tf_awt.adversarial.collapse",
    "TrainingCollapsed": "tf_awt.errors",
    "LayerRule": "tf_awt.engine.layer_rules",
    "register_layer_rule": "tf_awt.engine.layer_rules",
    "layer_rule": "tf_awt.engine.layer_rules",
    "export_saved_model": "tf_awt.tickets.export",
    "export_tflite": "tf_awt.tickets.export",
    "export_keras3": "tf_awt.tickets.export",
    "tflite_predict": "tf_awt.tickets.export",
    "ExportResult": "tf_awt.tickets.export",
    "quiet": "tf_awt.running.logs",
}
_SUBMODULES = ("data", "models", "keras3")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


_moved.install()  # the module paths of earlier versions (``tf_awt.search`` is ``tf_awt.tickets.search``)


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f"tf_awt.{name}")
    elif f"tf_awt.{name}" in _moved.MOVED:
        value = importlib.import_module(_moved.MOVED[f"tf_awt.{name}"])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'tf_awt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
