"""Issue 14: the mask optimized itself (straight-through scores), ERK and layer-wise shuffle baselines."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt import _selection, cli
from tf_awt.distances import kernel_distance
from tf_awt.iterative import round_densities
from tf_awt.search import TicketSearch, search_optimizer
from tf_awt.ticket import Ticket

from conftest import ATTACK, tiny_data, tiny_model, tiny_recipe, total_prunable


# ---------------------------------------------------------------------------- straight-through top-k
@pytest.mark.parametrize("scope", _selection.SCOPES)
def test_straight_through_top_k_keeps_exactly_k_and_passes_gradients(scope):
    rng = np.random.default_rng(0)
    scores = [tf.Variable(rng.normal(size=s), dtype=tf.float32) for s in ((30, 20), (20, 5), (3, 3, 2, 4))]
    weights = [tf.constant(rng.normal(size=s.shape), tf.float32) for s in scores]
    with tf.GradientTape() as tape:
        masks = _selection.straight_through_masks(scores, 0.1, scope)
        loss = tf.add_n([tf.reduce_sum(m * w) for m, w in zip(masks, weights)])
    hard = _selection.top_k_masks(scores, 0.1, scope)
    for m, h in zip(masks, hard):
        np.testing.assert_array_equal(m.numpy(), h.numpy())  # exactly the 0/1 mask, no ε residue
    sizes = [int(np.prod(s.shape)) for s in scores]
    kept = [int(m.numpy().sum()) for m in masks]
    if scope == "global":
        assert sum(kept) == round(0.1 * sum(sizes))
    else:
        allocate = {"erk": _selection.erk_densities, "frankle_carbin": _selection.frankle_carbin_densities}.get(
            scope, lambda shapes, d: [d] * len(shapes))
        densities = allocate([s.shape for s in scores], 0.1)
        assert kept == [_selection.kept_count(n, d) for n, d in zip(sizes, densities)]
    for g, w in zip(tape.gradient(loss, scores), weights):  # d loss / d s = d loss / d m, kept or pruned
        np.testing.assert_allclose(g.numpy(), w.numpy())


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
        tf_awt.SearchConfig(density=0.2, reference="random_layerwise")


# ---------------------------------------------------------------------------- Cosentino et al. (iterative)
def test_round_densities():
    np.testing.assert_allclose(round_densities(0.01, rounds=2), [0.1, 0.01])
    assert round_densities(0.3, prune_rate=0.5) == [0.5, 0.3]  # the last round stops at the density
    assert round_densities(0.25, prune_rate=0.5) == [0.5, 0.25]
    assert round_densities(1.0, rounds=4) == [1.0]
    with pytest.raises(ValueError, match=r"prune_rate must be in \(0, 1\)\. You passed: 1\.0"):
        tf_awt.SearchConfig(density=0.2, method="cosentino", prune_rate=1.0)


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
    """search.eps_warmup_epochs reaches every round's adversarial training as a TrainingSchedule
    (arrays and datasets), through find_ticket and `tf-awt run`'s recipe key."""
    from tf_awt import training

    seen = []
    original = training.adversarial_fit

    def spy(model, data, **kwargs):
        seen.append(kwargs.get("schedule"))
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
        tf_awt.SearchConfig(density=0.2, method="cosentino", eps_warmup_epochs=-1)
    from tf_awt.recipes import load_recipe

    assert load_recipe("quickstart", overrides=["search.eps_warmup_epochs=2"]).search.eps_warmup_epochs == 2


# ---------------------------------------------------------------------------- score search
def test_optimize_is_validated():
    with pytest.raises(ValueError, match=r"optimize must be one of \('weights', 'scores'\)\. You passed: 'mask'"):
        tf_awt.SearchConfig(density=0.2, optimize="mask")


def _linear_model(d):
    tf_keras.utils.set_random_seed(0)
    return tf_awt.models.linear(input_shape=(d,), num_classes=2)


def _high_variance_data(n=64, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (n, d)).astype("float32")
    x[:, 0] = rng.normal(0, 1.0, n)  # coordinate 0: 20x the standard deviation of the others
    return x, (x[:, 0] > 0).astype("int64")


