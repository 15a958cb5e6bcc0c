"""Ticket search (Algorithm 1) and its baselines on tiny nets."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.tickets import _selection
from tf_awt.engine.distances import kernel_distance
from tf_awt.tickets.search import search_optimizer, TicketSearch
from tf_awt.tickets.search_callback import TicketSearchCallback

from conftest import ATTACK, own_settings, tiny_data, tiny_model, total_prunable
from tf_awt.engine.distances import target_distance
from tf_awt.tickets.methods import METHODS
from tf_awt.tickets.pruning_schedule import AWTSchedule

def run_search(model, density=0.3, epochs=2, update_every=2, **settings):
    x, y = tiny_data()
    config = tf_awt.SearchConfig.from_settings(dict(density=density, attack=ATTACK, epochs=epochs, update_every=update_every, **settings))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    search = TicketSearch(model, config, steps_per_epoch=3)
    search.compile(optimizer=tf_keras.optimizers.Adam(config.options.learning_rate))
    callback = TicketSearchCallback()
    search.fit(ds, epochs=epochs, callbacks=[callback], verbose=0)
    return search, callback


def test_loss_decreases_over_the_search():
    # Per-entry normalization with weight 1e-3 keeps both terms active on this tiny net.
    search, cb = run_search(tiny_model(), density=0.2, epochs=10, update_every=1000, learning_rate=1e-2,
                            normalization="per_entry", kernel_weight=1e-3)
    loss = np.array(cb.history["loss"])
    assert len(loss) == 30
    assert loss[-3:].mean() < 0.6 * loss[:3].mean()
    assert all(np.isfinite(cb.history["kernel_distance"]))


@pytest.mark.parametrize("scope", _selection.SCOPES)
@pytest.mark.parametrize("method", METHODS)
def test_density_is_exactly_met(method, scope):
    model = tiny_model()
    fast = own_settings(method, update_every=1)
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.25, method=method, attack=ATTACK, epochs=1,
                                batch_size=16, scope=scope, **fast)
    if method == "erk" or scope in ("erk", "frankle_carbin"):  # ERK counts in every layer for method erk, whatever the scope
        layers = [l for l in model.layers if hasattr(l, "kernel")]
        allocate = _selection.erk_densities if method == "erk" or scope == "erk" else _selection.frankle_carbin_densities
        densities = allocate([l.kernel.shape for l in layers], 0.25)
        assert [ticket.masks[l.name].sum() for l in layers] == \
            [_selection.kept_count(l.kernel.shape.num_elements(), d) for l, d in zip(layers, densities)]
    elif scope == "global":
        assert ticket.num_kept == round(0.25 * total_prunable(model))
    else:
        for name, mask in ticket.masks.items():
            assert mask.sum() == round(0.25 * mask.size), name
    assert set(np.unique(np.concatenate([m.ravel() for m in ticket.masks.values()]))) <= {0.0, 1.0}
    assert all(m.sum() > 0 for m in ticket.masks.values())  # no layer collapse


def test_collapse_guard_keeps_every_layer_alive():
    # A layer whose weights are all tiny would lose everything under a plain global top-k.
    scores = [tf.fill([50, 40], 10.0), tf.fill([40, 3], 1e-6)]
    masks = _selection.top_k_masks(scores, density=0.05, scope="global")
    kept = [int(m.numpy().sum()) for m in masks]
    assert kept[1] >= 3 and sum(kept) == round(0.05 * (2000 + 120))


def test_density_one_gives_the_dense_network():
    model = tiny_model()
    ticket = tf_awt.find_ticket(model, tiny_data(), density=1.0, attack=ATTACK, epochs=1, batch_size=16)
    assert all(m.all() for m in ticket.masks.values())
    sparse = ticket.to_model(model)
    x, _ = tiny_data(8, seed=3)
    np.testing.assert_allclose(sparse(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6)


def test_eps_zero_gives_clean_inputs():
    x, y = tiny_data(8)
    model = tiny_model()
    adv = tf_awt.pgd(lambda z: model(z), x, y, ATTACK.replace(eps=0.0))
    np.testing.assert_array_equal(adv.numpy(), x)
    adv = tf_awt.pgd(lambda z: model(z), x, y, ATTACK)
    assert np.abs(adv.numpy() - x).max() > 0
    assert np.abs(adv.numpy() - x).max() <= 0.1 + 1e-6


def test_ntt_search_attacks_nothing():
    config = tf_awt.SearchConfig(density=0.5, method="ntt", attack=ATTACK)
    assert config.effective_attack.eps == 0.0


def test_mask_is_frozen_after_the_search_and_rewind_restores_theta0():
    model = tiny_model()
    theta0 = [w.copy() for w in model.get_weights()]
    search, cb = run_search(model, epochs=2, update_every=2)
    assert cb.history["mask_updates"][-1] == 3  # steps 2, 4, 6 of 6
    masks = search.current_masks()
    # θ0 bit for bit on unmasked weights, zero on pruned ones.
    ticket = search.ticket(cb.history)
    for name, mask in masks.items():
        layer = next(l for l in search.student.layers if getattr(l, "layer", None) is not None and l.layer.name == name)
        idx = [i for i, l in enumerate(model.layers) if l.name == name][0]
        w0 = model.layers[idx].kernel.numpy()
        got = layer.layer.kernel.numpy()
        np.testing.assert_array_equal(got[mask == 1], w0[mask == 1])
        assert np.all(got[mask == 0] == 0)
    assert all(np.array_equal(a, b) for a, b in zip(ticket.initial_weights, theta0))
    # Continued training of the ticket never changes the mask.
    sparse = ticket.to_model(model)
    sparse.compile(optimizer="adam", loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    import tensorflow_model_optimization as tfmot
    x, y = tiny_data()
    sparse.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    for layer in sparse.layers:
        if hasattr(layer, "pruning_vars"):
            kernel, mask, _ = layer.pruning_vars[0]
            np.testing.assert_array_equal(mask.numpy(), ticket.masks[layer.layer.name])
            assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)


def test_rewind_learned_keeps_the_students_weights():
    model = tiny_model()
    search, cb = run_search(model, epochs=1)
    ticket = search.ticket(cb.history)
    assert any(not np.array_equal(a, b) for a, b in zip(ticket.learned_weights, ticket.initial_weights))
    learned = ticket.to_model(model, rewind="learned")
    init = ticket.to_model(model, rewind="init")
    x, _ = tiny_data(4, seed=9)
    assert not np.allclose(learned(x).numpy(), init(x).numpy())


def test_diagonal_kernel_search_runs():
    _, cb = run_search(tiny_model(), epochs=1, kernel="diagonal")
    assert len(cb.history["kernel_distance"]) == 3 and all(np.isfinite(cb.history["loss"]))


def test_ticket_save_load_round_trip(tmp_path):
    model = tiny_model()
    search, cb = run_search(model, epochs=1)
    ticket = search.ticket(cb.history)
    path = tmp_path / "t.npz"
    ticket.save(str(path))
    loaded = tf_awt.Ticket.load(str(path))
    assert loaded.method == ticket.method and loaded.history == ticket.history
    assert tf_awt.SearchConfig.from_config(loaded.config) == tf_awt.SearchConfig.from_config(ticket.config)
    for name in ticket.masks:
        np.testing.assert_array_equal(loaded.masks[name], ticket.masks[name])
    for a, b in zip(loaded.initial_weights, ticket.initial_weights):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temp file left behind
    (tmp_path / "bad.npz").write_bytes(b"not a ticket")
    with pytest.raises(ValueError, match="bad.npz is not a tf_awt ticket"):
        tf_awt.Ticket.load(str(tmp_path / "bad.npz"))


def test_schedule_round_trips_and_freezes():
    schedule = AWTSchedule(0.05, update_every=10, end_step=100)
    assert AWTSchedule.from_config(schedule.get_config()) == schedule
    steps = {s: bool(schedule(tf.constant(s))[0]) for s in (0, 5, 10, 100, 110)}
    assert steps == {0: True, 5: False, 10: True, 100: True, 110: False}
    assert np.isclose(float(schedule(0)[1]), 0.95)
    frozen = AWTSchedule.frozen_at(0.05)
    assert not any(bool(frozen(s)[0]) for s in (0, 1, 100))
    assert AWTSchedule.from_config(frozen.get_config()) == frozen


def test_configs_round_trip():
    config = tf_awt.SearchConfig.from_settings(dict(density=0.1, attack=tf_awt.Attack(norm="l2", eps=2.0), kernel="diagonal"))
    assert tf_awt.SearchConfig.from_config(config.get_config()) == config
    assert tf_awt.Attack.from_config(config.attack.get_config()) == config.attack


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"density": 0.0}, r"density must be in \(0, 1\]. You passed: 0.0"),
        ({"density": 1.5}, r"density must be in \(0, 1\]. You passed: 1.5"),
        ({"density": 0.1, "gamma": -1.0}, r"gamma must be a number >= 0. You passed: -1.0"),
        ({"density": 0.1, "update_every": 0}, r"update_every \(T_m\) must be an integer >= 1. You passed: 0"),
        ({"density": 0.1, "method": "grasp"}, r"method must be one of .*You passed: 'grasp'"),
        ({"density": 0.1, "kernel": "sampled"}, r"kernel must be one of .*You passed: 'sampled'"),
        ({"density": 0.1, "precision": "float16"}, r"precision must be one of .*You passed: 'float16'"),
    ],
)
def test_bad_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tf_awt.find_ticket(tiny_model(), tiny_data(), **kwargs)


def test_model_without_prunable_layers_is_refused():
    model = tf_keras.Sequential([tf_keras.layers.Input((6, 6, 1)), tf_keras.layers.Flatten(), tf_keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="has no prunable layers"):
        tf_awt.find_ticket(model, tiny_data(), density=0.5)


def test_dataset_of_the_wrong_shape_is_refused():
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"each input has shape \(5, 5, 1\), the model expects \(6, 6, 1\)"):
        tf_awt.find_ticket(tiny_model(), (x[:, :5, :5], y), density=0.5)
    ds = tf.data.Dataset.from_tensor_slices((x[:, :5, :5], y)).batch(4)
    with pytest.raises(ValueError, match=r"shape \(None, 5, 5, 1\), the model expects \(batch, 6, 6, 1\)"):
        tf_awt.find_ticket(tiny_model(), ds, density=0.5)


def test_readme_example_runs():
    """The example in find_ticket's docstring (also in README.md)."""
    x_train, y_train = tiny_data()
    model = tf_awt.models.mlp(input_shape=(6, 6, 1), num_classes=3, hidden=(12, 8))
    ticket = tf_awt.find_ticket(model, (x_train, y_train), density=0.05, epochs=1, attack=ATTACK)
    sparse = ticket.to_model(model)
    assert abs(ticket.density - 0.05) < 1 / total_prunable(model) + 1e-9
    assert sparse.output_shape == (None, 3)


