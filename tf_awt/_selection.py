"""Top-k mask selection, global or layer-wise, with a guard against layer collapse (private).

Graph-friendly: works on tensors inside ``tf.function``. The number of kept weights is exact:
``round(density * total)`` globally (``scope="global"``) or per layer (``scope="layer"``); ties are
broken by ``tf.math.top_k``'s order, never by a threshold that could keep too many.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import tensorflow as tf

SCOPES = ("global", "layer")


def kept_count(size: int, density: float) -> int:
    return int(min(size, max(1, round(density * size))))


def reserved_per_layer(shapes: Sequence[tf.TensorShape]) -> List[int]:
    """The collapse guard: each layer keeps at least one weight per output unit (last axis)."""
    return [int(min(np.prod(s), s[-1])) for s in shapes]


def top_k_masks(scores: Sequence[tf.Tensor], density: float, scope: str = "global") -> List[tf.Tensor]:
    """0/1 masks keeping the highest ``scores`` at ``density``.

    Global scope keeps ``round(density * total)`` weights over all layers, of which each layer's
    top ``reserved_per_layer`` are reserved first (so no layer collapses to zero weights, provided
    the budget covers the reserve; otherwise the reserve is shrunk to one weight per layer).
    """
    if scope not in SCOPES:
        raise ValueError(f"mask scope must be one of {SCOPES}. You passed: {scope!r}")
    shapes = [s.shape for s in scores]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = [tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores]
    if scope == "layer":
        return [
            tf.reshape(_keep_top(f, kept_count(n, density)), shape)
            for f, n, shape in zip(flat, sizes, shapes)
        ]
    total = sum(sizes)
    budget = kept_count(total, density)
    reserve = reserved_per_layer(shapes)
    if sum(reserve) > budget:
        reserve = [1] * len(sizes)
    boosted = []
    for f, r in zip(flat, reserve):
        # Scores are non-negative in every method; the reserved ones are lifted above all others.
        top = _keep_top(f, r)
        boosted.append(tf.where(top > 0, tf.fill(tf.shape(f), np.float32(np.inf)), f))
    keep = _keep_top(tf.concat(boosted, axis=0), budget)
    return [tf.reshape(part, shape) for part, shape in zip(tf.split(keep, sizes), shapes)]


def _keep_top(flat: tf.Tensor, k: int) -> tf.Tensor:
    n = int(flat.shape[0])
    if k >= n:
        return tf.ones_like(flat)
    # NaN-free and stable: top_k returns exactly k indices.
    _, idx = tf.math.top_k(flat, k=k, sorted=False)
    return tf.scatter_nd(idx[:, None], tf.ones([k], flat.dtype), [n])
