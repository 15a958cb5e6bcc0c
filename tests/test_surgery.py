"""Dynamic Network Surgery (tf_awt.tickets.surgery, ``method: dns``): the surgery by hand (splicing and
its band), the density schedule, and the search through find_ticket: the density asked for, pruned weights
that keep learning and come back, resume."""
import json
import os

import numpy as np
import pytest
import tf_keras

import tf_awt
from tf_awt.tickets.surgery import surgery_densities, surgery_masks

from conftest import ATTACK, tiny_data, tiny_model, total_prunable


def test_a_surgery_by_hand_splices_a_weight_back_only_past_the_band():
    old = [np.array([[1, 1, 0, 0]], np.float32).T]  # one layer, 4 inputs, 1 unit: keep 2 of 4
    # kept: 1.0·1.1 = 1.1, 0.2·1.1 = 0.22; pruned: 0.3·0.9 = 0.27, 0.25·0.9 = 0.225 -> keep {0, 2}
    w = [np.array([[1.0, 0.2, 0.3, 0.25]], np.float32).T]
    np.testing.assert_array_equal(surgery_masks(w, old, 0.5, 0.1)[0].ravel(), [1, 0, 1, 0])
    # 0.23 > 0.2 but 0.23·0.9 = 0.207 < 0.22: inside the band, the kept weight stays
    w = [np.array([[1.0, 0.2, 0.23, 0.1]], np.float32).T]
    np.testing.assert_array_equal(surgery_masks(w, old, 0.5, 0.1)[0].ravel(), [1, 1, 0, 0])
    # without the band it is plain top-k |W|
    np.testing.assert_array_equal(surgery_masks(w, old, 0.5, 0.0)[0].ravel(), [1, 0, 1, 0])


def test_the_density_schedule_falls_cubically_and_ends_at_the_density():
    schedule = surgery_densities(0.1, update_every=10, total_steps=95, ramp_fraction=0.5)
    assert sorted(schedule) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]  # the last step always has one
    np.testing.assert_allclose(schedule[10], 0.1 + 0.9 * (1 - 10 / 47.5) ** 3)
    assert all(schedule[t] == pytest.approx(0.1) for t in (50, 60, 95))
    values = [schedule[t] for t in sorted(schedule)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def _dns(model, **changes):
    settings = dict(density=0.2, method="dns", attack=ATTACK, epochs=3, batch_size=8, update_every=3, learning_rate=2e-2,
                    ramp_fraction=0.5, seed=0)
    settings.update(changes)
    return tf_awt.find_ticket(model, tiny_data(), **settings)


def test_dns_reaches_the_density_and_its_pruned_weights_keep_learning_and_come_back():
    model = tiny_model()
    theta0 = [w.copy() for w in model.get_weights()]
    ticket = _dns(model)
    total = total_prunable(model)
    assert ticket.method == "dns" and ticket.num_kept == round(0.2 * total)
    h = ticket.history
    assert h["step"][-1] == 18 and h["density"][-1] == pytest.approx(round(0.2 * total) / total)
    assert sum(h["spliced"]) > 0  # splicing: weights pruned by one surgery are back after a later one
    assert len(h["kernel_distance"]) == len(h["step"]) and h["kernel_distance"][-1] > h["kernel_distance"][0] > 0
    for w, w0 in zip(ticket.initial_weights, model.get_weights()):
        np.testing.assert_array_equal(w, w0)  # θ0 is kept, and the model given is not modified
    for w, w0 in zip(model.get_weights(), theta0):
        np.testing.assert_array_equal(w, w0)
    learned = dict(zip([v.name for v in model.weights], ticket.learned_weights))
    kernel = next(n for n in learned if "kernel" in n)
    mask = ticket.masks[kernel.split("/")[0]]
    start = dict(zip([v.name for v in model.weights], theta0))[kernel]
    moved = np.abs(learned[kernel] - start) > 1e-6
    assert moved[mask == 0].mean() > 0.5  # pruned weights got the straight-through gradient
    magnitude = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="magnitude")
    assert any(not np.array_equal(ticket.masks[k], magnitude.masks[k]) for k in ticket.masks)


def test_dns_with_layer_scope_keeps_the_density_in_every_layer():
    ticket = _dns(tiny_model(), scope="layer", epochs=1)
    for name, mask in ticket.masks.items():
        assert mask.sum() == round(0.2 * mask.size), name


class _StopAfterFirstEpoch(tf_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


def test_dns_interrupted_resumes_to_the_uninterrupted_ticket(tmp_path):
    whole = _dns(tiny_model(), epochs=2)
    directory = str(tmp_path / "search")
    with pytest.raises(KeyboardInterrupt):
        _dns(tiny_model(), epochs=2, checkpoint_dir=directory, callbacks=[_StopAfterFirstEpoch()])
    assert json.load(open(os.path.join(directory, "state.json")))["epoch"] == 1
    resumed = _dns(tiny_model(), epochs=2, checkpoint_dir=directory)
    for a, b in zip(whole.masks.values(), resumed.masks.values()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.learned_weights, resumed.learned_weights):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == whole.history and len(whole.history["step"]) == 4
    with pytest.raises(ValueError, match="belongs to another run"):
        _dns(tiny_model(), epochs=2, checkpoint_dir=directory, hysteresis=0.2)


@pytest.mark.parametrize("bad, match", [(dict(hysteresis=1.0), r"hysteresis must be in \[0, 1\)\. You passed: 1\.0"),
                                        (dict(ramp_fraction=0.0), r"ramp_fraction must be .*You passed: 0\.0")])
def test_dns_settings_are_checked(bad, match):
    with pytest.raises(ValueError, match=match):
        tf_awt.SearchConfig.from_settings(dict(density=0.2, method="dns", **bad))