def test_tfmot_callbacks_and_strip_pruning_work_with_the_search(tmp_path):
    import tensorflow_model_optimization as tfmot

    model = tiny_model()
    x, y = tiny_data()
    config = tf_awt.SearchConfig.from_settings(dict(density=0.3, attack=ATTACK, epochs=1, update_every=2))
    search = TicketSearch(model, config, steps_per_epoch=3)
    search.compile(optimizer=tf_keras.optimizers.Adam(config.options.learning_rate))
    logs = tmp_path / "logs"
    search.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0, callbacks=[
        TicketSearchCallback(log_dir=str(logs / "search")),
        tfmot.sparsity.keras.UpdatePruningStep(),
        tfmot.sparsity.keras.PruningSummaries(log_dir=str(logs / "pruning")),
    ])
    assert list((logs / "search").glob("events.out.tfevents*"))
    assert list((logs / "pruning").rglob("events.out.tfevents*"))
    ticket = search.ticket()
    stripped = tfmot.sparsity.keras.strip_pruning(ticket.to_model(model))
    assert not any(type(l).__name__ == "PruneLowMagnitude" for l in stripped.layers)
    for layer in stripped.layers:
        if layer.name in ticket.masks:
            kernel = layer.kernel.numpy()
            assert np.all(kernel[ticket.masks[layer.name] == 0] == 0)
            assert np.count_nonzero(kernel) == int(ticket.masks[layer.name].sum())


