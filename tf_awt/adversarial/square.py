"""The Square attack (Andriushchenko et al., ECCV 2020), L∞, native and compiled: the black-box
part of the standard AutoAttack. It uses the model's outputs only, never a gradient, so it is what
sees through gradient masking.

It minimizes the margin m(x) = z_y − max_{j≠y} z_j by random search. The start is vertical stripes
(each column of each channel at ±ε). Each query draws one square window per example, of side
s = round(√(p·H·W)) pixels, and sets it to ±ε (one sign per channel) around the clean input. The
proposal is kept if it lowers the margin. An example stops counting once its margin is ≤ 0. The
share of pixels p starts at ``p_init`` (default 0.8, the standard AutoAttack) and halves at the
published query fractions of the budget (10, 50, 200, 500, 1,000, 2,000, 4,000, 6,000 and 8,000
of 10,000).

Inputs are viewed as (H, W, C) images: rank-3 inputs as they are, (H, W) as one channel, and a
flat vector of d = h² values as an h × h image (the MNIST MLP). Any other flat vector is a 1 × d
strip with windows of round(p·d) values. Positions and signs are drawn per example from stateless
seeds (the published code shares one position across the batch; per-example draws make an
example's attack independent of its batch-mates).

TensorFlow is imported inside the functions that use it.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple

import numpy as np

__all__ = ["square_linf", "image_layout", "p_schedule"]

_FRACTIONS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, queries: int) -> np.ndarray:
    """The share of pixels changed at each query (the published schedule, rescaled to ``queries``)."""
    it = (np.arange(queries) / max(queries, 1) * 10000).astype(int)
    halvings = np.searchsorted(np.array(_FRACTIONS), it, side="left")
    return (p_init / 2.0 ** halvings).astype(np.float32)


def image_layout(shape) -> Tuple[int, int, int]:
    """(H, W, C) of one input of ``shape`` (without the batch axis)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (side, side, 1) if side * side == shape[0] else (1, shape[0], 1)
    raise ValueError(f"the Square attack needs inputs of rank 1 to 3 (one example). You passed shape {shape}")


def _sides(p: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    if height == 1:
        return np.ones_like(p, np.int32), np.clip(np.round(p * width), 1, width - 1).astype(np.int32)
    side = np.clip(np.round(np.sqrt(p * height * width)), 1, min(height, width) - 1).astype(np.int32)
    return side, side


def _margin(forward, images, y, shape):
    import tensorflow as tf

    logits = forward(tf.reshape(images, shape))
    z_y = tf.gather(logits, y, batch_dims=1)
    others = tf.where(tf.one_hot(y, tf.shape(logits)[1]) > 0, tf.cast(-np.inf, logits.dtype), logits)
    return z_y - tf.reduce_max(others, axis=1)


def square_linf(forward: Callable, x, y, *, eps: float, clip: Tuple[float, float], queries: int, seed,
                p_init: float = 0.8):
    """One Square run on a batch: ``(adversarial inputs, fooled per example)``. Build it inside a
    ``tf.function``; the query loop is a ``tf.while_loop``. ``seed``: a shape-(2,) integer tensor."""
    import tensorflow as tf

    lo, hi = tf.constant(clip[0], x.dtype), tf.constant(clip[1], x.dtype)
    shape = tf.shape(x)
    height, width, channels = image_layout(x.shape[1:])
    batch = shape[0]
    y = tf.cast(y, tf.int32)
    images = tf.reshape(x, [batch, height, width, channels])
    stripes = tf.sign(tf.random.stateless_uniform([batch, 1, width, channels], seed, -1.0, 1.0, dtype=x.dtype))
    best = tf.clip_by_value(images + eps * stripes, lo, hi)
    margin = _margin(forward, best, y, shape)
    side_h, side_w = (tf.constant(v) for v in _sides(p_schedule(p_init, queries), height, width))
    rows, cols = tf.range(height)[None, :, None, None], tf.range(width)[None, None, :, None]

    def body(i, best, margin):
        draw = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i + 1)
        draws = tf.random.stateless_uniform([batch, 2 + channels], draw, dtype=x.dtype)
        top = tf.cast(draws[:, 0] * tf.cast(height - side_h[i] + 1, x.dtype), tf.int32)
        left = tf.cast(draws[:, 1] * tf.cast(width - side_w[i] + 1, x.dtype), tf.int32)
        signs = tf.sign(draws[:, 2:] - 0.5)[:, None, None, :]
        inside = ((rows >= top[:, None, None, None]) & (rows < (top + side_h[i])[:, None, None, None])
                  & (cols >= left[:, None, None, None]) & (cols < (left + side_w[i])[:, None, None, None]))
        proposal = tf.where(inside, tf.clip_by_value(images + eps * signs, lo, hi), best)
        active = margin > 0
        new_margin = _margin(forward, proposal, y, shape)
        keep = tf.logical_and(active, new_margin < margin)
        return (i + 1, tf.where(keep[:, None, None, None], proposal, best), tf.where(keep, new_margin, margin))

    invariants = (tf.TensorShape([]), tf.TensorShape([None, height, width, channels]), tf.TensorShape([None]))
    _, best, margin = tf.while_loop(lambda i, b, m: i < queries, body, (tf.constant(0), best, margin),
                                    shape_invariants=invariants)
    return tf.stop_gradient(tf.reshape(best, shape)), margin <= 0
