"""PGD attacks (Madry et al.), through cleverhans 4's ``projected_gradient_descent``.

An :class:`Attack` is a frozen, validated configuration; :func:`pgd` runs it. Both L∞ and L2 are
supported, with a random start in the ε-ball and clipping to the data range. ``eps == 0`` returns
the clean inputs unchanged (natural training; AWT then reduces to Neural Tangent Transfer).

Random starts come in two kinds (:func:`pgd`'s ``seed``):

* ``seed=None``: cleverhans' own ``projected_gradient_descent`` with its stateful random start
  (``tf.random.uniform``; reproducible for a fixed ``tf.random.set_seed`` within one process).
* ``seed=[a, b]`` (a shape-(2,) integer tensor): a *stateless* random start
  (``tf.random.stateless_*``), a pure function of the seed, followed by the same iteration
  (cleverhans' ``fast_gradient_method`` steps and ``clip_eta`` projections). Training and search
  pass ``[run seed, optimizer step]``, so the attack of step t is the same in an uninterrupted
  run and in a run resumed from a checkpoint (what makes resume exact).

TensorFlow and cleverhans are imported inside the functions that use them, so :class:`Attack`
validates a recipe without TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from tf_awt.paper import attack_numbers

if TYPE_CHECKING:
    import tensorflow as tf

# TensorFlow is imported inside the functions that run attacks: an Attack (a recipe's settings) is
# validated without it.

__all__ = ["Attack", "pgd", "random_start"]

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
    eps: float = attack_numbers("train")[0]
    steps: int = attack_numbers("train")[1]
    step_size: Optional[float] = attack_numbers("train")[2]
    random_start: bool = True
    clip_min: Optional[float] = 0.0
    clip_max: Optional[float] = 1.0

    def __post_init__(self):
        if not isinstance(self.norm, str) or self.norm not in _NORMS:
            raise ValueError(f"attack norm must be one of {sorted(_NORMS)}. You passed: {self.norm!r}")
        from tf_awt import _validate

        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731
        set_("eps", _validate.real(self.eps, "attack eps", low=0))
        set_("steps", _validate.integer(self.steps, "attack steps", low=0))
        if self.step_size is not None:
            if not (_validate.is_real(self.step_size) and np.isfinite(self.step_size) and self.step_size > 0):
                raise ValueError(f"attack step_size must be > 0 or None (2.5*eps/steps). You passed: {self.step_size!r}")
            set_("step_size", float(self.step_size))
        for side in ("clip_min", "clip_max"):
            if getattr(self, side) is not None:
                set_(side, _validate.real(getattr(self, side), f"attack {side}"))
        if not isinstance(self.random_start, (bool, np.bool_)):
            raise ValueError(f"attack random_start must be True or False. You passed: {self.random_start!r}")
        set_("random_start", bool(self.random_start))
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


def random_start(shape, norm: str, eps, seed, dtype="float32") -> tf.Tensor:
    """A uniform random point of the ``norm`` ε-ball per example, from a stateless ``seed``.

    L∞: uniform in [-ε, ε]^d. L2: a uniform direction (normalized Gaussian) scaled by ε·u^(1/d),
    u ~ U[0, 1] (Calafiore et al. 1998), the same distributions as cleverhans' ``random_lp_vector``.
    """
    import tensorflow as tf

    seed = tf.cast(seed, tf.int64)
    eps = tf.cast(eps, dtype)
    if norm == "linf":
        return tf.random.stateless_uniform(shape, seed, -eps, eps, dtype=dtype)
    n = shape[0]
    dim = tf.reduce_prod(shape[1:])
    direction = tf.random.stateless_normal(tf.stack([n, dim]), seed, dtype=dtype)
    direction = direction / tf.sqrt(tf.reduce_sum(tf.square(direction), axis=-1, keepdims=True))
    other = tf.random.experimental.stateless_fold_in(seed, 1)
    radius = tf.pow(tf.random.stateless_uniform(tf.stack([n, 1]), other, dtype=dtype), 1.0 / tf.cast(dim, dtype))
    return eps * tf.reshape(radius * direction, shape)


def _replica_slice_of_random_start(x, attack: Attack, seed, eps) -> tf.Tensor:
    """The random start of this replica's rows of the global batch (see :func:`pgd`)."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    shape = tf.shape(x)
    if replicas == 1:
        return random_start(shape, attack.norm, eps, seed, dtype=x.dtype)
    from tf_awt._distribute import replica_rows

    local = shape[0]
    first, total = replica_rows(local)
    whole = tf.concat([[total], shape[1:]], axis=0)
    return random_start(whole, attack.norm, eps, seed, dtype=x.dtype)[first:first + local]


