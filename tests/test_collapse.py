"""Collapse detection (tf_awt.adversarial.collapse): the detector on a collapsed and a healthy model, and the CLI's
report in the summary and MLflow, failing with exit code 3 when asked."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.running import cli
from tf_awt.adversarial.collapse import collapse_reasons, CollapseMonitor

from conftest import tiny_recipe
from tf_awt.adversarial.evaluation import evaluation_attack
from tf_awt.adversarial.training import AdversarialTrainer

L = tf_keras.layers


# ---------------------------------------------------------------- collapse detection
def _collapsed_model():
    model = tf_keras.Sequential([L.Input((8,)), L.Dense(16, activation="relu"), L.Dense(10, name="out")])
    out = model.get_layer("out")
    out.kernel.assign(tf.zeros_like(out.kernel))
    out.bias.assign(tf.zeros_like(out.bias))
    return model


def test_collapse_detector_fires_on_a_collapsed_model_and_stays_quiet_on_a_healthy_one():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (200, 8)).astype("float32"), rng.integers(0, 10, 200)
    messages = []
    monitor = CollapseMonitor(10, patience=3, log=messages.append)
    trainer = AdversarialTrainer(_collapsed_model(), tf_awt.Attack(eps=0.1, steps=1, step_size=0.1), seed=0)
    trainer.compile(optimizer=tf_keras.optimizers.SGD(0.0))  # stays where it is: the uniform prediction
    history = trainer.fit(x, y, batch_size=50, epochs=4, verbose=0, callbacks=[monitor]).history
    assert history["loss"] == pytest.approx([math.log(10)] * 4, rel=1e-5)
    assert len(messages) == 1 and "looks collapsed" in messages[0] and "eps_warmup_epochs" in messages[0]
    with pytest.warns(UserWarning, match="100.0% of the examples have an all-zero input gradient"):
        result = tf_awt.evaluate(trainer.model, (x, y), attack=tf_awt.Attack(eps=0.1, steps=2, step_size=0.05), config=tf_awt.EvalConfig(restarts=1))
    assert result.zero_gradient_fraction == 1.0
    reasons = collapse_reasons(history, result.natural_accuracy, 10, len(y), None, result.zero_gradient_fraction)
    assert len(reasons) == 3 and "ln 10" in reasons[0] and "at chance" in reasons[1] and "all-zero input gradient" in reasons[2]

    split = tf_awt.data.load("mnist-5k")
    tf_keras.utils.set_random_seed(0)
    model = tf_awt.models.mlp(hidden=(64,))
    quiet = []
    fit = tf_awt.adversarial_fit(model, (split.x_train[:2000], split.y_train[:2000]), epochs=3,
                                 attack=tf_awt.Attack(eps=0.1, steps=3, step_size=0.05),
                                 callbacks=[CollapseMonitor(10, patience=1, log=quiet.append)])
    healthy = tf_awt.evaluate(model, (split.x_test[:300], split.y_test[:300]), attack=evaluation_attack(0.1, steps=10), config=tf_awt.EvalConfig(restarts=1))
    assert not quiet
    assert collapse_reasons(fit.history, healthy.natural_accuracy, 10, 300, None, healthy.zero_gradient_fraction) == []


def _random_label_npz(path, n=160):
    """Inputs with labels independent of them: no model can beat chance on held-out digits."""
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32"), y=rng.integers(0, 4, n))
    return path


def test_cli_reports_collapse_in_summary_and_mlflow_and_fails_when_asked(tmp_path, capsys):
    import mlflow

    data = _random_label_npz(str(tmp_path / "noise.npz"))
    recipe = tiny_recipe(tmp_path, dataset=data, train={"epochs": 4, "batch_size": 32, "steps": 2, "step_size": 0.05, "learning_rate": 1e-4})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # in-process: an earlier test may have set another one
    try:
        code = cli.main(["run", recipe, "--out", str(tmp_path / "a"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 0, err
        summary = json.load(open(tmp_path / "a" / "summary.json"))
        assert summary["collapsed"] is True and "at chance" in summary["collapse_reason"]
        assert "warning: training collapsed" in err and "First try" in err
        mlflow.set_tracking_uri(uri)
        tags = mlflow.get_run(summary["mlflow_run_id"]).data.tags
        assert tags["collapsed"] == "true" and "at chance" in tags["collapse_reason"]
        code = cli.main(["run", recipe, "--set", "train.fail_on_collapse=true", "--out", str(tmp_path / "b"), "--quiet", "--no-mlflow"])
        lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("tf-awt: error")]
        assert code == 3 and len(lines) == 1 and "training collapsed (train.fail_on_collapse)" in lines[0]
        assert json.load(open(tmp_path / "b" / "summary.json"))["collapsed"] is True  # the summary is still written
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
        mlflow.set_tracking_uri(previous)
