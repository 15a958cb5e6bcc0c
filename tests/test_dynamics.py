"""The distances to the dense network along training (tf_awt.adversarial.dynamics, train.track_distances):
through tf-awt run into history.json, checked at one epoch against a brute-force float64 computation, kept
over a resume, and the tracker's arguments checked."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.adversarial.attacks import pgd
from tf_awt.adversarial.dynamics import DistanceTracker
from tf_awt.engine._masks import sparse_forward
from tf_awt.running import cli
from tf_awt.running.pipeline import Run
from tf_awt.running.recipes import load_recipe

from _reference import reference_kernel, single_mask_kernel
from conftest import ATTACK, tiny_data, tiny_model, tiny_recipe


def _float64_twin(model):
    """``model`` rebuilt in float64 with its weights (a brute-force reference)."""
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float64"
    twin = type(model).from_config(config)
    twin.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    return twin


def test_run_with_track_distances_logs_both_distances_per_epoch_as_a_direct_float64_computation(tmp_path):
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, method="magnitude", train={"epochs": 2, "batch_size": 32, "steps": 2, "step_size": 0.05,
                                                            "track_distances": True, "probe_examples": 6},
                         export={"tflite": False})  # plots on
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    assert (out / "training_distances.png").stat().st_size > 1000
    history = json.loads((out / "history.json").read_text())
    assert len(history["target_distance"]) == len(history["kernel_distance"]) == 2
    assert history["target_distance"][0] != history["target_distance"][1]  # measured each epoch, not once

    run = Run(load_recipe(str(out / "recipe.yaml")), str(out))
    ticket, trained = run.trained_model(distributed=False)  # the weights after the last epoch
    reference = run.inputs.base_model()
    x, y = run.inputs.split.x_train[:6], run.inputs.split.y_train[:6]
    attack, seed = run.inputs.in_range(run.recipe.attack), run.recipe.seed
    x0 = pgd(lambda z: reference(z, training=False), tf.constant(x), tf.constant(y), attack, seed=tf.constant([seed, 0], tf.int64))
    xs = pgd(lambda z: sparse_forward(trained, z), tf.constant(x), tf.constant(y), attack, seed=tf.constant([seed, 0], tf.int64))
    ref64, student64 = _float64_twin(reference), _float64_twin(tf_awt._internals.strip_pruning(trained))
    x, x0, xs = (tf.constant(np.asarray(v), tf.float64) for v in (x, x0, xs))
    masks = {name: tf.constant(m, tf.float64) for name, m in ticket.masks.items()}
    target = np.sum((ref64(x0).numpy() - student64(xs).numpy()) ** 2) / 6
    kernel = np.sum((reference_kernel(ref64, x, x0).numpy() - single_mask_kernel(student64, x, xs, masks).numpy()) ** 2) / 36
    np.testing.assert_allclose(history["target_distance"][-1], target, rtol=1e-4)
    np.testing.assert_allclose(history["kernel_distance"][-1], kernel, rtol=1e-4)


def test_the_distances_are_zero_for_the_dense_network_at_theta0_and_survive_a_resume(tmp_path):
    model, (x, y) = tiny_model(), tiny_data()
    dense = tf_awt.find_ticket(model, (x, y), density=1.0, method="dense").to_model(model)
    tracker = DistanceTracker(model, (x[:8], y[:8]), ATTACK)
    tracker.set_model(tf_awt.adversarial.training.AdversarialTrainer(dense, ATTACK))
    tracker.on_train_begin()
    assert tracker.distances() == pytest.approx((0.0, 0.0), abs=1e-9)  # the same network, the same seeded attack

    class Stop(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    sparse = lambda: tf_awt.find_ticket(model, (x, y), density=0.3, method="magnitude").to_model(model)  # noqa: E731
    fit = lambda m, **kw: tf_awt.adversarial_fit(m, (x, y), attack=ATTACK, epochs=2, batch_size=16, seed=3,  # noqa: E731
                                                 callbacks=[DistanceTracker(model, (x[:8], y[:8]), ATTACK), *kw.pop("more", [])], **kw)
    whole = fit(sparse()).history
    with pytest.raises(KeyboardInterrupt):
        fit(sparse(), checkpoint_dir=str(tmp_path / "c"), more=[Stop()])
    resumed = fit(sparse(), checkpoint_dir=str(tmp_path / "c")).history
    assert resumed["kernel_distance"] == pytest.approx(whole["kernel_distance"], rel=1e-5)
    assert resumed["target_distance"] == pytest.approx(whole["target_distance"], rel=1e-5)


def test_track_distances_settings_are_checked():
    with pytest.raises(ValueError, match=r"track_distances must be true or false\. You passed: 'yes'"):
        tf_awt.TrainConfig(track_distances="yes")
    with pytest.raises(ValueError, match=r"probe_examples .*You passed: 0"):
        tf_awt.TrainConfig(probe_examples=0)
    with pytest.raises(ValueError, match=r"normalization must be one of"):
        DistanceTracker(tiny_model(), tiny_data(8), normalization="mean")