def _seeded_pgd(model_fn, x, y, attack: Attack, step, seed, eps=None) -> tf.Tensor:
    import tensorflow as tf

    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
    from cleverhans.tf2.utils import clip_eta

    norm = _NORMS[attack.norm]
    eps = attack.eps if eps is None else eps
    clip = attack.clip_min is not None or attack.clip_max is not None
    lo = -np.inf if attack.clip_min is None else attack.clip_min
    hi = np.inf if attack.clip_max is None else attack.clip_max
    if attack.random_start:
        eta = _replica_slice_of_random_start(x, attack, seed, eps)
    else:
        eta = tf.zeros_like(x)
    eta = clip_eta(eta, norm, eps)
    adv = x + eta
    if clip:
        adv = tf.clip_by_value(adv, tf.cast(lo, x.dtype), tf.cast(hi, x.dtype))
    if y is None:
        y = tf.argmax(model_fn(x), 1)
    for _ in range(attack.steps):
        adv = fast_gradient_method(model_fn, adv, step, norm, clip_min=attack.clip_min, clip_max=attack.clip_max, y=y)
        eta = clip_eta(adv - x, norm, eps)
        adv = x + eta
        if clip:
            adv = tf.clip_by_value(adv, tf.cast(lo, x.dtype), tf.cast(hi, x.dtype))
    return adv


def pgd(model_fn: Callable[[tf.Tensor], tf.Tensor], x, y, attack: Attack, seed=None, scale=None) -> tf.Tensor:
    """PGD adversarial examples for ``x`` with true labels ``y`` against ``model_fn`` (logits).

    Args:
      model_fn: inputs -> logits.
      x, y: inputs and integer labels (``y=None``: the model's predictions, no label leaking).
      attack: the :class:`Attack`.
      seed: None (default: cleverhans' stateful random start) or a shape-(2,) integer tensor for
        a stateless random start (see the module docstring). Under a ``tf.distribute`` strategy
        each replica draws the start of the whole global batch and takes its own rows, so the
        adversarial examples equal those of one device on the same global batch.
      scale: None (default) or a scalar in [0, 1] (may be a tensor): ε and the step size are
        multiplied by it (an ε warm-up, :class:`tf_awt.adversarial.training_schedule.TrainingSchedule`); 0 returns ``x``. With
        ``seed=None`` the random start is then drawn statelessly from a seed taken from the
        global generator.

    Graph-friendly: under ``tf.function`` the ``attack.steps`` iterations are traced once.
    """
    import tensorflow as tf

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

    if scale is not None:
        scale = tf.clip_by_value(tf.cast(scale, x.dtype), 0.0, 1.0)
        if seed is None:
            seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
        labels = None if y is None else tf.cast(y, tf.int64)
        return tf.stop_gradient(_seeded_pgd(connected_fn, x, labels, attack, step * scale, seed, eps=attack.eps * scale))
    if seed is not None:
        labels = None if y is None else tf.cast(y, tf.int64)
        return tf.stop_gradient(_seeded_pgd(connected_fn, x, labels, attack, step, seed))
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
