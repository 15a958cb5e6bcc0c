r"""FAB-T (Croce & Hein, ICML 2020), native and compiled: the targeted Fast Adaptive Boundary
attack, L∞, the third attack of the standard AutoAttack.

FAB looks for the *smallest* perturbation that changes the class, by repeatedly projecting onto
the linearized decision boundary. For an example x (label y) and a target class t, at the current
point x⁽ᵏ⁾ (x⁽⁰⁾ = x) the boundary between y and t is linearized::

    g(z) = f_t(z) − f_y(z) ≈ g(x⁽ᵏ⁾) + ∇g(x⁽ᵏ⁾)ᵀ(z − x⁽ᵏ⁾) = 0

and both x⁽ᵏ⁾ and the original x are projected onto that hyperplane inside the data range, in
L∞ (:func:`project_linf`): δ₁ = P(x⁽ᵏ⁾) − x⁽ᵏ⁾ and δ₂ = P(x) − x. The next point is a biased
step towards the projections, with overshoot η and a pull α back to x::

    α = min(‖δ₁‖∞ / (‖δ₁‖∞ + ‖δ₂‖∞), α_max)
    x⁽ᵏ⁺¹⁾ = clip((1 − α)(x⁽ᵏ⁾ + η δ₁) + α(x + η δ₂))

When x⁽ᵏ⁺¹⁾ is misclassified it is kept if it is the closest found so far (in L∞), and the search
moves back towards x: x⁽ᵏ⁺¹⁾ ← x + β(x⁽ᵏ⁺¹⁾ − x). The standard AutoAttack's FAB-T runs 100
iterations for each of the 9 classes with the highest clean logits after the top one, from x itself
(one restart, no random start), with α_max = 0.1, η = 1.05, β = 0.9; an example counts as broken
when the closest misclassified point found is within ε.

**The projection** (:func:`project_linf`): the smallest ‖δ‖∞ with wᵀ(t + δ) = b and t + δ in
[lo, hi]. With c = b − wᵀt (say c > 0; else flip w and c), the most a step of size λ can add to
wᵀδ is h(λ) = Σᵢ |wᵢ| min(λ, rᵢ), where rᵢ is the room coordinate i has in the helpful direction
(hi − tᵢ if wᵢ > 0, tᵢ − lo if wᵢ < 0). h is piecewise linear and non-decreasing, and
c / Σᵢ|wᵢ| ≤ λ ≤ max r, so bisection on log λ brackets the smallest λ with h(λ) ≥ c to [λ₋, λ₊]
(32 halvings in float32, 64 in float64: a relative width below the type's precision; no sort, which
cost more than the network's own passes on an MLP), and on that bracket
λ = (c − Σ_{rᵢ ≤ λ₋} |wᵢ| rᵢ) / Σ_{rᵢ > λ₋} |wᵢ|; δᵢ = sign(wᵢ) min(λ, rᵢ). If even h(max r) < c,
δ goes as far as the box allows (the boundary cannot be reached in it). Compiled with XLA, which
fuses the bisection's loop (3× faster than without on this CPU).

Written from the paper (Croce & Hein, "Minimally distorted adversarial examples with a fast
adaptive boundary attack", ICML 2020) and AutoAttack's published settings. TensorFlow is imported
inside the functions that use it.
"""
from __future__ import annotations

from typing import Callable, Tuple

__all__ = ["fab_targeted", "project_linf"]

_ROOM_CAP = 1e12  # an unbounded side of the data range: room enough


def project_linf(t, w, b, lo, hi):
    """δ (shape of ``t``, rows flattened): the smallest L∞ step with ``w·(t + δ) = b`` per row and
    ``t + δ`` in [lo, hi] (module docstring). ``t``, ``w``: (N, D); ``b``: (N,)."""
    import tensorflow as tf

    return tf.function(_project_linf, jit_compile=True)(t, w, b, tf.cast(lo, t.dtype), tf.cast(hi, t.dtype))


