"""The learning-rate schedule of :class:`tf_awt.adversarial.training_schedule.TrainingSchedule` (a Keras ``LearningRateSchedule``).

Its own module so that a :class:`~tf_awt.adversarial.training_schedule.TrainingSchedule` (a recipe's ``train.*`` settings) is
validated without importing TensorFlow; ``tf_awt.adversarial.training_schedule.WarmupDecay`` names
this class. It is registered with Keras (``tf_awt>WarmupDecay``) when this module loads: on that
name's first use, or the first
``TrainingSchedule.learning_rate`` that returns one.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

from tf_awt import _validate
from tf_awt._options import LR_SCHEDULES

__all__ = ["WarmupDecay"]


@tf_keras.saving.register_keras_serializable(package="tf_awt")
class WarmupDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """η(t): linear warm-up over ``warmup_steps``, then constant, cosine or step decay.

    Args:
      learning_rate: the peak rate η, > 0.
      decay: "constant" (default), "cosine" (η → ``final_fraction``·η at ``total_steps``) or
        "step" (× 0.1 at 50% and at 75% of ``total_steps``).
      total_steps: the training length T in steps (needed by cosine and step), >= 1.
      warmup_steps: W_η (default 0): η(t) = η · (t + 1) / W_η for t < W_η.
      final_fraction: cosine's last rate as a fraction of η (default 0).
    """

    def __init__(self, learning_rate: float, decay: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
                 final_fraction: float = 0.0):
        super().__init__()
        self.learning_rate = _validate.real(learning_rate, "learning_rate", low=0, low_open=True)
        if decay not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}. You passed: {decay!r}")
        self.decay = decay
        self.total_steps = _validate.integer(total_steps, "total_steps", low=1)
        self.warmup_steps = _validate.integer(warmup_steps, "lr_warmup_steps", low=0)
        self.final_fraction = _validate.real(final_fraction, "final_fraction", 0, 1)

    def __call__(self, step):
        t = tf.cast(step, tf.float32)
        peak = tf.constant(self.learning_rate, tf.float32)
        if self.decay == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = tf.clip_by_value((t - self.warmup_steps) / span, 0.0, 1.0)
            f = self.final_fraction
            rate = peak * (f + (1 - f) * 0.5 * (1 + tf.cos(math.pi * progress)))
        elif self.decay == "step":
            rate = peak * tf.where(t >= 0.75 * self.total_steps, 0.01, tf.where(t >= 0.5 * self.total_steps, 0.1, 1.0))
        else:
            rate = peak
        if self.warmup_steps:
            rate = tf.minimum(rate, peak * (t + 1) / self.warmup_steps)
        return rate

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "decay": self.decay, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "final_fraction": self.final_fraction}
