r"""The kernel engine's contractions: Gram products of per-example gradients, masked and in a chosen precision.

For per-example gradients laid out weight-axis first, :math:`t_1 \in \mathbb{R}^{P \times N_1 \times k}`,
:math:`t_2 \in \mathbb{R}^{P \times N_2 \times k}`, and a 0/1 weight mask :math:`m \in \{0,1\}^P`,

.. math::

    \Theta[i, j, c, d] = \sum_p m_p\, t_1[p, i, c]\, t_2[p, j, d]
    \qquad(\text{diagonal: } \Theta[i, c, d] = \sum_p m_p\, t_1[p, i, c]\, t_2[p, i, d]).

The mask enters **once** (the documented student kernel :math:`\sum_p m_p \partial_p f \partial_p f'^\top`
with :math:`\partial_p` the derivative w.r.t. the effective weight :math:`(m \odot w)_p`), so
:math:`\partial\Theta/\partial m_p = t_1[p] \otimes t_2[p]` is non-zero for pruned weights too,
which is what the score search (``optimize="scores"``) needs.

:func:`masked_gram` computes the value and the gradients w.r.t. :math:`t_1, t_2` from the kept
rows only (gathered: the cost scales with the number of kept weights, not P); its gradient
w.r.t. :math:`m` needs every row and is built only when a caller differentiates w.r.t. the mask
(inside a ``tf.function`` an unused gradient is never executed).

``precision="bfloat16"`` runs the matrix products on bfloat16 operands (native on CPUs with
AVX512-BF16 / AMX) with float32 results: the contraction axis is split into ``_CHUNKS`` pieces
whose bfloat16 products are summed in float32, so the rounding of each product's output
(relative 2⁻⁹) averages out over the pieces instead of landing on Θ whole.
"""
from __future__ import annotations

import tensorflow as tf

_CHUNKS = 16


def _chunked(t, axis_size_multiple: int):
    """Pads axis 0 of ``t`` with zeros to a multiple of ``axis_size_multiple`` and splits it: (C, P/C, ...)."""
    p = tf.shape(t)[0]
    pad = (-p) % axis_size_multiple
    t = tf.pad(t, [[0, pad]] + [[0, 0]] * (t.shape.rank - 1))
    return tf.reshape(t, tf.concat([[axis_size_multiple, -1], tf.shape(t)[1:]], axis=0))


def matmul(a, b, precision: str = "float32", transpose_a: bool = False):
    """``a @ b`` (``aᵀ @ b`` with ``transpose_a``) for rank-2 float32 tensors; bfloat16 products
    are summed in float32 over ``_CHUNKS`` pieces of the contraction axis."""
    if precision == "float32":
        return tf.matmul(a, b, transpose_a=transpose_a)
    if not transpose_a:
        a = tf.transpose(a)
    ca = _chunked(tf.cast(a, tf.bfloat16), _CHUNKS)  # (C, K/C, A)
    cb = _chunked(tf.cast(b, tf.bfloat16), _CHUNKS)  # (C, K/C, B)
    return tf.reduce_sum(tf.cast(tf.matmul(ca, cb, transpose_a=True), tf.float32), axis=0)


def _einsum(equation: str, a, b, precision: str):
    if precision == "float32":
        return tf.einsum(equation, a, b)
    return tf.cast(tf.einsum(equation, tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)), tf.float32)


