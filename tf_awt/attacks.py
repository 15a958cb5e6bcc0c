"""PGD attacks (Madry et al.), through cleverhans 4's ``projected_gradient_descent``.

An :class:`Attack` is a frozen, validated configuration; :func:`pgd` runs it. Both L∞ and L2 are
supported, with a random start in the ε-ball and clipping to the data range. ``eps == 0`` returns
the clean inputs unchanged (natural training; AWT then reduces to Neural Tangent Transfer).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

__all__ = ["Attack", "pgd"]

_NORMS = {"linf": np.inf, "l2": 2}


@dataclasses.dataclass(frozen=True)
class Attack:
    """A PGD attack.

    Attributes:
      norm: "linf" (default) or "l2".
      eps: radius of the ε-ball (default 0.3, the paper's MNIST setting; 8/255 for CIFAR).
      steps: PGD iterations (default 40; evaluation uses 100).
      step_size: step per iteration (default 0.01). ``None`` means 2.5·eps/steps (Madry et al.).
      random_start: start from a uniform random point in the ε-ball (default True).
      clip_min, clip_max: the data range (default [0, 1]); None for an unbounded side
        (e.g. Gaussian toy data).
    """

    norm: str = "linf"
    eps: float = 0.3
    steps: int = 40
    step_size: Optional[float] = 0.01
    random_start: bool = True
    clip_min: Optional[float] = 0.0
    clip_max: Optional[float] = 1.0

    def __post_init__(self):
        if self.norm not in _NORMS:
            raise ValueError(f"attack norm must be one of {sorted(_NORMS)}. You passed: {self.norm!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps >= 0):
            raise ValueError(f"attack eps must be a number >= 0. You passed: {self.eps!r}")
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ValueError(f"attack steps must be an integer >= 0. You passed: {self.steps!r}")
        if self.step_size is not None and not (isinstance(self.step_size, (int, float)) and self.step_size > 0):
            raise ValueError(f"attack step_size must be > 0 or None (2.5*eps/steps). You passed: {self.step_size!r}")
        if self.clip_min is not None and self.clip_max is not None and not self.clip_min < self.clip_max:
            raise ValueError(f"attack clip_min must be < clip_max. You passed: {self.clip_min!r}, {self.clip_max!r}")

    @property
    def effective_step_size(self) -> float:
        if self.step_size is None:
            return 2.5 * self.eps / max(self.steps, 1)
        return float(self.step_size)

    def replace(self, **changes) -> "Attack":
        return dataclasses.replace(self, **changes)

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "Attack":
        return cls(**config)


def pgd(model_fn: Callable[[tf.Tensor], tf.Tensor], x, y, attack: Attack) -> tf.Tensor:
    """PGD adversarial examples for ``x`` with true labels ``y`` against ``model_fn`` (logits).

    Graph-friendly: under ``tf.function`` the ``attack.steps`` iterations are traced once.
    """
    x = tf.convert_to_tensor(x)
    if attack.eps == 0 or attack.steps == 0:
        return tf.identity(x)
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    step = min(attack.effective_step_size, attack.eps)  # cleverhans requires eps_iter <= eps

    def connected_fn(z):
        # A model whose output does not depend on its input (e.g. stop_gradient inside) would give
        # cleverhans a None gradient; a zero-weight path makes it an all-zero gradient instead.
        out = model_fn(z)
        return out + 0.0 * tf.reduce_sum(tf.reshape(z, [tf.shape(z)[0], -1]), axis=1, keepdims=True)

    adv = projected_gradient_descent(
        connected_fn,
        x,
        eps=attack.eps,
        eps_iter=step,
        nb_iter=attack.steps,
        norm=_NORMS[attack.norm],
        clip_min=attack.clip_min,
        clip_max=attack.clip_max,
        y=None if y is None else tf.cast(y, tf.int64),
        rand_init=attack.random_start,
        sanity_checks=False,
    )
    return tf.stop_gradient(adv)
