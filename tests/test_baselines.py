"""One-shot baselines against small independent references (numpy, float64): SNIP's and SynFlow's
scores are what their papers define, not magnitude pruning under another name."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.tickets import _selection

from conftest import tiny_data, tiny_model

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


def _erk_reference(shapes, density):
    """Brute force: bisection on ε of Σ min(1, ε·raw_l)·n_l = density·Σ n_l, in float64."""
    sizes = np.array([np.prod(s) for s in shapes], np.float64)
    raw = np.array([sum(s) for s in shapes], np.float64) / sizes
    lo, hi = 0.0, 1e9
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (np.minimum(1, mid * raw) * sizes).sum() < density * sizes.sum() else (lo, mid)
    return np.minimum(1, lo * raw)


@pytest.mark.parametrize("shapes,density", [([(784, 300), (300, 100), (100, 10)], 0.036),
                                            ([(784, 300), (300, 100), (100, 10)], 0.3),  # logits layer capped at 1
                                            ([(5, 5, 1, 32), (5, 5, 32, 64), (3136, 1024), (1024, 10)], 0.01),
                                            ([(4, 3)], 1.0)])
def test_erk_densities_match_the_formula(shapes, density):
    got = np.array(_selection.erk_densities(shapes, density))
    np.testing.assert_allclose(got, _erk_reference(shapes, density), rtol=1e-6)
    sizes = np.array([np.prod(s) for s in shapes])
    assert abs((got * sizes).sum() - density * sizes.sum()) < 1e-6 * sizes.sum()
    free = got < 1  # uncapped layers: density ∝ (Σ dims) / (Π dims)
    ratio = got[free] / (np.array([sum(s) for s in shapes])[free] / sizes[free])
    assert ratio.size == 0 or np.allclose(ratio, ratio.max(), rtol=1e-9)


def test_erk_method_keeps_the_erk_counts_in_every_layer():
    model = tiny_model()
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="erk", seed=3)
    layers = [l for l in model.layers if hasattr(l, "kernel")]
    densities = _selection.erk_densities([l.kernel.shape for l in layers], 0.2)
    for layer, d in zip(layers, densities):
        assert ticket.masks[layer.name].sum() == _selection.kept_count(layer.kernel.shape.num_elements(), d)
    other = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="erk", seed=4)
    assert any(not np.array_equal(ticket.masks[k], other.masks[k]) for k in ticket.masks)  # seeded positions


# ---------------------------------------------------------------------------- layer-wise shuffle
def test_random_layerwise_reproduces_the_reference_layer_densities_exactly(tmp_path):
    model = tiny_model()
    reference = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="magnitude")
    for source in ("magnitude", str(tmp_path / "ref.npz")):
        if source.endswith(".npz"):
            reference.save(source)
        ticket = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="random_layerwise", reference=source, seed=1)
        assert ticket.method == "random_layerwise"
        for name, mask in reference.masks.items():
            assert ticket.masks[name].sum() == mask.sum(), name
            assert not np.array_equal(ticket.masks[name], mask), name  # a shuffle, not a copy
    with pytest.raises(ValueError, match=r"reference must be one of .*You passed: 'nope.npz' \(no such file\)"):
        tf_awt.find_ticket(model, tiny_data(), density=0.2, method="random_layerwise", reference="nope.npz")
    with pytest.raises(ValueError, match=r"has density 0\.199.*asks for 0\.5"):
        tf_awt.find_ticket(model, tiny_data(), density=0.5, method="random_layerwise", reference=str(tmp_path / "ref.npz"))
    with pytest.raises(ValueError, match=r"reference must be a ticket method other than 'random_layerwise'"):
        tf_awt.SearchConfig.from_settings(dict(density=0.2, method="random_layerwise", reference="random_layerwise"))
