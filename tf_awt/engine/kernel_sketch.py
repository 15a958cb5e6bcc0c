r"""A matrix-free, unbiased estimate of the kernel distance (``search.kernel: sketch``).

The search needs the kernel distance and its gradient, not the kernels. With

.. math::

    A = \Theta_0(X, \tilde X_0) - \Theta^s(X, \tilde X^s_0)
      = J_0(X)\,J_0(\tilde X_0)^\top - J_s(X)\,J_s(\tilde X^s_0)^\top
      \in \mathbb{R}^{N_1 k \times N_2 k}

and probes :math:`v \in \mathbb{R}^{N_2 k}` with :math:`\mathbb{E}[v v^\top] = I`,
:math:`\mathbb{E}\,\lVert A v\rVert^2 = \operatorname{tr}(A^\top A) = \lVert A\rVert_F^2`. Each
product :math:`\Theta v = J(X)\,\big(J(\tilde X)^\top v\big)` is one vector–Jacobian product (a
backward pass over :math:`\tilde X` with output cotangent :math:`v`, giving a parameter-shaped
:math:`u`) followed by one Jacobian–vector product (a forward-mode pass over :math:`X` along
:math:`u`): no per-example gradient, no kernel matrix, memory :math:`O(K\,(P + A))` for
:math:`K` probes, :math:`P` weights and :math:`A` activations of a batch (each probe holds its
:math:`u` and its forward-mode pass), and no layer rule (any layer TensorFlow can differentiate). The estimate with :math:`K` probes is

.. math::

    \widehat{D}_K = \frac{c}{K} \sum_{\kappa=1}^{K} \lVert A v_\kappa \rVert^2, \qquad
    c = \tfrac{1}{N_1^2}\ (\text{per\_example}) \text{ or } \tfrac{1}{N_1 N_2 k^2}\ (\text{per\_entry}),

the same scale as :func:`tf_awt.kernel_distance`. It is differentiable w.r.t. the student's
weights, and since the probes do not depend on them its gradient is an unbiased estimate of the
exact distance's gradient.

**Variance.** With Rademacher probes (:math:`v_i = \pm 1`, what this module draws) and
:math:`M = A^\top A`, :math:`\operatorname{Var}\lVert A v\rVert^2 = 2 \sum_{i \ne j} M_{ij}^2`
(Gaussian probes: :math:`2 \lVert M\rVert_F^2`, never smaller), so the relative standard error
of :math:`\widehat{D}_K` is at most :math:`\sqrt{2/K}` and falls as :math:`1/\sqrt{K}`; it is
small when :math:`A` has many comparable singular values and largest when one direction
dominates. docs/search.md gives the measured spread on the bundled models.

**Probes.** Drawn from a stateless seed (``tf.random.stateless_uniform``): the search passes
``[seed, step]``, so a resumed search repeats the uninterrupted one and every replica of a
``tf.distribute`` strategy draws the same probes. All :math:`K` products run in one vectorized
call (``tf.vectorized_map``), not a Python loop.

**Student kernel.** ``"masked"`` differentiates :math:`f(m \odot w)` w.r.t. :math:`w` (every
column carries :math:`m_p`: :math:`\sum_p m_p \partial_p f\,\partial_p f'`); ``"full"``
differentiates w.r.t. :math:`\theta = m \odot w` itself (every column, NTT's convention), as
:func:`tf_awt.mixed_tangent_kernel` does.

Functional core::

    products = tangent_products_fn(model)               # checks the model once
    theta_v = products(x, x_adv, probes, masks=masks)   # (K, N1, k) = Θ(x, x_adv) v_κ
    d = kernel_distance_sketch(teacher, student, x, x_adv_teacher, x_adv_student,
                               masks=masks, probes=8, seed=0)
"""
from __future__ import annotations

from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from tf_awt import _validate
from tf_awt.engine import _layers
from tf_awt.engine._masks import resolve_masks
from tf_awt.engine.passes import count
from tf_awt._options import NORMALIZATIONS, check_student_kernel
from tf_awt.keras3 import as_tf_keras