# --------------------------------------------------------------------------- the paper's conventions
def _decay_of_first_step(form, weight_decay, density=0.3):
    """The decay term of step 1 as logged (loss − target − weighted kernel) and ‖m0 ⊙ θ0‖²."""
    model = tiny_model()
    search, cb = run_search(model, density=density, epochs=1, update_every=100, weight_decay=weight_decay,
                            weight_decay_form=form)
    h = cb.history
    logged = h["loss"][0] - h["target_distance"][0] - h["weighted_kernel_distance"][0]
    masks = _selection.top_k_masks([tf.abs(l.kernel) for l in model.layers if hasattr(l, "kernel")], density)
    norm = sum(float(tf.reduce_sum(tf.square(l.kernel * m))) for l, m in
               zip([l for l in model.layers if hasattr(l, "kernel")], masks))
    return search, logged, norm


@pytest.mark.parametrize("form,scale", [("l2", 1.0), ("l2_per_density", 1 / 0.3)])
def test_weight_decay_in_the_loss_is_beta_or_ntts_lambda_over_density(form, scale):
    _, logged, norm = _decay_of_first_step(form, 0.05)
    assert norm > 0
    assert logged == pytest.approx(0.05 * scale * norm, rel=1e-4)


def test_decoupled_weight_decay_is_algorithm_1_line_5():
    """w ← w − η∇L − β·m⊙w: with η → 0 every kept weight shrinks by (1 − β) per step, pruned ones stay."""
    model = tiny_model()
    theta0 = [l.kernel.numpy().copy() for l in model.layers if hasattr(l, "kernel")]
    search, cb = run_search(model, density=0.3, epochs=1, update_every=100, weight_decay=0.1,
                            weight_decay_form="decoupled", learning_rate=1e-9)
    h = cb.history
    assert h["loss"][0] == pytest.approx(h["target_distance"][0] + h["weighted_kernel_distance"][0], rel=1e-6)
    masks = search.current_masks()
    for w0, wrapper, learned in zip(theta0, search._wrappers, search.learned_weights[0::2]):  # kernels, biases
        mask = masks[wrapper.layer.name] > 0
        np.testing.assert_allclose(learned[mask], w0[mask] * 0.9 ** 3, rtol=1e-5, atol=1e-7)  # 3 steps
        np.testing.assert_allclose(learned[~mask], w0[~mask], rtol=1e-5, atol=1e-7)


