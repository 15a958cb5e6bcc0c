"""APGD (Croce & Hein, ICML 2020), native and compiled: APGD-CE and APGD-T, the white-box half of
the standard AutoAttack.

APGD is PGD with a momentum step and a step size that adapts itself, per example. From a random
start x⁽⁰⁾ in the ε-ball (L∞ or L2) and η⁽⁰⁾ = 2ε::

    z⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + η⁽ᵏ⁾ · s(∇L(x⁽ᵏ⁾)))                        s = sign (L∞) or g/‖g‖₂ (L2)
    x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))   α = 0.75 (1 at k = 0)

P projects onto the ε-ball and the data range. At the checkpoints w_j (the first after
⌈0.22 N⌉ iterations, each next interval 0.03 N shorter, at least 0.06 N) the step is halved and the
iterate restarted from the best point so far, for each example where (1) the loss rose in at most
75% of the iterations since the last checkpoint, or (2) the step was not halved at the last
checkpoint and the best loss has not improved since. Every iterate that is misclassified is kept
as the example's adversarial input.

Losses (z: logits, y: label, π: the logits sorted in decreasing order):

* ``ce``: cross-entropy (APGD-CE, untargeted).
* ``dlr-targeted``: −(z_y − z_t) / (π₁ − (π₃ + π₄)/2 + 10⁻¹²), for each target t among the
  ``targets`` (default 9) classes with the highest clean logits after the top one (APGD-T); with
  fewer than 4 classes the unnormalized margin −(z_y − z_t).

The published defaults are the standard AutoAttack's: 100 iterations, one restart for APGD-CE,
one per target for APGD-T. All random starts are stateless functions of ``seed`` (a pair of
integers), the batch's position and the target, so an evaluation is reproducible bit for bit.

TensorFlow is imported inside the functions that use it.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

__all__ = ["apgd", "checkpoints", "LOSSES"]

LOSSES = ("ce", "dlr-targeted")


def checkpoints(iterations: int) -> List[int]:
    """The iterations (0-based, after which the step-size test runs) of an ``iterations``-long APGD."""
    first = max(int(0.22 * iterations), 1)
    shrink, least = max(int(0.03 * iterations), 1), max(int(0.06 * iterations), 1)
    out, at, length = [], 0, first
    while at + length <= iterations:
        at += length
        out.append(at - 1)
        length = max(length - shrink, least)
    return out


def _per_example(t, batch_rank: int):
    """A shape-[B] tensor broadcastable against an input batch of rank ``batch_rank``."""
    import tensorflow as tf

    return tf.reshape(t, [-1] + [1] * (batch_rank - 1))


def _project(adv, x, eps, norm: str, lo, hi):
    import tensorflow as tf

    delta = adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        length = tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(delta, [tf.shape(x)[0], -1])), axis=1) + 1e-24)
        delta = delta * _per_example(tf.minimum(1.0, eps / length), len(x.shape))
    return tf.clip_by_value(x + delta, lo, hi)


def _direction(grad, norm: str):
    import tensorflow as tf

    if norm == "linf":
        return tf.sign(grad)
    length = tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(grad, [tf.shape(grad)[0], -1])), axis=1) + 1e-24)
    return grad / _per_example(length, len(grad.shape))


def _loss(logits, y, target, kind: str, num_classes: int):
    """Per-example loss to maximize."""
    import tensorflow as tf

    if kind == "ce":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    z_y = tf.gather(logits, y, batch_dims=1)
    z_t = tf.gather(logits, target, batch_dims=1)
    if num_classes < 4:
        return -(z_y - z_t)
    top = tf.sort(logits, axis=1, direction="DESCENDING")
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _checkpoint_schedule(iterations: int):
    """Two constant tensors over the iterations: whether iteration i is a checkpoint, and the
    length of the interval that ends there (0 elsewhere)."""
    import tensorflow as tf

    at_check = np.zeros(iterations, bool)
    at_check[checkpoints(iterations)] = True
    length_at = np.zeros(iterations, np.float32)
    length_at[checkpoints(iterations)] = np.diff([-1] + checkpoints(iterations)).astype(np.float32)
    return tf.constant(at_check), tf.constant(length_at)


def _random_start(x, norm: str, seed):
    """A random direction per example: uniform in the unit L∞ ball, or a unit L2 vector."""
    import tensorflow as tf

    if norm == "linf":
        return tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
    start = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
    return start / _per_example(tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(start, [tf.shape(x)[0], -1])), axis=1)),
                                len(x.shape))


def apgd(forward: Callable, x, y, *, eps: float, norm: str, clip: Tuple[float, float], iterations: int, seed,
         loss: str = "ce", target=None, num_classes: int = 10):
    """One APGD run on a batch: ``(adversarial inputs, fooled per example)``.

    Args:
      forward: inputs -> logits (differentiable).
      x, y: a batch of inputs (float32 tensor) and integer labels.
      eps, norm: the threat model ("linf" or "l2").
      clip: the data range (lo, hi); ±inf for an unbounded side.
      iterations: APGD iterations (the standard AutoAttack: 100).
      seed: shape-(2,) integer tensor: the random start.
      loss: "ce" or "dlr-targeted" (then ``target``: integer target class per example).
      num_classes: the number of logits.

    Build it inside a ``tf.function`` (:func:`tf_awt.adversarial.attack_suites` does): the loop is
    a ``tf.while_loop`` and traces once.
    """
    import tensorflow as tf

    lo, hi = tf.constant(clip[0], x.dtype), tf.constant(clip[1], x.dtype)
    rank, batch = len(x.shape), tf.shape(x)[0]
    y = tf.cast(y, tf.int32)
    target = y if target is None else tf.cast(target, tf.int32)
    at_check, length_at = _checkpoint_schedule(iterations)

    def loss_and_grad(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            logits = forward(z)
            values = _loss(logits, y, target, loss, num_classes)
        grad = tape.gradient(values, z, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return values, grad, tf.argmax(logits, axis=1, output_type=tf.int32) != y

    adv = _project(x + eps * _random_start(x, norm, seed), x, eps, norm, lo, hi)
    value, grad, fooled = loss_and_grad(adv)
    found = tf.where(_per_example(fooled, rank), adv, x)
    step = tf.fill([batch], tf.cast(2.0 * eps, x.dtype))
    state = dict(adv=adv, prev=adv, grad=grad, value=value, best=adv, best_grad=grad, best_value=value, found=found,
                 fooled=fooled, step=step, rises=tf.zeros([batch], x.dtype), best_at_check=value,
                 halved=tf.zeros([batch], tf.bool))

    def body(i, s):
        a = tf.where(i > 0, 0.75, 1.0)
        step_b = _per_example(s["step"], rank)
        z = _project(s["adv"] + step_b * _direction(s["grad"], norm), x, eps, norm, lo, hi)
        new = _project(s["adv"] + a * (z - s["adv"]) + (1 - a) * (s["adv"] - s["prev"]), x, eps, norm, lo, hi)
        value, grad, fooled_now = loss_and_grad(new)
        found = tf.where(_per_example(fooled_now, rank), new, s["found"])
        better = value > s["best_value"]
        best = tf.where(_per_example(better, rank), new, s["best"])
        best_grad = tf.where(_per_example(better, rank), grad, s["best_grad"])
        best_value = tf.where(better, value, s["best_value"])
        rises = s["rises"] + tf.cast(value > s["value"], x.dtype)
        # the checkpoint test (a no-op between checkpoints)
        oscillates = rises <= 0.75 * length_at[i]
        stalled = tf.logical_and(tf.logical_not(s["halved"]), s["best_at_check"] >= best_value)
        halve = tf.logical_and(at_check[i], tf.logical_or(oscillates, stalled))
        halve_b = _per_example(halve, rank)
        return i + 1, dict(
            adv=tf.where(halve_b, best, new), prev=s["adv"], grad=tf.where(halve_b, best_grad, grad), value=value,
            best=best, best_grad=best_grad, best_value=best_value, found=found,
            fooled=tf.logical_or(s["fooled"], fooled_now), step=tf.where(halve, s["step"] / 2, s["step"]),
            rises=tf.where(at_check[i], tf.zeros_like(rises), rises),
            best_at_check=tf.where(at_check[i], best_value, s["best_at_check"]),
            halved=tf.where(at_check[i], halve, s["halved"]))

    _, state = tf.while_loop(lambda i, s: i < iterations, body, (tf.constant(0), state))
    out = tf.where(_per_example(state["fooled"], rank), state["found"], state["best"])
    return tf.stop_gradient(out), state["fooled"]