def _project_linf(t, w, b, lo, hi):
    import tensorflow as tf

    c = b - tf.reduce_sum(w * t, axis=1)
    w = w * tf.sign(c)[:, None]  # now the step must raise w·δ by |c|
    need = tf.abs(c)
    room = tf.where(w > 0, hi - t, tf.where(w < 0, t - lo, tf.zeros_like(t)))
    room = tf.clip_by_value(room, 0.0, _ROOM_CAP)
    weight = tf.abs(w)
    top = tf.reduce_max(room, axis=1)
    least = need / tf.maximum(tf.reduce_sum(weight, axis=1), 1e-30)  # h(λ) ≤ λ Σ|w|
    tiny = tf.constant(1e-30, t.dtype)

    def reach(lam):  # h(λ) per row
        return tf.reduce_sum(weight * tf.minimum(lam[:, None], room), axis=1)

    def halve(k, low, high):
        mid = tf.sqrt(tf.maximum(low, tiny) * tf.maximum(high, tiny))
        enough = reach(mid) >= need
        return k + 1, tf.where(enough, low, mid), tf.where(enough, mid, high)

    halvings = 64 if t.dtype == tf.float64 else 32
    start = (tf.constant(0), tf.minimum(least, top) * (1 - 1e-6), top)  # just below the lower bound: h(λ₋) < c
    _, low, _ = tf.while_loop(lambda k, *_: k < halvings, halve, start)
    saturated = room <= low[:, None]
    spent = tf.reduce_sum(tf.where(saturated, weight * room, tf.zeros_like(room)), axis=1)
    free = tf.reduce_sum(tf.where(saturated, tf.zeros_like(weight), weight), axis=1)
    lam = tf.where(free > 0, (need - spent) / tf.maximum(free, 1e-30), top)
    lam = tf.where(reach(top) >= need, tf.clip_by_value(lam, 0.0, top), top)
    lam = tf.where(need > 0, lam, tf.zeros_like(lam))
    return tf.sign(w) * tf.minimum(lam[:, None], room)


def _linf(d):
    import tensorflow as tf

    return tf.reduce_max(tf.abs(d), axis=1)


def fab_targeted(forward: Callable, x, y, target, *, eps: float, clip: Tuple[float, float], iterations: int = 100,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9):
    """One FAB-T run (L∞) on a batch: ``(adversarial inputs, fooled per example)``.

    Args:
      forward: inputs -> logits (differentiable).
      x, y: a batch of inputs (float tensor) and integer labels; ``target``: the target class per example.
      eps: the L∞ budget: an example is fooled when the closest misclassified point found is within it.
      clip: the data range (lo, hi); ±inf for an unbounded side.
      iterations, alpha_max, eta, beta: the attack's settings (default: the standard AutoAttack's).

    Returns the closest misclassified point within ε where one was found, else x. Build it inside a
    ``tf.function``: the loop is a ``tf.while_loop`` and traces once.
    """
    import tensorflow as tf

    shape, batch = tf.shape(x), tf.shape(x)[0]
    flat = tf.reshape(x, [batch, -1])
    lo, hi = tf.constant(clip[0], x.dtype), tf.constant(clip[1], x.dtype)
    y, target = tf.cast(y, tf.int32), tf.cast(target, tf.int32)

    def boundary(z):  # g(z) = f_t − f_y and its input gradient, flattened
        with tf.GradientTape() as tape:
            tape.watch(z)
            logits = forward(tf.reshape(z, shape))
            g = tf.gather(logits, target, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
        return g, tape.gradient(g, z, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def body(i, point, best, best_norm):
        g, grad = boundary(point)
        b = tf.reduce_sum(grad * point, axis=1) - g  # the hyperplane gradᵀz = b
        d1 = project_linf(point, grad, b, lo, hi)
        d2 = project_linf(flat, grad, b, lo, hi)
        a1, a2 = tf.maximum(_linf(d1), 1e-8), tf.maximum(_linf(d2), 1e-8)
        alpha = tf.minimum(a1 / (a1 + a2), alpha_max)[:, None]
        point = tf.clip_by_value((1 - alpha) * (point + eta * d1) + alpha * (flat + eta * d2), lo, hi)
        logits = forward(tf.reshape(point, shape))
        fooled = tf.argmax(logits, axis=1, output_type=tf.int32) != y
        distance = _linf(point - flat)
        closer = fooled & (distance < best_norm)
        best = tf.where(closer[:, None], point, best)
        best_norm = tf.where(closer, distance, best_norm)
        point = tf.where(fooled[:, None], flat + beta * (point - flat), point)
        return i + 1, point, best, best_norm

    infinite = tf.fill([batch], tf.constant(float("inf"), x.dtype))
    _, _, best, best_norm = tf.while_loop(lambda i, *_: i < iterations, body, (tf.constant(0), flat, flat, infinite))
    fooled = best_norm <= eps
    return tf.reshape(tf.where(fooled[:, None], best, flat), shape), fooled