def test_frankle_carbin_allocation_gives_the_papers_density_grid():
    """LeNet-300-100 after n = 3, 8, 11, 15, 18 rounds (hidden ×0.8, output ×0.9 per round): the
    paper's 51.3 / 16.9 / 8.7 / 3.6 / 1.8% (the last is 1.85%, which the paper truncates)."""
    shapes = [(784, 300), (300, 100), (100, 10)]
    sizes = np.array([np.prod(s) for s in shapes], float)
    for rounds, paper in ((3, 51.3), (8, 16.9), (11, 8.7), (15, 3.6), (18, 1.8)):
        overall = 100 * float(np.dot(_selection.frankle_carbin_round_densities(shapes, rounds), sizes) / sizes.sum())
        assert abs(overall - paper) < 0.06, (rounds, overall)
    densities = _selection.frankle_carbin_densities(shapes, 0.036)
    assert float(np.dot(densities, sizes) / sizes.sum()) == pytest.approx(0.036, rel=1e-9)
    assert densities[0] == densities[1] == pytest.approx(0.0354, abs=1e-4) and densities[2] == pytest.approx(0.206, abs=1e-3)
    assert _selection.frankle_carbin_rounds(shapes, 0.036) == pytest.approx(15, abs=0.05)


@pytest.mark.parametrize("method", ["awt", "snip", "synflow", "cosentino"])  # each way a method selects masks
def test_every_method_keeps_the_same_explicit_allocation(method):
    model = tiny_model()
    x, y = tiny_data()
    wanted = {"dense_0": 0.25, "dense_1": 0.5, "logits": 0.75}
    sizes = {l.name: l.kernel.shape.num_elements() for l in model.layers if hasattr(l, "kernel")}
    density = sum(wanted[n] * s for n, s in sizes.items()) / sum(sizes.values())
    fast = own_settings(method, update_every=2, rounds=2)
    ticket = tf_awt.find_ticket(model, (x, y), density=density, method=method, attack=ATTACK, epochs=1, batch_size=16,
                                layer_densities=wanted, **fast)
    for name, d in wanted.items():
        assert ticket.layer_density[name] == pytest.approx(round(d * sizes[name]) / sizes[name])
    if method not in ("awt", "cosentino"):  # the allocation is computed once for every method: two suffice
        return
    fc = tf_awt.find_ticket(model, (x, y), density=0.3, method=method, attack=ATTACK, epochs=1, batch_size=16,
                            scope="frankle_carbin", **fast)
    expected = _selection.frankle_carbin_densities([sizes_shape for sizes_shape in
                                                    (l.kernel.shape for l in model.layers if hasattr(l, "kernel"))], 0.3)
    for (name, size), d in zip(sizes.items(), expected):
        assert fc.layer_density[name] == pytest.approx(round(d * size) / size)


@pytest.mark.parametrize("kwargs,message", [
    (dict(student_kernel="dense"), r"student_kernel must be one of \['masked', 'full'\]. You passed: 'dense'"),
    (dict(weight_decay_form="adamw"), r"weight_decay_form must be one of \['l2', 'l2_per_density', 'decoupled'\]. You passed: 'adamw'"),
    (dict(layer_densities=[0.5, 0.0]), r"layer_densities\[1\] must be .*You passed: 0.0"),
    (dict(layer_densities="layer"), r"layer_densities must be a list of densities in \(0, 1\]"),
    (dict(scope="frankle"), r"scope must be one of .*'frankle_carbin'.*You passed: 'frankle'"),
])
def test_bad_convention_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tf_awt.SearchConfig.from_settings(dict(density=0.3, **kwargs))