def test_score_search_kernel_gradient_reaches_the_mask_and_prefers_the_high_variance_coordinate():
    x, y = _high_variance_data()
    model = _linear_model(x.shape[1])
    kernel = model.layers[-1].kernel.numpy()
    kernel[0] = 1e-4  # coordinate 0 out of the initial mask: its θ0 entries are the smallest
    model.layers[-1].kernel.assign(kernel)
    config = tf_awt.SearchConfig(density=0.25, optimize="scores", attack=ATTACK.replace(eps=0.0), kernel_weight=1.0,
                                 learning_rate=0.05)
    search = TicketSearch(model, config, steps_per_epoch=4)
    assert search.current_masks()[model.layers[-1].name][0].sum() == 0  # m0 (top |θ0|) drops coordinate 0
    theta_t = search._teacher_kernel(x, x)
    with tf.GradientTape() as tape:
        theta_s = search._student_kernel(x, x, masks=search.straight_through_masks())
        distance = kernel_distance(theta_t, theta_s)
    grad = tape.gradient(distance, search.scores)[0].numpy()  # (6, 2)
    assert np.abs(grad).max() > 0
    # Linear model: Θs = Σ_p m_p x_p x'_p (+ bias), so d‖Θ0 − Θs‖²/dm_p = −2 Σ_ij (Θ0 − Θs)_ij x_ip x_jp:
    # most negative (adding it helps most) for the coordinate with the largest variance.
    per_coordinate = grad.sum(axis=1)
    assert per_coordinate.argmin() == 0 and per_coordinate[0] < 10 * per_coordinate[1:].min()
    # The search (kernel term weighted 1: the teacher θ0 barely uses coordinate 0 either, so the target term
    # does not ask for it) then moves coordinate 0 into the mask; the weights stay at θ0.
    search.compile(optimizer=search_optimizer(config))
    search.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=10, verbose=0)
    assert search.current_masks()[model.layers[-1].name][0].sum() >= 1
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), search.student.layers[-1].layer.kernel.numpy())


@pytest.mark.parametrize("scope", _selection.SCOPES)
@pytest.mark.parametrize("kernel", ["full", "diagonal"])
def test_score_search_keeps_theta0_meets_the_density_and_moves_the_mask(scope, kernel):
    model = tiny_model()
    before = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="magnitude", scope=scope)
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.2, attack=ATTACK, epochs=3, batch_size=16, optimize="scores",
                                scope=scope, kernel=kernel, learning_rate=1e-2, normalization="per_entry", kernel_weight=1e-3)
    after = {k: int(v.sum()) for k, v in ticket.masks.items()}
    if scope == "global":  # the allocation between layers may move, the total may not
        assert sum(after.values()) == before.num_kept
    else:
        assert after == {k: int(v.sum()) for k, v in before.masks.items()}
    assert any(not np.array_equal(ticket.masks[k], before.masks[k]) for k in ticket.masks)  # the scores moved it
    for w, w0 in zip(ticket.learned_weights, model.get_weights()):
        np.testing.assert_array_equal(w, w0)  # weights stay at θ0
    assert ticket.config["optimize"] == "scores" and len(ticket.history["loss"]) == 9


# ---------------------------------------------------------------------------- every method, through the CLI
def test_every_method_runs_from_the_cli_and_its_ticket_round_trips(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32}, train={"epochs": 0})
    variants = [(m, ()) for m in tf_awt.METHODS] + [("awt", ("search.optimize=scores",)),
                                                      ("random_layerwise", ("search.reference=magnitude",))]
    for method, extra in variants:
        out = tmp_path / f"{method}-{len(extra)}"
        overrides = [a for key in (f"method={method}", *extra) for a in ("--set", key)]
        code = cli.main(["run", recipe, *overrides, "--out", str(out), "--quiet", "--no-mlflow"])
        assert code == 0, capsys.readouterr().err[-2000:]
        ticket = Ticket.load(str(out / "ticket.npz"))
        summary = json.loads((out / "summary.json").read_text())
        assert ticket.method == summary["method"] == method
        assert abs(ticket.density - 0.2) < 0.01 and summary["layer_density"] == pytest.approx(ticket.layer_density)
        config = tf_awt.SearchConfig.from_config(ticket.config)
        assert config.method == method and config.get_config() == ticket.config
        if extra:
            assert (config.optimize, config.reference) in {("scores", "awt"), ("weights", "magnitude")}
