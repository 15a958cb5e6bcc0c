"""One-shot pruning-at-initialization baselines, at the same density as AWT.

Each scores every prunable weight at θ0 and keeps the top ``density`` fraction with the same
selection as AWT (global by default, collapse guard included):

* ``random``: uniform random scores (seeded).
* ``magnitude``: :math:`|\\theta_0|`.
* ``snip`` (Lee et al., 2019): :math:`|g \\odot \\theta_0|`, g the cross-entropy gradient on
  the first batch.
* ``synflow`` (Tanaka et al., 2020): 100 iterations; the network is linearized with
  :math:`|\\theta|`, scored with :math:`|\\partial R / \\partial \\theta \\odot \\theta|` for
  :math:`R = \\mathbf{1}^\\top f(\\mathbf{1})`, and pruned along the exponential schedule
  :math:`p^{t/T}`.
* ``erk``: uniform random scores kept at the Erdős–Rényi-Kernel layer densities (Evci et al.,
  2020; :func:`tf_awt.tickets._selection.erk_densities`), whatever ``scope`` says.
* ``random_layerwise``: the layer-wise shuffle of Frankle et al. (2021, "Pruning neural networks
  at initialization: why are we missing the mark?"): each layer of a reference ticket keeps
  exactly its number of weights, at uniformly random positions (:func:`layerwise_shuffle`). If
  it matches the reference, the reference's mask carries no information beyond its layer
  densities. The reference (``SearchConfig.reference``) is found by :func:`tf_awt.find_ticket`.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt.engine import _layers, layer_rules
from tf_awt.engine.passes import count_forward
from tf_awt.tickets import _selection
from tf_awt import _validate
from tf_awt.tickets.find import reference_ticket

__all__ = ["one_shot_masks", "layerwise_shuffle", "find_one_shot", "find_layerwise_shuffle"]


def _kernel_layers(model, names):
    layers = {l.name: l for l in _layers.iter_layers(model)}
    return [layers[n] for n in names]


def one_shot_masks(model, dataset, config) -> Dict[str, np.ndarray]:
    layers = layer_rules.prunable_layers(model)
    names = [layer.name for layer in layers]
    kernels = [l.kernel for l in layers]
    scope = config.scope
    allocation = _selection.layer_allocation(config, [k.shape for k in kernels], names)
    if config.method in ("random", "erk"):
        rng = np.random.default_rng(config.seed)
        scores = [tf.constant(rng.random(k.shape), tf.float32) for k in kernels]
        if config.method == "erk":
            scope, allocation = "erk", None
    elif config.method == "magnitude":
        scores = [tf.abs(k) for k in kernels]
    elif config.method == "snip":
        x, y = next(iter(dataset))[:2]
        with tf.GradientTape() as tape:
            x = tf.cast(x, kernels[0].dtype)
            logits = count_forward(model(x, training=False), x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int64), logits))
        grads = tape.gradient(loss, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        scores = [tf.abs(g * k) for g, k in zip(grads, kernels)]
    elif config.method == "synflow":
        return _synflow(model, names, config.density, config.scope, config.pattern, allocation)
    else:
        raise ValueError(f"one-shot methods are random, magnitude, snip, synflow, erk. You passed: {config.method!r}")
    masks = _selection.top_k_masks(scores, config.density, scope, config.pattern, allocation)
    return {n: m.numpy().astype(np.float32) for n, m in zip(names, masks)}


def _synflow(model, names, density, scope, pattern, allocation=None, iterations: int = 100) -> Dict[str, np.ndarray]:
    clone = tf_keras.models.clone_model(model)
    clone.set_weights([np.abs(w) for w in model.get_weights()])  # linearize: |θ|
    layers = _kernel_layers(clone, names)
    abs_kernels = [tf.constant(l.kernel.numpy()) for l in layers]
    masks = [tf.ones_like(k) for k in abs_kernels]
    ones = tf.ones((1,) + tuple(model.inputs[0].shape[1:]), abs_kernels[0].dtype)
    for t in range(1, iterations + 1):
        for layer, k, m in zip(layers, abs_kernels, masks):
            layer.kernel.assign(k * m)
        with tf.GradientTape() as tape:
            r = tf.reduce_sum(tf.cast(count_forward(clone(ones, training=False), ones), tf.float64))
        grads = tape.gradient(r, [l.kernel for l in layers], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        scores = [tf.abs(g * l.kernel) for g, l in zip(grads, layers)]
        masks = _selection.stepped_masks(scores, density ** (t / iterations), scope, pattern, allocation, density)
        masks = [tf.cast(m, k.dtype) for m, k in zip(masks, abs_kernels)]
    return {n: m.numpy().astype(np.float32) for n, m in zip(names, masks)}


def layerwise_shuffle(masks: Dict[str, np.ndarray], seed: int) -> Dict[str, np.ndarray]:
    """Random masks with exactly as many kept weights in each layer as ``masks`` (a permutation of
    each layer's entries, seeded)."""
    rng = np.random.default_rng(seed)
    return {name: rng.permutation(np.asarray(m, np.float32).ravel()).reshape(np.shape(m)) for name, m in masks.items()}


def find_one_shot(model, data, config, options) -> Dict[str, np.ndarray]:
    """The ``find`` of methods random, magnitude, snip, synflow and erk (:mod:`tf_awt.tickets.methods`)."""

    dataset = _validate.batches(model, data, options.batch_size, config.attack)
    with _validate.reraise_data_errors():
        return one_shot_masks(model, dataset, config)


def find_layerwise_shuffle(model, data, config, options) -> Dict[str, np.ndarray]:
    """The ``find`` of ``random_layerwise``: the reference ticket's layer counts, shuffled (seeded)."""

    _validate.batches(model, data, options.batch_size, config.attack)  # the data is checked even for a saved reference
    return layerwise_shuffle(reference_ticket(model, data, config, options).masks, config.seed)
