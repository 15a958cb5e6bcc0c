"""N:M structured sparsity: the pattern is exact for every method, checked against a NumPy reference."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from hypothesis import given, settings, strategies as st

import tf_awt
from tf_awt.running import cli
from tf_awt.tickets import _selection
from tf_awt.tickets.ticket import Ticket

from conftest import ATTACK, own_settings, tiny_data, tiny_model, tiny_recipe


def _reference_nm(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Brute force: for each unit (last axis), each run of m consecutive flattened input weights keeps its n largest."""
    fan_in = int(np.prod(score.shape[:-1]))
    flat = score.reshape(fan_in, score.shape[-1])
    keep = np.zeros_like(flat)
    for unit in range(flat.shape[1]):
        for start in range(0, fan_in, m):
            group = flat[start:start + m, unit]
            for i in np.argsort(-group, kind="stable")[:min(n, len(group))]:
                keep[start + i, unit] = 1
    return keep.reshape(score.shape)


def _groups_ok(mask: np.ndarray, n: int, m: int) -> bool:
    fan_in = int(np.prod(mask.shape[:-1]))
    flat = mask.reshape(fan_in, mask.shape[-1])
    return all(flat[s:s + m].sum(axis=0).tolist() == [min(n, len(flat[s:s + m]))] * flat.shape[1] for s in range(0, fan_in, m))


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(8, 3), (7, 2), (3, 3, 2, 4), (2, 2, 3, 5), (1, 9)]),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 8), (2, 3)]), seed=st.integers(0, 10_000))
def test_nm_masks_equal_the_brute_force_reference(shape, nm, seed):
    score = np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # no ties
    mask = _selection.nm_masks([tf.constant(score)], *nm)[0].numpy()
    np.testing.assert_array_equal(mask, _reference_nm(score, *nm))
    assert _groups_ok(mask, *nm)
    assert mask.sum() / mask.size == pytest.approx(_selection.nm_density([shape], *nm))


def test_straight_through_nm_masks_are_exact_and_pass_the_gradient():
    scores = [tf.Variable(np.random.default_rng(0).normal(size=(8, 3)), dtype=tf.float32)]
    with tf.GradientTape() as tape:
        mask = _selection.straight_through_masks(scores, 0.5, "global", "2:4")[0]
        loss = tf.reduce_sum(mask * 3.0)
    assert _groups_ok(mask.numpy(), 2, 4)
    np.testing.assert_allclose(tape.gradient(loss, scores)[0].numpy(), 3.0)


@pytest.mark.parametrize("method,extra", [("awt", {}), ("awt", {"optimize": "scores"}), ("ntt", {}), ("magnitude", {}),
                                          ("random", {}), ("snip", {}), ("synflow", {}),
                                          ("cosentino", {"rounds": 2, "epochs": 1})])
def test_every_method_keeps_exactly_the_pattern(method, extra):
    model = tiny_model()
    settings_ = own_settings(method, **dict(dict(epochs=1, update_every=2), **extra))
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.5, method=method, attack=ATTACK, batch_size=16,
                                pattern="2:4", **settings_)
    for name, mask in ticket.masks.items():
        assert _groups_ok(mask, 2, 4), name
    expected = _selection.nm_density([m.shape for m in ticket.masks.values()], 2, 4)
    assert ticket.density == pytest.approx(expected)
    if method == "magnitude":  # the pattern of |θ0|, exactly
        for layer in tf_awt.engine.layer_rules.prunable_layers(model):
            np.testing.assert_array_equal(ticket.masks[layer.name], _reference_nm(np.abs(layer.kernel.numpy()), 2, 4))


@pytest.mark.parametrize("changes,message", [
    (dict(pattern="4:2"), r"pattern must be 'unstructured' or 'N:M' with 1 <= N < M.*You passed: '4:2'"),
    (dict(pattern="2-4"), r"You passed: '2-4'"),
    (dict(pattern="2:4", density=0.1), r"density must be 0.5. You passed: density=0.1"),
    (dict(pattern="2:4", density=0.5, scope="erk"), r"cannot be combined with ERK"),
    (dict(pattern="1:4", density=0.25, method="random_layerwise"), r"method='random_layerwise'"),
])
def test_bad_patterns_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        tf_awt.SearchConfig.from_settings(dict(**dict(dict(density=0.5), **changes)))


def test_pattern_from_the_cli_reaches_the_ticket_and_the_export(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, density=0.5, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                         train={"epochs": 1, "batch_size": 32, "steps": 1, "step_size": 0.05})
    out = tmp_path / "run"
    code = cli.main(["run", recipe, "--set", "search.pattern=2:4", "--out", str(out), "--quiet", "--no-mlflow"])
    assert code == 0, capsys.readouterr().err[-2000:]
    ticket = Ticket.load(str(out / "ticket.npz"))
    assert tf_awt.SearchConfig.from_config(ticket.config).pattern == "2:4"
    model = tf_keras.models.load_model(str(out / "saved_model"))  # what the run exported
    for layer in tf_awt.engine.layer_rules.prunable_layers(model):
        assert _groups_ok((layer.kernel.numpy() != 0).astype(np.float32), 2, 4), layer.name
    assert json.loads((out / "summary.json").read_text())["density"] == pytest.approx(0.5)


def test_n_colon_m_in_a_recipe_file_is_a_pattern_not_a_base_60_number(tmp_path):
    # YAML 1.1 (PyYAML's default) reads 2:4 as 2 * 60 + 4 = 124; found when a sweep's --set search.pattern=2:4 failed.
    from tf_awt.running.recipes import apply_overrides, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("density: 0.5\nsearch: {pattern: 2:4}\n")
    assert load_recipe(str(path)).search.pattern == "2:4"
    assert apply_overrides({}, ["search.pattern=1:4", "seed=12", "search.lr=0x10"]) == {"search": {"pattern": "1:4", "lr": 16}, "seed": 12}
