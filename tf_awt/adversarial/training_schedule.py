r"""What makes PGD training start: an ε warm-up, a learning-rate schedule, gradient clipping.

Adversarial training from a random init at a large ε (MNIST ε = 0.3), or of a very sparse ticket,
can sit at the uniform prediction forever: the PGD examples are already maximally confusing
before the network has learnt anything, the loss stays at ln k and the gradients vanish. The
usual remedies, all functions of the optimizer's step t (so a run resumed from a checkpoint of
the optimizer continues them exactly; nothing else needs saving):

* **ε warm-up** over W steps: ε(t) = ε · min(1, (t + 1) / W) and the PGD step size scaled alike
  (W = 0: no warm-up);
* **learning rate** η(t) (:class:`WarmupDecay`, a Keras ``LearningRateSchedule``): a linear
  warm-up from η/W_η to η over W_η steps, then ``constant``, ``cosine`` decay to
  ``final_fraction``·η at step T, or ``step`` decay (× 0.1 at 50% and at 75% of T);
* **gradient clipping**: the gradient rescaled to global norm at most ``clip_norm``.

Users give the three in epochs, in one place: :class:`~tf_awt.TrainConfig` (``adversarial_fit(config=)``,
a recipe's ``train:``). :class:`TrainingSchedule` is their form in optimizer steps
(``TrainConfig.schedule(steps_per_epoch)``; frozen, validated, ``from_config(get_config())``
round-trips), what :class:`~tf_awt.adversarial.training.AdversarialTrainer` runs.

TensorFlow is imported inside the functions that compute on tensors, so a recipe's schedule is
checked without it.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from tf_awt import _validate

__all__ = ["TrainingSchedule", "WarmupDecay", "LR_SCHEDULES"]

from tf_awt._options import LR_SCHEDULES  # noqa: E402  (the allowed names live in one place)


@dataclasses.dataclass(frozen=True)
class TrainingSchedule:
    """The ε warm-up and gradient clipping of adversarial training, and its learning-rate schedule.

    Attributes:
      eps_warmup_steps: W: ε and the PGD step size ramp linearly from ε/W to ε over the first W
        optimizer steps (default 0: full ε from the first step).
      lr_schedule: "constant" (default), "cosine" or "step" (see :class:`WarmupDecay`).
      lr_warmup_steps: linear learning-rate warm-up steps (default 0).
      total_steps: the training length in steps, for cosine/step decay (default None: required
        only by those).
      clip_norm: clip the gradient to this global norm (default None: no clipping). Under a
        ``tf.distribute`` strategy each replica clips its own gradient before the all-reduce.
    """

    eps_warmup_steps: int = 0
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    total_steps: Optional[int] = None
    clip_norm: Optional[float] = None

    def __post_init__(self):
        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
        set_("eps_warmup_steps", _validate.integer(self.eps_warmup_steps, "eps_warmup_steps", low=0))
        set_("lr_warmup_steps", _validate.integer(self.lr_warmup_steps, "lr_warmup_steps", low=0))
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}. You passed: {self.lr_schedule!r}")
        if self.total_steps is not None:
            set_("total_steps", _validate.integer(self.total_steps, "total_steps", low=1))
        elif self.lr_schedule != "constant":
            raise ValueError(f"lr_schedule {self.lr_schedule!r} needs total_steps (the training length). You passed: None")
        if self.clip_norm is not None:
            set_("clip_norm", _validate.real(self.clip_norm, "clip_norm", low=0, low_open=True))

    @classmethod
    def from_epochs(cls, steps_per_epoch: int, epochs: int, eps_warmup_epochs: float = 0, lr_schedule: str = "constant",
                    lr_warmup_epochs: float = 0, clip_norm: Optional[float] = None) -> "TrainingSchedule":
        """The same schedule given in epochs (as recipes do)."""
        steps_per_epoch = _validate.integer(steps_per_epoch, "steps_per_epoch", low=1)
        epochs = _validate.integer(epochs, "epochs", low=0)
        eps_warmup_epochs = _validate.real(eps_warmup_epochs, "eps_warmup_epochs", low=0)
        lr_warmup_epochs = _validate.real(lr_warmup_epochs, "lr_warmup_epochs", low=0)
        return cls(eps_warmup_steps=int(round(eps_warmup_epochs * steps_per_epoch)), lr_schedule=lr_schedule,
                   lr_warmup_steps=int(round(lr_warmup_epochs * steps_per_epoch)),
                   total_steps=max(epochs * steps_per_epoch, 1), clip_norm=clip_norm)

    def eps_scale(self, step):
        """ε(t)/ε at optimizer step t (a float32 tensor in (0, 1])."""
        import tensorflow as tf

        if not self.eps_warmup_steps:
            return tf.constant(1.0, tf.float32)
        t = tf.cast(step, tf.float32)
        return tf.minimum(1.0, (t + 1.0) / float(self.eps_warmup_steps))

    def learning_rate(self, peak: float):
        """η(t) for the optimizer: a float when constant with no warm-up, else a :class:`WarmupDecay`."""
        if self.lr_schedule == "constant" and not self.lr_warmup_steps:
            return _validate.real(peak, "learning_rate", low=0, low_open=True)
        from tf_awt.adversarial._learning_rate import WarmupDecay

        return WarmupDecay(peak, self.lr_schedule, self.total_steps or 1, self.lr_warmup_steps)

    @property
    def is_default(self) -> bool:
        return not self.eps_warmup_steps and not self.lr_warmup_steps and self.lr_schedule == "constant" and self.clip_norm is None

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "TrainingSchedule":
        return cls(**config)


def __getattr__(name):
    """``WarmupDecay`` on first use (:mod:`tf_awt.adversarial._learning_rate`): this module loads without TensorFlow."""
    if name == "WarmupDecay":
        from tf_awt.adversarial._learning_rate import WarmupDecay

        return WarmupDecay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
