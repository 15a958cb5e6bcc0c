"""One-shot baselines against small independent references (numpy, float64): SNIP's and SynFlow's
scores are what their papers define, not magnitude pruning under another name."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt import _selection

L = tf_keras.layers


def relu_mlp(seed=0):
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([L.Input((7,)), L.Dense(6, activation="relu", name="a"), L.Dense(5, activation="relu", name="b"),
                                 L.Dense(3, name="c")])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    return model


def _weights(model):
    return [(layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)) for layer in model.layers]


def snip_reference(model, x, y):
    """|∂ mean cross-entropy / ∂W ⊙ W| by hand: forward and backward of the ReLU MLP in numpy."""
    params = _weights(model)
    acts, pre = [x.astype(np.float64)], []
    for i, (w, b) in enumerate(params):
        z = acts[-1] @ w + b
        pre.append(z)
        acts.append(np.maximum(z, 0) if i < len(params) - 1 else z)
    logits = acts[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(p.shape[1])[y]) / len(x)  # d loss / d logits
    scores = [None] * len(params)
    for i in reversed(range(len(params))):
        w, _ = params[i]
        scores[i] = np.abs((acts[i].T @ delta) * w)
        if i:
            delta = (delta @ w.T) * (pre[i - 1] > 0)
    return scores


def synflow_reference(model, density, iterations=100):
    """Tanaka et al.'s SynFlow by hand: |θ|, all-ones input, R = 1ᵀ f(1), scores |∂R/∂θ ⊙ θ|, pruned
    along density^(t/T) with the library's global top-k (the selection is tested elsewhere)."""
    params = [(np.abs(w), np.abs(b)) for w, b in _weights(model)]
    masks = [np.ones_like(w) for w, _ in params]
    for t in range(1, iterations + 1):
        weights = [w * m for (w, _), m in zip(params, masks)]
        acts = [np.ones((1, params[0][0].shape[0]))]
        for w, (_, b) in zip(weights, params):
            acts.append(acts[-1] @ w + b)  # every entry is positive: ReLU is the identity
        back = np.ones((1, weights[-1].shape[1]))
        scores = [None] * len(weights)
        for i in reversed(range(len(weights))):
            scores[i] = np.abs((acts[i].T @ back) * weights[i])
            back = back @ weights[i].T
        masks = [m.numpy() for m in _selection.top_k_masks([tf.constant(s, tf.float32) for s in scores],
                                                           density ** (t / iterations))]
    return masks


def _agreement(a, b):
    return sum(float((x * y).sum()) for x, y in zip(a, b)) / sum(float(y.sum()) for y in b)


def _magnitude(model, density):
    return [m.numpy() for m in _selection.top_k_masks([tf.abs(layer.kernel) for layer in model.layers], density)]


def test_snip_keeps_the_top_gradient_times_weight_scores():
    model = relu_mlp()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (32, 7)).astype("float32")
    y = rng.integers(0, 3, 32)
    ticket = tf_awt.find_ticket(model, (x, y), density=0.3, method="snip", batch_size=32)
    reference = snip_reference(model, x, y)
    expected = [m.numpy() for m in _selection.top_k_masks([tf.constant(s, tf.float32) for s in reference], 0.3)]
    got = [ticket.masks[layer.name] for layer in model.layers]
    assert _agreement(got, expected) == 1.0
    assert _agreement(expected, _magnitude(model, 0.3)) < 0.9  # the case tells SNIP from magnitude


def test_synflow_keeps_the_top_synaptic_flow_scores():
    model = relu_mlp(seed=2)
    x = np.zeros((8, 7), "float32")
    y = np.zeros(8, "int64")
    ticket = tf_awt.find_ticket(model, (x, y), density=0.2, method="synflow", batch_size=8)
    expected = synflow_reference(model, 0.2)
    got = [ticket.masks[layer.name] for layer in model.layers]
    assert _agreement(got, expected) >= 0.97  # float32 vs float64 may swap a near-tie at the boundary
    assert _agreement(expected, _magnitude(model, 0.2)) < 0.9
