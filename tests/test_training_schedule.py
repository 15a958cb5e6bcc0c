"""Training schedules (tf_awt.adversarial.training_schedule): ε warm-up, learning-rate schedules, clipping, fan-in
rescaling, the train keys of recipes, and resuming mid-warm-up (collapse detection: test_collapse.py)."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.adversarial import training
from tf_awt.running import cli
from tf_awt.running.pipeline import Run
from tf_awt.running.recipes import load_recipe
from tf_awt.tickets.ticket import fan_in_scale
from tf_awt.adversarial.training_schedule import TrainingSchedule, WarmupDecay

from conftest import _StopAfterSecondEpoch, tiny_recipe
from tf_awt.adversarial.training import AdversarialTrainer


L = tf_keras.layers


# ---------------------------------------------------------------- schedule values
def test_learning_rate_schedules_at_chosen_steps():
    peak, total, warm = 1e-3, 100, 10
    constant = WarmupDecay(peak, "constant", total, warm)
    assert float(constant(0)) == pytest.approx(peak / 10)
    assert float(constant(4)) == pytest.approx(peak * 5 / 10)
    assert float(constant(9)) == pytest.approx(peak) and float(constant(99)) == pytest.approx(peak)
    cosine = WarmupDecay(peak, "cosine", total, warm, final_fraction=0.1)
    for t in (10, 32, 55, 77, 100, 150):
        progress = min(max((t - warm) / (total - warm), 0), 1)
        expected = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert float(cosine(t)) == pytest.approx(expected, rel=1e-5), t
    step = WarmupDecay(peak, "step", total)
    assert [float(step(t)) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx([peak, peak, peak / 10, peak / 10, peak / 100, peak / 100])
    for schedule in (constant, cosine, step):  # Keras serialization round-trips
        again = tf_keras.optimizers.schedules.deserialize(tf_keras.optimizers.schedules.serialize(schedule))
        assert again.get_config() == schedule.get_config()
        assert float(again(33)) == pytest.approx(float(schedule(33)))


def test_eps_warmup_and_epochs_to_steps():
    schedule = TrainingSchedule.from_epochs(steps_per_epoch=10, epochs=20, eps_warmup_epochs=2.5, lr_schedule="cosine",
                                            lr_warmup_epochs=1, clip_norm=np.float32(5))
    assert schedule == TrainingSchedule(eps_warmup_steps=25, lr_schedule="cosine", lr_warmup_steps=10, total_steps=200, clip_norm=5.0)
    assert [float(schedule.eps_scale(t)) for t in (0, 4, 24, 25, 1000)] == pytest.approx([1 / 25, 5 / 25, 1, 1, 1])
    assert float(TrainingSchedule().eps_scale(0)) == 1.0 and TrainingSchedule().is_default
    assert TrainingSchedule.from_config(schedule.get_config()) == schedule
    assert TrainingSchedule().learning_rate(1e-3) == 1e-3  # a plain float: no schedule object when nothing is asked
    assert isinstance(schedule.learning_rate(1e-3), WarmupDecay)
    for kwargs, message in (({"eps_warmup_steps": -1}, "eps_warmup_steps must be an integer >= 0"),
                            ({"lr_schedule": "linear"}, r"lr_schedule must be one of .*'linear'"),
                            ({"lr_schedule": "cosine"}, "needs total_steps"),
                            ({"clip_norm": 0.0}, "clip_norm must be a number > 0")):
        with pytest.raises(ValueError, match=message):
            TrainingSchedule(**kwargs)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.0)])
def test_scaled_pgd_stays_in_the_scaled_ball(norm, eps):
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([L.Input((8,)), L.Dense(16, activation="relu"), L.Dense(3)])
    x = tf.random.stateless_uniform((16, 8), [0, 1])
    y = tf.constant(np.arange(16) % 3)
    attack = tf_awt.Attack(norm=norm, eps=eps, steps=5, step_size=eps / 4)
    full = tf_awt.pgd(model, x, y, attack, seed=[1, 2]).numpy()
    np.testing.assert_allclose(tf_awt.pgd(model, x, y, attack, seed=[1, 2], scale=1.0).numpy(), full, atol=1e-7)
    np.testing.assert_array_equal(tf_awt.pgd(model, x, y, attack, seed=[1, 2], scale=0.0).numpy(), x.numpy())
    for scale in (0.1, 0.5):
        adv = tf_awt.pgd(model, x, y, attack, seed=[1, 2], scale=tf.constant(scale)).numpy()
        diff = (adv - x.numpy()).reshape(16, -1)
        size = np.abs(diff).max(axis=1) if norm == "linf" else np.linalg.norm(diff, axis=1)
        assert size.max() <= scale * eps + 1e-6 and size.max() > 0.5 * scale * eps
        assert adv.min() >= 0 and adv.max() <= 1
    unseeded = (tf_awt.pgd(model, x, y, attack, scale=0.5).numpy() - x.numpy()).reshape(16, -1)
    size = np.abs(unseeded).max(axis=1) if norm == "linf" else np.linalg.norm(unseeded, axis=1)
    assert size.max() <= 0.5 * eps + 1e-6


def test_trainer_ramps_eps_per_step_and_clips_gradients(monkeypatch):
    scales = []
    real_pgd = training.pgd

    def recording_pgd(model_fn, x, y, attack, seed=None, scale=None):
        scales.append(None if scale is None else float(scale))
        return real_pgd(model_fn, x, y, attack, seed=seed, scale=scale)

    monkeypatch.setattr(training, "pgd", recording_pgd)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([L.Input((8,)), L.Dense(16, activation="relu"), L.Dense(3)])
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (48, 8)).astype("float32"), rng.integers(0, 3, 48)
    trainer = AdversarialTrainer(model, tf_awt.Attack(eps=0.3, steps=2, step_size=0.1), seed=0,
                                        schedule=TrainingSchedule(eps_warmup_steps=4, clip_norm=1e-3))
    trainer.compile(optimizer=tf_keras.optimizers.SGD(1.0), run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_variables]
    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    # with SGD(lr 1) and clipping at global norm 1e-3, six steps move the weights by at most 6e-3
    moved = math.sqrt(sum(float(np.sum((w.numpy() - b) ** 2)) for w, b in zip(model.trainable_variables, before)))
    assert 0 < moved <= 6e-3 + 1e-6


def test_fan_in_rescaling_preserves_the_dense_output_scale():
    mask = np.zeros((100, 4), np.float32)
    mask[:25, 0] = 1
    mask[:4, 1] = 1
    mask[:, 2] = 1
    np.testing.assert_allclose(fan_in_scale(mask), [2.0, 5.0, 1.0, 0.0])
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([L.Input((784,)), L.Dense(300, activation="relu", name="h1"), L.Dense(100, activation="relu", name="h2"),
                                 L.Dense(10, name="out")])
    x = np.random.default_rng(0).uniform(0, 1, (256, 784)).astype("float32")
    ticket = tf_awt.find_ticket(model, (x, np.zeros(256, int)), density=0.03, method="random", scope="layer")
    dense_std = float(np.std(model(x)))
    plain = float(np.std(ticket.to_model(model)(x)))
    rescaled_model = ticket.to_model(model, rescale="fan_in")
    rescaled = float(np.std(rescaled_model(x)))
    assert plain < 0.4 * dense_std  # a 3% ticket's logits are tiny ...
    assert 0.5 * dense_std < rescaled < 2.0 * dense_std  # ... the rescaled ticket's are the dense net's size
    for layer in rescaled_model.layers:  # the masks are unchanged and pruned weights still zero
        if hasattr(layer, "pruning_vars"):
            kernel, mask, _ = layer.pruning_vars[0]
            np.testing.assert_array_equal(mask.numpy(), ticket.masks[layer.layer.name])
            assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)
    with pytest.raises(ValueError, match=r"rescale must be one of \('none', 'fan_in'\). You passed: 'unit'"):
        ticket.to_model(model, rescale="unit")


# ---------------------------------------------------------------- recipes and resume
def test_train_keys_in_recipes():
    recipe = load_recipe("quickstart", ["train.eps_warmup_epochs=2.5", "train.lr_schedule=cosine", "train.clip_norm=1",
                                        "train.rescale=fan_in", "train.fail_on_collapse=true", "eval.split=validation"])
    schedule = recipe.train.schedule(steps_per_epoch=10)
    assert schedule.eps_warmup_steps == 25 and schedule.lr_schedule == "cosine" and schedule.clip_norm == 1.0
    assert recipe.train.rescale == "fan_in" and recipe.train.fail_on_collapse is True and recipe.eval.split == "validation"
    for override, message in (("train.lr_schedule=linear", "lr_schedule must be one of"),
                              ("train.rescale=unit", "train.rescale must be one of"),
                              ("train.eps_warmup_epochs=-1", "eps_warmup_epochs must be a number >= 0"),
                              ("eval.split=train", "eval.split must be one of")):
        with pytest.raises(ValueError, match=message):
            load_recipe("quickstart", [override])


def test_validation_split_never_reads_the_test_split():
    split = tf_awt.data.load("mnist-5k")
    val = tf_awt.data.validation_split(split)
    assert len(val.y_train) + len(val.y_test) == len(split.y_train) and len(val.y_test) == 800
    train_rows = {r.tobytes() for r in split.x_train.reshape(len(split.x_train), -1)}
    assert all(r.tobytes() in train_rows for r in val.x_test.reshape(len(val.x_test), -1))
    assert np.bincount(val.y_test).min() >= 70  # stratified


def test_resume_mid_warmup_continues_the_schedule_exactly(tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                                     train={"epochs": 4, "batch_size": 32, "steps": 2, "step_size": 0.05,
                                            "eps_warmup_epochs": 3, "lr_schedule": "cosine", "lr_warmup_epochs": 1,
                                            "clip_norm": 1.0}))
    a = Run(recipe, str(tmp_path / "a"), log=lambda m: None).all()

    def progress(name, steps):
        return _StopAfterSecondEpoch() if name == "train" else cli._Progress(True)(name, steps)

    with pytest.raises(KeyboardInterrupt):  # stopped after epoch 2 of 4: inside the 3-epoch warm-up
        Run(recipe, str(tmp_path / "b"), progress=progress, log=lambda m: None).all()
    b = Run(recipe, str(tmp_path / "b"), log=lambda m: None).all()
    ha = json.load(open(tmp_path / "a" / "history.json"))
    hb = json.load(open(tmp_path / "b" / "history.json"))
    assert ha == hb and len(ha["loss"]) == 4
    assert a["robust_accuracy"] == b["robust_accuracy"] and a["natural_accuracy"] == b["natural_accuracy"]
    off = load_recipe(tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                                  train={"epochs": 4, "batch_size": 32, "steps": 2, "step_size": 0.05}))
    Run(off, str(tmp_path / "c"), log=lambda m: None).all()
    assert json.load(open(tmp_path / "c" / "history.json")) != ha  # the schedule did change training


def test_the_schedule_is_given_in_one_place_the_train_config():
    import inspect

    assert "schedule" not in inspect.signature(tf_awt.adversarial_fit).parameters
