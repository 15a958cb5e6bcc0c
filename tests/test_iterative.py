"""Cosentino et al.'s iterative pruning (tf_awt.tickets.iterative): round densities, rounds that reach the
density pruning only kept weights, and the per-round ε warm-up."""
import numpy as np
import pytest
import tensorflow as tf

import tf_awt
from tf_awt.tickets.iterative import round_densities

from conftest import ATTACK, tiny_data, tiny_model, total_prunable


# ---------------------------------------------------------------------------- Cosentino et al. (iterative)
def test_round_densities():
    np.testing.assert_allclose(round_densities(0.01, rounds=2), [0.1, 0.01])
    assert round_densities(0.3, prune_rate=0.5) == [0.5, 0.3]  # the last round stops at the density
    assert round_densities(0.25, prune_rate=0.5) == [0.5, 0.25]
    assert round_densities(1.0, rounds=4) == [1.0]
    with pytest.raises(ValueError, match=r"prune_rate must be in \(0, 1\)\. You passed: 1\.0"):
        tf_awt.SearchConfig.from_settings(dict(density=0.2, method="cosentino", prune_rate=1.0))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_cosentino_rounds_reach_the_density_and_prune_only_kept_weights(scope):
    model = tiny_model()
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="cosentino", attack=ATTACK, epochs=1, rounds=3,
                                batch_size=16, scope=scope, learning_rate=1e-2)
    h = ticket.history
    assert h["round"] == [1, 2, 3] and len(h["round_seconds"]) == 3 and all(np.isfinite(h["adv_accuracy"]))
    total = total_prunable(model)
    expected = [round(d * total) / total for d in round_densities(0.2, rounds=3)]
    if scope == "global":
        np.testing.assert_allclose(h["round_density"], expected, atol=1e-9)
        assert ticket.num_kept == round(0.2 * total)
    else:
        for name, mask in ticket.masks.items():
            assert mask.sum() == round(0.2 * mask.size), name
    for w, w0 in zip(ticket.initial_weights, model.get_weights()):
        np.testing.assert_array_equal(w, w0)  # reset to θ0: the ticket is m ⊙ θ0
    magnitude = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="magnitude", scope=scope)
    assert any(not np.array_equal(ticket.masks[k], magnitude.masks[k]) for k in ticket.masks)  # training moved it


def test_cosentino_rounds_ramp_eps_over_eps_warmup_epochs(monkeypatch):
    """search.eps_warmup_epochs reaches every round's adversarial training as its TrainConfig, in
    optimizer steps of the data (arrays and datasets), through find_ticket and `tf-awt run`'s recipe key."""
    from tf_awt.adversarial import training

    seen = []
    original = training.adversarial_fit

    def spy(model, data, **kwargs):
        config = kwargs["config"]
        seen.append(config.schedule(-(-len(x) // 16)) if config.eps_warmup_epochs else None)
        return original(model, data, **kwargs)

    monkeypatch.setattr(training, "adversarial_fit", spy)
    model = tiny_model()
    x, y = tiny_data()
    tf_awt.find_ticket(model, (x, y), density=0.3, method="cosentino", attack=ATTACK, epochs=2, rounds=2, batch_size=16,
                       eps_warmup_epochs=1.5)
    steps = -(-len(x) // 16)
    assert [s.eps_warmup_steps for s in seen] == [round(1.5 * steps)] * 2
    seen.clear()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    tf_awt.find_ticket(model, dataset, density=0.3, method="cosentino", attack=ATTACK, epochs=1, rounds=2, eps_warmup_epochs=1)
    assert [s.eps_warmup_steps for s in seen] == [steps] * 2
    seen.clear()
    tf_awt.find_ticket(model, (x, y), density=0.3, method="cosentino", attack=ATTACK, epochs=1, rounds=1, batch_size=16)
    assert seen == [None]
    with pytest.raises(ValueError, match=r"eps_warmup_epochs must be a number >= 0\. You passed: -1"):
        tf_awt.SearchConfig.from_settings(dict(density=0.2, method="cosentino", eps_warmup_epochs=-1))
    from tf_awt.running.recipes import load_recipe

    assert load_recipe("quickstart", overrides=["method=cosentino", "search.eps_warmup_epochs=2"]).search.options.eps_warmup_epochs == 2


def test_cosentino_records_each_rounds_distances_to_the_dense_network_through_tf_awt_run(tmp_path, monkeypatch):
    """Issue 39: cosentino's search records, after every round, the round's trained network's target and kernel
    distances to the dense θ0 (as DNS does at every surgery): in the ticket's history, MLflow's search_ metrics
    and distances.png; each equal to a tracker's direct measurement of that round's network."""
    from tf_awt.adversarial import training
    from tf_awt.adversarial.dynamics import DistanceTracker
    from tf_awt.running import cli
    from tf_awt.running.pipeline import Run
    from tf_awt.running.recipes import load_recipe

    from conftest import tiny_recipe

    trained = []
    original = training.adversarial_fit

    def spy(model, data, **kwargs):
        trained.append(model)
        return original(model, data, **kwargs)

    monkeypatch.setattr(training, "adversarial_fit", spy)
    out = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, method="cosentino", search={"epochs": 1, "rounds": 2, "batch_size": 32},
                         export={"tflite": False})  # plots on
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    history = tf_awt.Ticket.load(str(out / "ticket.npz")).history
    assert len(history["target_distance"]) == len(history["kernel_distance"]) == 2
    assert (out / "distances.png").stat().st_size > 1000
    run = Run(load_recipe(str(out / "recipe.yaml")), str(out))
    x, y = run.inputs.split.x_train[:64], run.inputs.split.y_train[:64]
    tracker = DistanceTracker(run.inputs.base_model(), (x, y), run.inputs.in_range(run.recipe.attack),
                              run.recipe.search.normalization, run.recipe.seed)
    for r, network in enumerate(trained[:2]):  # the two rounds' networks (then the training phase's)
        tracker.set_model(network)
        tracker.on_train_begin()
        np.testing.assert_allclose((history["target_distance"][r], history["kernel_distance"][r]), tracker.distances(), rtol=1e-5)
    assert history["kernel_distance"][0] > 0  # a trained network is not θ0