def test_layer_densities_must_fit_the_model_and_the_density():
    model = tiny_model()
    x, y = tiny_data()
    with pytest.raises(ValueError, match=r"one density per prunable layer \['dense_0', 'dense_1', 'logits'\].*missing: \['logits'\]"):
        tf_awt.find_ticket(model, (x, y), density=0.3, method="magnitude", layer_densities={"dense_0": 0.3, "dense_1": 0.3})
    with pytest.raises(ValueError, match=r"keep 0.5000 of the .* but density is 0.3: they must agree"):
        tf_awt.find_ticket(model, (x, y), density=0.3, method="magnitude", layer_densities=[0.5, 0.5, 0.5])


def test_glorot_normal_init_is_ntts():
    tf_keras.utils.set_random_seed(0)
    model = tf_awt.models.mlp(init="glorot_normal")
    kernel, bias = model.get_layer("dense_0").get_weights()
    assert abs(kernel.std() - np.sqrt(2 / (784 + 300))) < 0.1 * np.sqrt(2 / (784 + 300))  # truncated normal: ≈ 0.88·σ
    assert np.abs(kernel).max() <= 2 * np.sqrt(2 / (784 + 300)) / 0.87962566 + 1e-6
    assert 0.008 < bias.std() < 0.012
    with pytest.raises(ValueError, match=r"init must be one of \['glorot_uniform', 'glorot_normal'\]. You passed: 'he'"):
        tf_awt.models.mlp(init="he")


def test_first_step_distances_equal_an_independent_computation():
    """Step 1's logged distances from first principles: the teacher θ0 attacked with the stateless
    seed [2·seed, 0], the student m0 ⊙ θ0 (m0 = top-k |θ0|) attacked with [2·seed + 1, 0], the
    student's kernel masked, the kernel term weighted by γ². Catches a student attacked with the
    teacher's inputs, a teacher that is the student, and a wrong weighting."""
    from tf_awt.adversarial.attacks import pgd

    model = tiny_model()
    x, y = tiny_data(16)
    attack = tf_awt.Attack(eps=0.2, steps=3, step_size=0.1)
    config = tf_awt.SearchConfig.from_settings(dict(density=0.3, attack=attack, epochs=1, update_every=100, gamma=0.05, seed=3))
    search = TicketSearch(model, config, steps_per_epoch=1)
    search.compile(optimizer=tf_keras.optimizers.Adam(config.options.learning_rate))
    callback = TicketSearchCallback()
    search.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, callbacks=[callback], verbose=0)
    layers = [l for l in model.layers if hasattr(l, "kernel")]
    masks = {l.name: m.numpy() for l, m in zip(layers, _selection.top_k_masks([tf.abs(l.kernel) for l in layers], 0.3))}
    student = tf_keras.models.clone_model(model)
    student.set_weights(model.get_weights())
    for layer in student.layers:
        if layer.name in masks:
            layer.kernel.assign(layer.kernel * masks[layer.name])
    x = tf.constant(x)
    x_t = pgd(lambda z: model(z, training=False), x, y, attack, seed=tf.constant([6, 0], tf.int64))
    x_s = pgd(lambda z: student(z, training=False), x, y, attack, seed=tf.constant([7, 0], tf.int64))
    assert float(tf.reduce_max(tf.abs(x_t - x_s))) > 1e-3  # the two attacks differ
    target = target_distance(model(x_t), student(x_s))
    kernel = tf_awt.kernel_distance(tf_awt.mixed_tangent_kernel(model, x, x_t),
                                    tf_awt.mixed_tangent_kernel(student, x, x_s, masks=masks))
    h = callback.history
    assert h["target_distance"][0] == pytest.approx(float(target), rel=1e-4)
    assert h["kernel_distance"][0] == pytest.approx(float(kernel), rel=1e-4)
    assert h["weighted_kernel_distance"][0] == pytest.approx(0.05 ** 2 * float(kernel), rel=1e-4)


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


# ---------------------------------------------------------------------------- score search
def test_optimize_is_validated():
    with pytest.raises(ValueError, match=r"optimize must be one of \('weights', 'scores'\)\. You passed: 'mask'"):
        tf_awt.SearchConfig.from_settings(dict(density=0.2, optimize="mask"))


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
    config = tf_awt.SearchConfig.from_settings(dict(density=0.25, optimize="scores", attack=ATTACK.replace(eps=0.0), kernel_weight=1.0,
                                 learning_rate=0.05))
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
    assert ticket.config["options"]["optimize"] == "scores" and len(ticket.history["loss"]) == 9