__all__ = ["draw_probes", "kernel_distance_sketch", "sketch_distance", "tangent_products_fn"]


def draw_probes(seed, probes: int, n: int, k: int, dtype=tf.float32) -> tf.Tensor:
    """``probes`` Rademacher vectors (entries ±1, E[vvᵀ] = I) of shape ``(probes, n, k)``.

    Args:
      seed: a stateless seed, shape (2,) integers (e.g. ``[seed, step]``).
      probes: K ≥ 1.
      n: columns of the kernel (examples of its second argument).
      k: outputs of the model.
      dtype: the probes' dtype (default float32; the model's).
    """
    u = tf.random.stateless_uniform(tf.stack([probes, n, k]), seed=tf.cast(seed, tf.int64), dtype=tf.float32)
    return tf.cast(tf.where(u < 0.5, -1.0, 1.0), dtype)


def _sources(model, masks, student_kernel) -> Tuple[List[tf.Tensor], dict, dict]:
    """(what the Jacobian is taken w.r.t., kernels substituted in the forward pass, masks it applies).

    ``"masked"``: the trainable variables, the forward pass computing m ⊙ W (under the caller's
    tapes). ``"full"``: the tensor θ = m ⊙ W in place of each masked kernel (its columns carry no
    factor m), and the other variables."""
    variables = list(model.trainable_variables)
    if student_kernel == "masked" or not masks:
        return variables, {}, masks
    effective = {key: (layer, layer.kernel * mask) for key, (layer, mask) in masks.items()}
    by_variable = {id(layer.kernel): key for key, (layer, _) in masks.items()}
    return [effective[by_variable[id(v)]][1] if id(v) in by_variable else v for v in variables], effective, {}


def tangent_products_fn(model, student_kernel: str = "masked") -> Callable:
    """Returns ``products(x1, x2, v, masks=None)``: Θ(x1, x2)·v_κ for a batch of probes, (K, N1, k).

    Args:
      model: a built tf_keras model with one ``(batch, k)`` output (logits); any differentiable
        layers (no layer rule is needed).
      student_kernel: ``"masked"`` (default) or ``"full"`` (see the module docstring).

    ``products(x1, x2, v, masks)``: ``x1`` (N1, ...) and ``x2`` (N2, ...) inputs, ``v`` probes of
    shape (K, N2, k), ``masks`` as for :func:`tf_awt.mixed_tangent_kernel` (a dict from a layer's
    name to a 0/1 array; the masks of tfmot wrappers are used for layers not named). Returns
    :math:`\\Theta(x_1, x_2)\\,v_\\kappa = J(x_1)\\,(J(x_2)^\\top v_\\kappa)`, differentiable w.r.t. the
    model's trainable variables (and the mask tensors).
    """
    check_student_kernel(student_kernel)
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (call it on data once). You passed an unbuilt model.")
    if not model.trainable_variables:
        raise ValueError(f"model {model.name!r} has no trainable variables; its tangent kernel is empty.")

    def products(x1, x2, v, masks: Optional[Mapping[str, object]] = None) -> tf.Tensor:
        resolved = resolve_masks(model, masks)
        sources, substituted, applied = _sources(model, resolved, student_kernel)

        def forward(x):
            with _layers.substituted_kernels(substituted):
                return _layers.masked_forward(model, x, applied)

        def one(probe):  # (N2, k) -> (N1, k)
            with tf.GradientTape() as tape:
                tape.watch(sources)
                s = tf.reduce_sum(probe * forward(x2))
            u = tape.gradient(s, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)  # J(x2)ᵀ v
            with tf.autodiff.ForwardAccumulator(sources, u) as acc:
                f = forward(x1)
            return acc.jvp(f, unconnected_gradients=tf.UnconnectedGradients.ZERO)  # J(x1) u

        probes = tf.shape(v)[0]  # per probe: x2 forward and back (J(x2)ᵀ v), x1 forward-mode (J(x1) u)
        count("forward", probes * (tf.shape(x1)[0] + tf.shape(x2)[0]))
        count("backward", probes * tf.shape(x2)[0])
        return tf.vectorized_map(one, v)

    return products


