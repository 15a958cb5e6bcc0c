r"""Top-k mask selection: global, layer-wise or at Erdős–Rényi-Kernel layer densities, or N:M (private).

Graph-friendly: works on tensors inside ``tf.function``. The number of kept weights is exact:
``round(density * total)`` globally (``scope="global"``, with a guard against layer collapse),
``round(density * n_l)`` in every layer (``scope="layer"``), or ``round(d_l * n_l)`` in layer
:math:`l` at the ERK densities of :func:`erk_densities` (``scope="erk"``); ties are broken by
``tf.math.top_k``'s order, never by a threshold that could keep too many.

An N:M ``pattern`` (e.g. "2:4", what sparse tensor cores run) replaces the budget: each output
unit's input weights — a Dense kernel's column, a Conv2D kernel's (h, w, c_in) weights of one
filter, flattened with c_in fastest — are split into consecutive groups of M and the N highest
scores of every group are kept (:func:`nm_masks`); a trailing group of r < M weights keeps min(N, r).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_awt._options import SCOPES, UNSTRUCTURED, parse_pattern  # noqa: E402,F401  (defined without TensorFlow)


def nm_density(shapes: Sequence, n: int, m: int) -> float:
    """The fraction of weights an N:M pattern keeps over layers of these shapes (N/M when M divides every fan-in)."""
    kept = total = 0
    for shape in shapes:
        fan_in, units = int(np.prod(shape[:-1])), int(shape[-1])
        kept += units * (fan_in // m * n + min(n, fan_in % m))
        total += units * fan_in
    return kept / total


def nm_masks(scores: Sequence[tf.Tensor], n: int, m: int) -> List[tf.Tensor]:
    """0/1 masks keeping the N highest scores of every group of M consecutive input weights (module docstring)."""
    return [_nm_mask(s, n, m) for s in scores]


def stepped_masks(scores: Sequence[tf.Tensor], density: float, scope: str, pattern: str,
                   layer_densities: Optional[Sequence[float]] = None, final_density: float = 1.0) -> List[tf.Tensor]:
    """:func:`top_k_masks` at an intermediate ``density`` of an iterative method (SynFlow, Cosentino et al.).

    With an N:M pattern each step keeps max(N, round(density·M)) of every M (all M while that
    reaches M), so the steps tighten towards the pattern and the last one (density N/M) is N:M.
    With explicit final ``layer_densities`` d_l (at overall ``final_density`` d) the step keeps
    :math:`d_l^{t}` in layer l, t = log(density)/log(d): every layer shrinks geometrically at its
    own rate and reaches d_l at the last step (the Frankle–Carbin rates per round when the steps
    are its rounds).
    """
    nm = parse_pattern(pattern)
    if nm is None:
        if layer_densities is not None:
            t = 1.0 if final_density >= 1.0 else float(np.log(density) / np.log(final_density))
            return top_k_masks(scores, density, scope, layer_densities=[d ** t for d in layer_densities])
        return top_k_masks(scores, density, scope)
    n, m = nm
    return nm_masks(scores, min(m, max(n, int(round(density * m)))), m)


def _nm_mask(score: tf.Tensor, n: int, m: int) -> tf.Tensor:
    shape = score.shape
    fan_in, units = int(np.prod(shape[:-1])), int(shape[-1])
    pad = -fan_in % m
    rows = tf.transpose(tf.reshape(tf.cast(score, tf.float32), [fan_in, units]))  # (units, fan_in)
    rows = tf.pad(rows, [[0, 0], [0, pad]], constant_values=np.float32(-np.inf))
    _, idx = tf.math.top_k(tf.reshape(rows, [units, (fan_in + pad) // m, m]), k=n, sorted=False)
    keep = tf.reduce_sum(tf.one_hot(idx, m, dtype=tf.float32), axis=-2)  # (units, groups, m)
    keep = tf.reshape(keep, [units, fan_in + pad])[:, :fan_in]  # padding picked in a short group is dropped
    return tf.reshape(tf.transpose(keep), shape)


def kept_count(size: int, density: float) -> int:
    return int(min(size, max(1, round(density * size))))


def reserved_per_layer(shapes: Sequence[tf.TensorShape]) -> List[int]:
    """The collapse guard's reserve: as many of each layer's top weights as it has output units (last
    axis). They are the layer's highest scores, not one per unit: a unit may still end with no weight."""
    return [int(min(np.prod(s), s[-1])) for s in shapes]


def erk_densities(shapes: Sequence, density: float) -> List[float]:
    r"""Per-layer densities of the Erdős–Rényi-Kernel allocation (Evci et al., 2020, RigL).

    Layer :math:`l` with weight shape :math:`(s_1, \dots, s_r)` (Dense: :math:`(n_{in}, n_{out})`;
    Conv2D: :math:`(h, w, c_{in}, c_{out})`) gets :math:`d_l = \min(1, \epsilon \sum_i s_i / \prod_i s_i)`,
    with :math:`\epsilon` chosen so that :math:`\sum_l d_l n_l = \text{density} \sum_l n_l`: layers whose
    :math:`d_l` would exceed 1 are made dense one at a time (the largest first) and
    :math:`\epsilon` is solved again over the rest.
    """
    sizes = [float(np.prod(s)) for s in shapes]
    raw = [float(sum(int(d) for d in s)) / n for s, n in zip(shapes, sizes)]
    dense: set = set()
    while True:
        rest = [i for i in range(len(sizes)) if i not in dense]
        if not rest:
            return [1.0] * len(sizes)
        budget = density * sum(sizes) - sum(sizes[i] for i in dense)
        eps = budget / sum(raw[i] * sizes[i] for i in rest)
        largest = max(rest, key=lambda i: raw[i])
        if eps * raw[largest] <= 1.0:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(sizes))]
        dense.add(largest)