def gram(t1, t2, diagonal: bool, precision: str = "float32"):
    """Σ_p t1[p, i, c] t2[p, j, d] as (N1, N2, k, k), or Σ_p t1[p, i, c] t2[p, i, d] as (N, k, k)."""
    k = t1.shape[-1]
    if diagonal:
        if precision == "float32":
            return tf.einsum("pic,pid->icd", t1, t2)
        c1, c2 = _chunked(tf.cast(t1, tf.bfloat16), _CHUNKS), _chunked(tf.cast(t2, tf.bfloat16), _CHUNKS)
        return tf.reduce_sum(tf.cast(tf.einsum("xpic,xpid->xicd", c1, c2), tf.float32), axis=0)
    n1, n2 = tf.shape(t1)[1], tf.shape(t2)[1]
    flat1 = tf.reshape(t1, [tf.shape(t1)[0], -1])
    flat2 = flat1 if t2 is t1 else tf.reshape(t2, [tf.shape(t2)[0], -1])
    out = matmul(flat1, flat2, precision, transpose_a=True)  # (N1 k, N2 k)
    return tf.transpose(tf.reshape(out, [n1, k, n2, k]), [0, 2, 1, 3])


def _left(t2, dout, diagonal: bool, precision: str):
    """∂⟨dout, Θ⟩/∂t1 for Θ = gram(t1, t2): Σ_{j,d} dout[i, j, c, d] t2[p, j, d]."""
    return _einsum("icd,pid->pic" if diagonal else "ijcd,pjd->pic", dout, t2, precision)


def _right(t1, dout, diagonal: bool, precision: str):
    """∂⟨dout, Θ⟩/∂t2: Σ_{i,c} dout[i, j, c, d] t1[p, i, c]."""
    return _einsum("icd,pic->pid" if diagonal else "ijcd,pic->pjd", dout, t1, precision)


def masked_gram(t1, t2, m, diagonal: bool, precision: str = "float32"):
    """Σ_p m_p t1[p] ⊗ t2[p] for a 0/1 mask ``m`` (P,), computed from the kept rows only.

    Gradients: w.r.t. ``t1``/``t2`` from the kept rows (zero on pruned rows, where the value does
    not depend on them); w.r.t. ``m`` the exact :math:`\\sum t_1[p] \\otimes t_2[p] \\cdot dout`
    on every row (built only when asked for).
    """

    if t2 is t1:
        return _masked_self(t1, m, diagonal, precision)

    @tf.custom_gradient
    def _masked(t1, t2, m):
        kept = tf.where(m > 0)[:, 0]
        k1, k2 = tf.gather(t1, kept), tf.gather(t2, kept)

        def grad(dout):
            rows = kept[:, None]
            d1 = tf.scatter_nd(rows, _left(k2, dout, diagonal, precision), tf.shape(t1, out_type=tf.int64))
            d2 = tf.scatter_nd(rows, _right(k1, dout, diagonal, precision), tf.shape(t2, out_type=tf.int64))
            dm = tf.reduce_sum(t1 * _left(t2, dout, diagonal, precision), axis=[1, 2])
            return d1, d2, dm

        return gram(k1, k2, diagonal, precision), grad

    return _masked(t1, t2, m)


def _masked_self(t, m, diagonal: bool, precision: str):
    """``masked_gram(t, t, m)``: the gathered rows once, both sides' gradients summed."""

    @tf.custom_gradient
    def _masked(t, m):
        kept = tf.where(m > 0)[:, 0]
        k = tf.gather(t, kept)

        def grad(dout):
            d = _left(k, dout, diagonal, precision) + _right(k, dout, diagonal, precision)
            dm = tf.reduce_sum(t * _left(t, dout, diagonal, precision), axis=[1, 2])
            return tf.scatter_nd(kept[:, None], d, tf.shape(t, out_type=tf.int64)), dm

        out = gram(k, k, diagonal, precision)
        return out, grad

    return _masked(t, m)


def contract(g1, g2, mask, diagonal: bool, precision: str = "float32"):
    """Θ from per-example gradients ``g`` of shape (N, k, P) and a (P,) 0/1 mask or None."""
    t1 = tf.transpose(g1, [2, 0, 1])
    t2 = t1 if g2 is g1 else tf.transpose(g2, [2, 0, 1])
    if mask is None:
        return gram(t1, t2, diagonal, precision)
    return masked_gram(t1, t2, mask, diagonal, precision)
