r"""Collapse detection: adversarial training that ended at the uniform prediction says so.

The failure modes seen in docs/results.md, each checked here:

* the adversarial training loss stays within ``margin``·ln k of ln k (the loss of the uniform
  prediction over k classes) for ``patience`` epochs: :class:`CollapseMonitor`, during training;
* the natural accuracy of the trained model is at chance (at most the largest class's share of
  the evaluation data plus two binomial standard errors, and at least 0.05);
* most inputs have an all-zero input gradient (a dead network: every ReLU path off).

:func:`collapse_reasons` combines the training history and the evaluation into a list of
symptoms (empty: healthy); :func:`advice` says the first thing to try. ``tf-awt run`` writes both
into summary.json (``collapsed``, ``collapse_reason``) and MLflow (tag ``collapsed``) and, with
``train.fail_on_collapse: true``, raises :class:`TrainingCollapsed` (``tf-awt run`` exits with code 3).
"""
from __future__ import annotations

import math
from typing import Callable, List, Mapping, Optional, Sequence

import tf_keras

__all__ = ["CollapseMonitor", "collapse_reasons", "advice", "TrainingCollapsed"]

from tf_awt.errors import TrainingCollapsed  # noqa: F401  (re-exported)
from tf_awt import _validate


def _stuck(losses: Sequence[float], num_classes: int, margin: float) -> List[bool]:
    level = math.log(num_classes)
    return [abs(float(v) - level) <= margin * level for v in losses]


class CollapseMonitor(tf_keras.callbacks.Callback):
    """Warns when the adversarial training loss sits at ln k (the uniform prediction).

    Args:
      num_classes: k, the number of classes (>= 2).
      patience: epochs in a row within the margin before it warns (default 3).
      margin: relative distance to ln k that counts as "at ln k" (default 0.02).
      log: callable receiving the warning line (default: ``warnings.warn``).

    Attributes:
      stuck_epochs: the current run of epochs at ln k (reset in ``on_train_begin``).
      warned: whether the warning was given in this ``fit``.
    """

    def __init__(self, num_classes: int, patience: int = 3, margin: float = 0.02, log: Optional[Callable[[str], None]] = None):
        super().__init__()

        self.num_classes = _validate.integer(num_classes, "num_classes", low=2)
        self.patience = _validate.integer(patience, "patience", low=1)
        self.margin = _validate.real(margin, "margin", low=0, low_open=True)
        self.log = log
        self.stuck_epochs = 0
        self.warned = False
        self._resumed_stuck = 0

    def resume_from(self, epoch_logs: Sequence[Mapping[str, float]]):
        """Continues the count over epochs logged before a resume (``adversarial_fit`` calls it)."""
        count = 0
        for stuck in reversed(_stuck([e.get("loss", 0.0) for e in epoch_logs], self.num_classes, self.margin)):
            if not stuck:
                break
            count += 1
        self._resumed_stuck = count

    def on_train_begin(self, logs=None):
        self.stuck_epochs, self._resumed_stuck = self._resumed_stuck, 0
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        self.stuck_epochs = self.stuck_epochs + 1 if _stuck([loss], self.num_classes, self.margin)[0] else 0
        if self.stuck_epochs >= self.patience and not self.warned:
            self.warned = True
            message = (f"warning: adversarial training looks collapsed: the loss has been {loss:.4f} ≈ ln {self.num_classes} = "
                       f"{math.log(self.num_classes):.4f} (the uniform prediction) for {self.stuck_epochs} epochs. "
                       f"{advice(None)}")
            if self.log is not None:
                self.log(message)
            else:
                import warnings

                warnings.warn(message, stacklevel=2)


def collapse_reasons(history: Mapping[str, Sequence[float]], natural_accuracy: Optional[float], num_classes: int,
                     num_examples: int = 0, largest_class_share: Optional[float] = None,
                     zero_gradient_fraction: Optional[float] = None, patience: int = 3, margin: float = 0.02) -> List[str]:
    """The collapse symptoms found (empty list: none).

    Args:
      history: per-epoch training logs (``loss``: the adversarial loss).
      natural_accuracy: of the trained model on the evaluation data (None: not checked).
      num_classes: k.
      num_examples: size of the evaluation data (for the binomial margin).
      largest_class_share: the largest class's share of the evaluation data (default 1/k).
      zero_gradient_fraction: fraction of evaluation inputs with an all-zero input gradient.
    """
    reasons = []
    losses = list(history.get("loss", []))
    if len(losses) >= patience and all(_stuck(losses[-patience:], num_classes, margin)):
        reasons.append(f"the adversarial training loss ended at {losses[-1]:.4f} ≈ ln {num_classes} = {math.log(num_classes):.4f} "
                       f"(the uniform prediction) for its last {patience} epochs")
    if natural_accuracy is not None:
        chance = largest_class_share if largest_class_share is not None else 1.0 / num_classes
        noise = 2 * math.sqrt(chance * (1 - chance) / num_examples) if num_examples else 0.0
        if natural_accuracy <= chance + max(noise, 0.05):
            reasons.append(f"natural accuracy {natural_accuracy:.4f} is at chance ({chance:.3f})")
    if zero_gradient_fraction is not None and zero_gradient_fraction >= 0.5:
        reasons.append(f"{zero_gradient_fraction:.0%} of the test inputs have an all-zero input gradient (a dead network)")
    return reasons


def advice(recipe_train) -> str:
    """The first thing to try, given the recipe's ``train`` section (None: generic)."""
    warmup = getattr(recipe_train, "eps_warmup_epochs", 0) if recipe_train is not None else 0
    rescale = getattr(recipe_train, "rescale", "none") if recipe_train is not None else "none"
    if not warmup:
        return "First try an epsilon warm-up: train.eps_warmup_epochs=10 (epsilon ramped up from 0 over 10 epochs)."
    if rescale == "none":
        return ("First try train.rescale=fan_in (kept weights rescaled to the dense layer's output variance) or a "
                "longer train.eps_warmup_epochs.")
    return "First try a lower train.learning_rate or a longer train.eps_warmup_epochs."
