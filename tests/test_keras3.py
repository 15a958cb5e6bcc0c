"""Keras 3 models in (converted to tf_keras at every entry point) and out."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tf_keras

import tf_awt
from tf_awt.keras3 import as_tf_keras, is_keras3, to_keras3, to_tf_keras
from tf_awt.tickets.export import export_keras3

keras = pytest.importorskip("keras")
if not keras.__version__.startswith("3."):
    pytest.skip("Keras 3 is not installed", allow_module_level=True)

ATTACK = tf_awt.Attack(eps=0.1, steps=2, step_size=0.05)


def _mlp(lib):
    lib.utils.set_random_seed(0)
    L = lib.layers
    return lib.Sequential([L.Input((6, 6, 1)), L.Flatten(name="flat"), L.Dense(12, activation="relu", name="h1"),
                           L.Dense(8, name="h2"), L.LeakyReLU(0.1, name="act"), L.Dense(3, name="out")])


def _cnn(lib):
    lib.utils.set_random_seed(0)
    L = lib.layers
    x = L.Input((6, 6, 1), name="images")
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    h = L.BatchNormalization(name="bn")(h)
    skip = L.Conv2D(4, 1, name="c2")(h)
    h = L.Add(name="add")([h, skip])
    h = L.MaxPooling2D(name="pool")(h)
    return lib.Model(x, L.Dense(3, name="out")(L.Flatten(name="flat")(h)))


def _twins(build):
    """The Keras 3 model and a tf_keras model of the same architecture with the same weights."""
    k3, k2 = build(keras), build(tf_keras)
    for layer in k3.layers:
        if layer.get_weights():
            k2.get_layer(layer.name).set_weights(layer.get_weights())
    return k3, k2


def _data(n=24):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 6, 6, 1)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("build", [_mlp, _cnn])
def test_conversion_is_exact_both_ways(build):
    k3, _ = _twins(build)
    x, _ = _data()
    assert is_keras3(k3) and not is_keras3(to_tf_keras(k3))
    converted = to_tf_keras(k3)
    np.testing.assert_array_equal(converted(x).numpy(), np.asarray(k3(x)))
    back = to_keras3(converted)
    assert is_keras3(back)
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(k3(x)))


@pytest.mark.parametrize("build", [_mlp, _cnn])
def test_every_entry_point_gives_what_the_tf_keras_twin_gives(build):
    k3, k2 = _twins(build)
    x, y = _data()
    np.testing.assert_allclose(tf_awt.mixed_tangent_kernel(k3, x[:3], x[3:5]).numpy(),
                               tf_awt.mixed_tangent_kernel(k2, x[:3], x[3:5]).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tf_awt.mixed_tangent_kernel_fn(k3)(x[:2], x[2:4], diagonal=False).numpy(),
                               tf_awt.mixed_tangent_kernel_fn(k2)(x[:2], x[2:4]).numpy(), rtol=1e-6, atol=1e-7)
    settings = dict(density=0.3, attack=ATTACK, epochs=1, batch_size=12, update_every=1, seed=3)
    t3, t2 = tf_awt.find_ticket(k3, (x, y), **settings), tf_awt.find_ticket(k2, (x, y), **settings)
    assert set(t3.masks) == set(t2.masks)
    for name in t2.masks:
        np.testing.assert_array_equal(t3.masks[name], t2.masks[name])
    m3, m2 = t3.to_model(k3), t2.to_model(k2)
    np.testing.assert_allclose(m3(x).numpy(), m2(x).numpy(), rtol=1e-6, atol=1e-6)
    from tensorflow_model_optimization.python.core.sparsity.keras import prune

    back = to_keras3(prune.strip_pruning(m3))  # the ticket as a Keras 3 model: same predictions, same zeros
    assert is_keras3(back)
    np.testing.assert_allclose(np.asarray(back(x)), m3(x).numpy(), rtol=1e-6, atol=1e-6)
    for name, mask in t3.masks.items():
        assert np.array_equal(np.asarray(back.get_layer(name).kernel) != 0, mask > 0), name
    r3 = tf_awt.evaluate(k3, (x, y), attack=ATTACK, check_subset=8, config=tf_awt.EvalConfig(restarts=1))
    r2 = tf_awt.evaluate(k2, (x, y), attack=ATTACK, check_subset=8, config=tf_awt.EvalConfig(restarts=1))
    assert (r3.natural_accuracy, r3.robust_accuracy) == (r2.natural_accuracy, r2.robust_accuracy)


def test_adversarial_fit_trains_the_keras3_model_in_place():
    k3, k2 = _twins(_mlp)
    x, y = _data()
    before = [w.copy() for w in k3.get_weights()]
    h3 = tf_awt.adversarial_fit(k3, (x, y), attack=ATTACK, epochs=2, batch_size=12, seed=1)
    h2 = tf_awt.adversarial_fit(k2, (x, y), attack=ATTACK, epochs=2, batch_size=12, seed=1)
    assert h3.history["loss"] == h2.history["loss"]
    assert any(not np.array_equal(a, b) for a, b in zip(before, k3.get_weights()))
    np.testing.assert_allclose(np.asarray(k3(x)), k2(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(as_tf_keras(k3)(x).numpy(), np.asarray(k3(x)))  # the twin follows


def test_layers_without_a_conversion_are_named():
    L = keras.layers
    recurrent = keras.Sequential([L.Input((5, 3)), L.SimpleRNN(4, name="rnn"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"layer 'rnn' \(SimpleRNN\) has no conversion to tf_keras"):
        tf_awt.find_ticket(recurrent, (np.zeros((4, 5, 3), "float32"), np.zeros(4, int)), density=0.5, method="magnitude")
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"subclassed model \(Custom\); only Sequential and functional"):
        to_tf_keras(Custom())
    regularized = keras.Sequential([L.Input((4,)), L.Dense(2, name="d", kernel_regularizer="l2")])
    with pytest.raises(ValueError, match=r"layer 'd' has kernel_regularizer=.*would lose"):
        to_tf_keras(regularized)


def test_a_run_can_export_a_keras3_file(tmp_path, capsys):
    import json

    from tf_awt.running import cli

    from conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                         train={"epochs": 1, "batch_size": 32, "steps": 1, "step_size": 0.05},
                         export={"keras3": True, "tflite": False})
    out = tmp_path / "run"
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0, capsys.readouterr().err[-2000:]
    loaded = keras.models.load_model(str(out / "model.keras"))
    x = np.load(str(tmp_path / "tiny.npz"))["x"][:4]
    expected = tf_keras.models.load_model(str(out / "saved_model"))(x).numpy()
    np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=1e-5, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_size"]["keras3_bytes"] == os.path.getsize(out / "model.keras")
    with pytest.raises(ValueError, match=r"ends in '.keras'. You passed: 'model.h5'"):
        export_keras3(loaded, "model.h5")
