r"""The two distances of the AWT objective (eq. 13 of the paper).

.. math::

    \mathcal{L}_{awt}(w) = \underbrace{\tfrac{1}{N}\,\lVert f_{\theta_0}(\tilde X_0)
        - f_{m\odot w}(\tilde X^s_0)\rVert^2}_{\text{target distance}}
      + \gamma^2 \underbrace{\tfrac{1}{N^2}\,\lVert \Theta_0(X, \tilde X_0)
        - \Theta^s(X, \tilde X^s_0)\rVert_F^2}_{\text{kernel distance}}

``normalization="per_example"`` (default) divides by the number of examples N (target) and N²
(kernel) as eq. (13) writes. ``normalization="per_entry"`` takes the mean over all entries (the
target's N·k, the kernel's N²·k² or, diagonal, N·k²), as Neural Tangent Transfer's public code does.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["target_distance", "kernel_distance", "NORMALIZATIONS"]

from tf_awt._options import NORMALIZATIONS  # noqa: E402  (defined without TensorFlow)


def _check(a, b, what, ranks, normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}. You passed: {normalization!r}")
    a = tf.convert_to_tensor(a)
    b = tf.convert_to_tensor(b, dtype=a.dtype)
    if a.shape.rank not in ranks:
        raise ValueError(f"{what} takes tensors of rank {ranks}. You passed shape: {tuple(a.shape)}")
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{what} needs two tensors of one shape. You passed shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def target_distance(f_dense_adv, f_sparse_adv, normalization="per_example"):
    """(1/N)·‖f_dense_adv − f_sparse_adv‖² for outputs of shape (N, k).

    Args:
      f_dense_adv: the dense teacher's outputs on its adversarial examples, (N, k).
      f_sparse_adv: the sparse student's outputs on its adversarial examples, (N, k).
      normalization: "per_example" (default, eq. 13: divide by N) or "per_entry" (mean).
    """
    a, b = _check(f_dense_adv, f_sparse_adv, "target_distance", (2,), normalization)
    sq = tf.reduce_sum(tf.square(a - b))
    if normalization == "per_entry":
        return sq / tf.cast(tf.size(a), a.dtype)
    return sq / tf.cast(tf.shape(a)[0], a.dtype)


def kernel_distance(theta_dense, theta_sparse, normalization="per_example"):
    """(1/N²)·‖theta_dense − theta_sparse‖_F² for kernels (N, N, k, k) or diagonals (N, k, k).

    Args:
      theta_dense: the dense teacher's MTK Θ0(X, X̃0).
      theta_sparse: the sparse student's MTK Θs(X, X̃0ˢ), same shape.
      normalization: "per_example" (default, eq. 13: divide by N², N = examples, also for a
        diagonal kernel, whose other entries S-AWT simply drops) or "per_entry" (mean).
    """
    a, b = _check(theta_dense, theta_sparse, "kernel_distance", (3, 4), normalization)
    sq = tf.reduce_sum(tf.square(a - b))
    if normalization == "per_entry":
        return sq / tf.cast(tf.size(a), a.dtype)
    n = tf.cast(tf.shape(a)[0], a.dtype)
    return sq / (n * n)