def sketch_distance(products_teacher, products_student, n_columns, normalization: str = "per_example"):
    """The estimate (c/K)·Σ_κ ‖Θ0 v_κ − Θˢ v_κ‖² from the two models' products (K, N1, k).

    ``n_columns`` is N2 (the probes' length / k), used by ``"per_entry"`` only."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}. You passed: {normalization!r}")
    a = tf.convert_to_tensor(products_teacher)
    per_probe = tf.reduce_sum(tf.square(a - products_student), axis=[1, 2])
    n1 = tf.cast(tf.shape(a)[1], a.dtype)
    if normalization == "per_entry":
        k = tf.cast(tf.shape(a)[2], a.dtype)
        scale = n1 * tf.cast(n_columns, a.dtype) * k * k
    else:
        scale = n1 * n1
    return tf.reduce_mean(per_probe) / scale, per_probe / scale


def kernel_distance_sketch(teacher, student, x, x_teacher, x_student=None, masks=None, probes: int = 8,
                           seed: Sequence[int] = (0, 0), student_kernel: str = "masked",
                           normalization: str = "per_example", return_samples: bool = False):
    """An unbiased estimate of :func:`tf_awt.kernel_distance` ``(Θ0(x, x_teacher), Θˢ(x, x_student))``.

    Matrix-free (module docstring): ``probes`` vector–Jacobian and Jacobian–vector products per
    model instead of two (N·k)² kernels. Its gradient w.r.t. the student's weights (under a
    ``tf.GradientTape``) is an unbiased estimate of the exact gradient; the teacher's side is a
    constant.

    Args:
      teacher: the dense model at θ0 (a built tf_keras or Keras 3 model, logits).
      student: the sparse model (its tfmot wrappers' masks apply), or the same architecture.
      x: clean inputs (N1, ...): the kernels' rows.
      x_teacher: the teacher's second inputs (N2, ...), e.g. its PGD examples.
      x_student: the student's second inputs (default: ``x_teacher``).
      masks: the student's masks, a dict from a layer name to a 0/1 array (default None).
      probes: K, the number of Rademacher probes (default 8); the standard error falls as 1/√K.
      seed: stateless seed of the probes, two integers (default (0, 0)).
      student_kernel: ``"masked"`` (default) or ``"full"``.
      normalization: ``"per_example"`` (default, 1/N1²) or ``"per_entry"``, as
        :func:`tf_awt.kernel_distance`.
      return_samples: also return the K single-probe estimates (their mean is the estimate; their
        standard deviation / √K its standard error).

    Returns:
      The scalar estimate, or ``(estimate, samples)`` when ``return_samples``.
    """

    probes = _validate.integer(probes, "probes", low=1)
    teacher, student = as_tf_keras(teacher), as_tf_keras(student)
    x_student = x_teacher if x_student is None else x_student
    dtype = student.trainable_variables[0].dtype if student.trainable_variables else tf.float32
    x, x_teacher, x_student = (tf.cast(tf.convert_to_tensor(t), dtype) for t in (x, x_teacher, x_student))
    k = student.outputs[0].shape[-1] if getattr(student, "outputs", None) else None
    if k is None:
        k = student(x[:1]).shape[-1]
    v = draw_probes(seed, probes, tf.shape(x_teacher)[0], k, dtype)
    theta_v = tf.stop_gradient(tangent_products_fn(teacher)(x, x_teacher, v))
    theta_s_v = tangent_products_fn(student, student_kernel)(x, x_student, v, masks=masks)
    estimate, samples = sketch_distance(theta_v, theta_s_v, tf.shape(x_teacher)[0], normalization)
    return (estimate, samples) if return_samples else estimate
