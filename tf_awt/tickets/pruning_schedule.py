"""When the AWT mask is re-derived, and at what sparsity: a tfmot ``PruningSchedule``.

During the ticket search (Algorithm 1) the mask is reset to the top-k magnitudes of the student's
weights every ``update_every`` (T_m) steps, from ``begin_step`` up to ``end_step`` (the last search
step); after that it is frozen. The sparsity is constant: ``1 - density``.

The schedule also plugs into plain ``tfmot.sparsity.keras.prune_low_magnitude``, where tfmot's
wrappers then prune layer by layer on the same steps. :meth:`AWTSchedule.frozen_at` never prunes: the
schedule of a found ticket during adversarial training.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras
from tf_awt import _internals
from tf_awt import _validate

__all__ = ["AWTSchedule"]


@tf_keras.saving.register_keras_serializable(package="tf_awt")
class AWTSchedule(_internals.PruningSchedule):
    """Constant sparsity ``1 - density``, mask re-derived every ``update_every`` steps until ``end_step``.

    Args:
      density: fraction of weights kept, in (0, 1].
      update_every: T_m, steps between mask updates (default 100), >= 1.
      end_step: last step at which the mask may change (default -1: no last step).
      begin_step: first step at which the mask is derived (default 0).
      frozen: if True the schedule never prunes (default False).

    ``from_config(get_config())`` round-trips.
    """

    def __init__(self, density: float, update_every: int = 100, end_step: int = -1, begin_step: int = 0, frozen: bool = False):
        self.density = _validate.real(density, "density", 0, 1, low_open=True)
        self.update_every = _validate.integer(update_every, "update_every (T_m)", low=1)
        self.begin_step = _validate.integer(begin_step, "begin_step", low=0)
        if not (_validate.integer(end_step, "end_step", low=-1) == -1 or end_step >= begin_step):
            raise ValueError(f"end_step must be -1 or an integer >= begin_step ({begin_step}). You passed: {end_step!r}")
        self.end_step = int(end_step)
        self.frozen = bool(frozen)

    @classmethod
    def frozen_at(cls, density: float) -> "AWTSchedule":
        """A schedule that never changes the mask (a found ticket being trained)."""
        return cls(density, frozen=True)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        if self.frozen:
            should_prune = tf.constant(False)
        else:
            should_prune = self._should_prune_in_step(
                step, tf.constant(self.begin_step, tf.int64), tf.constant(self.end_step, tf.int64),
                tf.constant(self.update_every, tf.int64),
            )
        return should_prune, tf.constant(self.sparsity, tf.float32)

    def get_config(self) -> dict:
        """``{"class_name": "tf_awt>AWTSchedule", "config": {...}}``: tfmot's schedule format, so a
        wrapped model survives ``model.save``/``load_model`` (in ``prune_scope``) and ``clone_model``."""
        return {
            "class_name": tf_keras.saving.get_registered_name(type(self)),
            "config": {
                "density": self.density,
                "update_every": self.update_every,
                "end_step": self.end_step,
                "begin_step": self.begin_step,
                "frozen": self.frozen,
            },
        }

    @classmethod
    def from_config(cls, config: dict) -> "AWTSchedule":
        """Accepts :meth:`get_config`'s output or its inner ``config``."""
        if "class_name" in config:
            config = config["config"]
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items())
        return f"AWTSchedule({args})"
