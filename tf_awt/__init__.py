"""tf_awt: Adversarial Winning Tickets for tf_keras and tensorflow-model-optimization.

Public API (everything else is private):

* Kernel engine: :func:`mixed_tangent_kernel`, :func:`mixed_tangent_kernel_fn`,
  :class:`KernelImplementation`, :func:`target_distance`, :func:`kernel_distance`.
* Ticket search: :func:`find_ticket`, :class:`TicketSearch`, :class:`TicketSearchCallback`,
  :class:`SearchConfig`, :class:`AWTSchedule`, :class:`Ticket`, ``METHODS``.
* Attacks: :class:`Attack`, :func:`pgd`.
* Adversarial training and evaluation: :class:`AdversarialTrainer`, :func:`adversarial_fit`,
  :func:`evaluate`, :class:`EvaluationResult`.
* Runs that resume and scale out: :class:`PhaseCheckpoint`, :func:`epoch_batches` (per-epoch
  checkpoints, stateless epoch order), :func:`strategy_for` (a recipe's ``distribute`` value as a
  ``tf.distribute`` strategy); the optional AutoAttack suite in :mod:`tf_awt.autoattack`.
* Data: :mod:`tf_awt.data`.
* Architectures of the paper: :mod:`tf_awt.models`.
"""
from tf_awt import data, models
from tf_awt.evaluation import EvaluationResult, evaluate, evaluation_attack
from tf_awt.training import AdversarialTrainer, adversarial_fit, training_attack
from tf_awt.attacks import Attack, pgd
from tf_awt.checkpoint import PhaseCheckpoint, epoch_batches
from tf_awt._distribute import strategy_for
from tf_awt.distances import kernel_distance, target_distance
from tf_awt.kernel import KernelImplementation, mixed_tangent_kernel, mixed_tangent_kernel_fn
from tf_awt.schedule import AWTSchedule
from tf_awt.search import METHODS, SearchConfig, TicketSearch, TicketSearchCallback, find_ticket
from tf_awt.ticket import Ticket

__version__ = "0.1.0"

__all__ = [
    "AWTSchedule",
    "AdversarialTrainer",
    "EvaluationResult",
    "adversarial_fit",
    "data",
    "evaluate",
    "evaluation_attack",
    "training_attack",
    "Attack",
    "PhaseCheckpoint",
    "epoch_batches",
    "strategy_for",
    "KernelImplementation",
    "METHODS",
    "SearchConfig",
    "Ticket",
    "TicketSearch",
    "TicketSearchCallback",
    "find_ticket",
    "kernel_distance",
    "mixed_tangent_kernel",
    "mixed_tangent_kernel_fn",
    "models",
    "pgd",
    "target_distance",
]
