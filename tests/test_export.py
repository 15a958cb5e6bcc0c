"""tf_awt.export_saved_model: the function `tf-awt export` calls, through the public API."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.adversarial.phase_config import ExportConfig
from tf_awt.tickets.export import export_tflite, tflite_predict


def _cnn():
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.layers.Input((6, 6, 1)), tf_keras.layers.Conv2D(4, 3, activation="relu"),
                                tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])


def test_export_writes_a_servable_sparse_model_and_replaces_an_old_one(tmp_path):
    model = _cnn()
    x = np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype("float32")
    ticket = tf_awt.find_ticket(model, (x, np.arange(5) % 3), density=0.25, method="magnitude")
    pruned = ticket.to_model(model)
    path = str(tmp_path / "saved")
    os.makedirs(path)
    open(os.path.join(path, "stale.txt"), "w").close()
    result = tf_awt.export_saved_model(pruned, path)
    assert result.path == path and not os.path.exists(os.path.join(path, "stale.txt"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    assert result.zeros == pytest.approx(1 - ticket.density, abs=1e-6)
    assert result.raw_bytes == sum(w.nbytes for w in result.model.get_weights())
    assert 0 < result.sparse_gzip_bytes < result.raw_bytes
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(served, pruned(x).numpy(), atol=1e-6)


def test_a_run_without_a_saved_model_reports_the_same_sizes_and_writes_nothing(tmp_path):
    """``export.saved_model: false`` (a comparison's selection tries): the sizes a SavedModel export
    reports, and no file."""
    from tf_awt.tickets.export import export_run

    model = _cnn()
    x = np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype("float32")
    pruned = tf_awt.find_ticket(model, (x, np.arange(5) % 3), density=0.25, method="magnitude").to_model(model)
    weights = model.get_weights()
    _, written, path = export_run(pruned, str(tmp_path / "a"), (6, 6, 1), weights, ExportConfig(tflite=False))
    assert path == str(tmp_path / "a" / "saved_model") and os.path.isdir(path)
    stripped, sizes, path = export_run(pruned, str(tmp_path / "b"), (6, 6, 1), weights,
                                       ExportConfig(saved_model=False, tflite=False))
    assert sizes == written and path is None and not os.path.exists(tmp_path / "b")
    np.testing.assert_allclose(stripped(x).numpy(), pruned(x).numpy(), atol=1e-6)


def test_export_names_a_bad_input_shape():
    with pytest.raises(ValueError, match=r"input_shape must be positive integers. You passed: \(0, 6, 1\)"):
        tf_awt.export_saved_model(_cnn(), "unused", input_shape=(0, 6, 1))
    with pytest.raises(ValueError, match="needs a built model"):
        tf_awt.export_saved_model(tf_keras.Sequential([tf_keras.layers.Dense(2)]), "unused")


def _wide_cnn():
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.layers.Input((6, 6, 1)), tf_keras.layers.Conv2D(16, 3, activation="relu"),
                                tf_keras.layers.Flatten(), tf_keras.layers.Dense(64, activation="relu"), tf_keras.layers.Dense(3)])


def test_tflite_export_stores_the_ticket_sparse_and_predicts_like_it(tmp_path):
    model = _wide_cnn()
    x = np.random.default_rng(1).uniform(0, 1, (7, 6, 6, 1)).astype("float32")
    pruned = tf_awt.find_ticket(model, (x, np.arange(7) % 3), density=0.1, method="magnitude").to_model(model)
    sparse_path, dense_path = str(tmp_path / "sparse.tflite"), str(tmp_path / "dense.tflite")
    sparse_bytes = export_tflite(pruned, sparse_path)
    dense_bytes = export_tflite(pruned, dense_path, sparse=False)
    assert sparse_bytes == os.path.getsize(sparse_path) and dense_bytes == os.path.getsize(dense_path)
    assert sparse_bytes < 0.5 * dense_bytes  # 10% of the kernels kept: stored sparse, not as zeros
    for batch in (1, 7):
        expected = pruned(x[:batch]).numpy()
        np.testing.assert_allclose(tflite_predict(sparse_path, x[:batch]), expected, atol=1e-5)
        np.testing.assert_allclose(tflite_predict(dense_path, x[:batch]), expected, atol=1e-5)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