FRANKLE_CARBIN_KEEP = {"hidden": 0.8, "conv": 0.9, "output": 0.9}
"""Fraction of a layer's weights kept per pruning round in Frankle & Carbin (2019): fully connected
layers 20% pruned per round, convolutions and the output layer 10% (LeNet-300-100, Conv-2/4/6)."""


def _frankle_carbin_keep(shapes: Sequence) -> List[float]:
    last = len(shapes) - 1
    return [FRANKLE_CARBIN_KEEP["output" if i == last else "conv" if len(s) == 4 else "hidden"]
            for i, s in enumerate(shapes)]


def frankle_carbin_round_densities(shapes: Sequence, rounds: float) -> List[float]:
    """Layer densities after ``rounds`` rounds of Frankle & Carbin's iterative pruning:
    :math:`k_l^{n}` with :math:`k_l` from :data:`FRANKLE_CARBIN_KEEP` (the last layer is the output)."""
    return [k ** float(rounds) for k in _frankle_carbin_keep(shapes)]


def frankle_carbin_rounds(shapes: Sequence, density: float) -> float:
    r"""The (real) number of Frankle–Carbin rounds n with :math:`\sum_l n_l k_l^n = \text{density} \sum_l n_l`
    (bisection: the left side falls with n); 0 at density 1."""
    sizes = [float(np.prod(s)) for s in shapes]
    keep = _frankle_carbin_keep(shapes)
    total = sum(sizes)

    def overall(n):
        return sum(size * k ** n for size, k in zip(sizes, keep)) / total

    if density >= 1.0:
        return 0.0
    low, high = 0.0, 1.0
    while overall(high) > density:
        high *= 2.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if overall(mid) > density else (low, mid)
    return high


def frankle_carbin_densities(shapes: Sequence, density: float) -> List[float]:
    """Layer densities of the Frankle–Carbin allocation at overall ``density``: after
    :func:`frankle_carbin_rounds` rounds of :func:`frankle_carbin_round_densities`. The paper's
    density grid {51.3, 16.9, 8.7, 3.6, 1.8}% is LeNet-300-100 after n = 3, 8, 11, 15, 18 rounds."""
    return frankle_carbin_round_densities(shapes, frankle_carbin_rounds(shapes, density))


def layer_allocation(config, shapes, names) -> Optional[List[float]]:
    """The per-layer densities every method keeps (``config.layer_densities``, or the
    Frankle–Carbin allocation for ``scope="frankle_carbin"``), or None for global/layer/ERK top-k."""
    explicit = config.resolved_layer_densities(names, shapes)
    if explicit is not None:
        return explicit
    if config.scope == "frankle_carbin":
        return frankle_carbin_densities(shapes, config.density)
    return None


def top_k_masks(scores: Sequence[tf.Tensor], density: float, scope: str = "global",
                pattern: str = UNSTRUCTURED, layer_densities: Optional[Sequence[float]] = None) -> List[tf.Tensor]:
    """0/1 masks keeping the highest ``scores`` at ``density``.

    Global scope keeps ``round(density * total)`` weights over all layers, of which each layer's
    top ``reserved_per_layer`` (as many as its output units) are reserved first, so no layer
    collapses to zero weights, provided the budget covers the reserve (otherwise the reserve is
    shrunk to one weight per layer). ``layer_densities`` (one per score tensor) keeps
    ``round(d_l * n_l)`` in layer l whatever ``scope`` says; ``scope="frankle_carbin"`` computes
    them (:func:`frankle_carbin_densities`). An N:M ``pattern`` keeps N of every M instead
    (:func:`nm_masks`; ``density``, ``scope`` and ``layer_densities`` are then not used).
    """
    nm = parse_pattern(pattern)
    if nm is not None:
        return nm_masks(scores, *nm)
    if scope not in SCOPES:
        raise ValueError(f"mask scope must be one of {SCOPES}. You passed: {scope!r}")
    shapes = [s.shape for s in scores]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = [tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores]
    if layer_densities is None and scope == "frankle_carbin":
        layer_densities = frankle_carbin_densities(shapes, density)
    if layer_densities is not None or scope in ("layer", "erk"):
        densities = (list(layer_densities) if layer_densities is not None
                     else erk_densities(shapes, density) if scope == "erk" else [density] * len(sizes))
        return [
            tf.reshape(_keep_top(f, kept_count(n, d)), shape)
            for f, n, d, shape in zip(flat, sizes, densities, shapes)
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


def straight_through_masks(scores: Sequence[tf.Tensor], density: float, scope: str = "global",
                           pattern: str = UNSTRUCTURED, layer_densities: Optional[Sequence[float]] = None) -> List[tf.Tensor]:
    r""":func:`top_k_masks` of ``scores`` in the forward pass, the identity in the backward pass.

    :math:`m(s) = \mathrm{topk}(s) + s - \mathrm{sg}(s)`: the value is exactly the 0/1 top-k mask
    (``s - sg(s)`` is exactly zero), and :math:`\partial m / \partial s = I` (straight-through, as
    in edge-popup and HYDRA), so a loss's gradient with respect to the mask reaches every score,
    kept or pruned.
    """
    hard = top_k_masks(scores, density, scope, pattern, layer_densities)
    return [tf.cast(h, s.dtype) + (s - tf.stop_gradient(s)) for h, s in zip(hard, scores)]
