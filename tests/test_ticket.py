"""Tickets (tf_awt.tickets.ticket) and the models they make, nested ones included: what a ticket reports is
what the model, the export and the kernel get; save/load/clone; a registered custom layer; configs
round-trip; a ticket on another architecture says what differs."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from _reference import reference_kernel, relative_error

import tf_awt
from tf_awt.engine._layers import iter_layers, unwrap

from conftest import good_data, small_mlp
from tf_awt.tickets.pruning_schedule import AWTSchedule

L = tf_keras.layers


def nested_model(dtype="float32", seed=0):
    """Flatten -> nested Sequential block -> nested functional block -> logits."""
    tf_keras.utils.set_random_seed(seed)
    seq = tf_keras.Sequential([L.Input((16,), dtype=dtype), L.Dense(12, activation="tanh", name="seq_dense", dtype=dtype)],
                              name="seq_block")
    fin = L.Input((12,), dtype=dtype)
    fout = L.Dense(8, activation="relu", name="fun_dense", dtype=dtype)(fin)
    fun = tf_keras.Model(fin, fout, name="fun_block")
    inp = L.Input((4, 4, 1), dtype=dtype)
    h = L.Flatten(dtype=dtype)(inp)
    out = L.Dense(3, name="out", dtype=dtype)(fun(seq(h)))
    return tf_keras.Model(inp, out, name="nested")


def _kernel_densities(model):
    out = {}
    for layer in iter_layers(model):
        inner, _ = unwrap(layer)
        if getattr(inner, "kernel", None) is not None:
            out[inner.name] = float(np.mean(inner.kernel.numpy() != 0))
    return out


@pytest.mark.parametrize("method", ["awt", "ntt", "random", "magnitude", "snip", "synflow"])
def test_every_reported_layer_density_is_what_the_model_and_export_hold(method, tmp_path):
    model = nested_model()
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (64, 4, 4, 1)).astype("float32"), rng.integers(0, 3, 64)
    ticket = tf_awt.find_ticket(model, (x, y), density=0.3, method=method, epochs=1, batch_size=32,
                                attack=tf_awt.Attack(eps=0.1, steps=1, step_size=0.1))
    assert set(ticket.layer_density) == {"seq_dense", "fun_dense", "out"}
    pruned = ticket.to_model(model)
    wrapped = [unwrap(l)[0].name for l in iter_layers(pruned) if unwrap(l)[1] is not None]
    assert sorted(wrapped) == ["fun_dense", "out", "seq_dense"]
    for name, density in _kernel_densities(pruned).items():
        assert density == pytest.approx(ticket.layer_density[name], abs=1e-6), name
    exported = tf_awt.export_saved_model(pruned, str(tmp_path / "saved"))  # what `tf-awt export` calls
    assert not [l for l in iter_layers(exported.model) if unwrap(l)[1] is not None]  # no tfmot wrappers left
    assert exported.zeros == pytest.approx(1 - ticket.density, abs=1e-6)
    loaded = tf_keras.models.load_model(str(tmp_path / "saved"))
    for name, density in _kernel_densities(loaded).items():
        assert density == pytest.approx(ticket.layer_density[name], abs=1e-6), name
    np.testing.assert_allclose(loaded(x[:5]).numpy(), pruned(x[:5]).numpy(), atol=1e-6)


def test_masked_kernel_of_a_nested_ticket_matches_the_float64_reference():
    model = nested_model()
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (32, 4, 4, 1)).astype("float32"), rng.integers(0, 3, 32)
    ticket = tf_awt.find_ticket(model, (x, y), density=0.3, method="magnitude")
    model64 = nested_model("float64")
    model64.set_weights([w.astype("float64") for w in ticket.initial_weights])
    pruned64 = ticket.to_model(model64)
    x1, x2 = tf.constant(x[:3], tf.float64), tf.constant(x[3:5], tf.float64)
    theta = tf_awt.mixed_tangent_kernel(pruned64, x1, x2, implementation="structured")
    masks = {name: m.astype("float64") for name, m in ticket.masks.items()}
    assert relative_error(theta, reference_kernel(model64, x1, x2, masks)) < 1e-5


@pytest.mark.parametrize("fmt", ["h5", "tf", "keras", "clone"])
def test_a_ticket_model_survives_save_load_and_clone(tmp_path, fmt):
    from tensorflow_model_optimization.python.core.sparsity.keras import prune

    model = nested_model()
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 1, (32, 4, 4, 1)).astype("float32"), rng.integers(0, 3, 32)
    ticket = tf_awt.find_ticket(model, (x, y), density=0.3, method="magnitude")
    pruned = ticket.to_model(model)
    if fmt == "clone":  # nested blocks are rebuilt from their config: tfmot's prune_scope, as for load_model
        with prune.prune_scope():
            back = tf_keras.models.clone_model(pruned)
        back.set_weights(pruned.get_weights())
    else:
        path = str(tmp_path / {"h5": "m.h5", "tf": "saved", "keras": "m.keras"}[fmt])
        if fmt == "h5":  # the legacy format a user may still pick: Keras says so, the ticket survives it
            with pytest.warns(UserWarning, match="HDF5 file"):
                pruned.save(path)
        else:
            pruned.save(path, **({"save_format": "tf"} if fmt == "tf" else {}))
        with prune.prune_scope():
            back = tf_keras.models.load_model(path)
    schedules = [l.pruning_schedule for l in iter_layers(back) if hasattr(l, "pruning_schedule")]
    assert len(schedules) == 3 and all(s == AWTSchedule.frozen_at(ticket.density) for s in schedules)
    masks = {unwrap(l)[0].name: unwrap(l)[1].numpy() for l in iter_layers(back) if unwrap(l)[1] is not None}
    for name, mask in ticket.masks.items():
        np.testing.assert_array_equal(masks[name], mask)
    np.testing.assert_allclose(back(x).numpy(), pruned(x).numpy(), atol=1e-6)


class TwinDense(L.Layer):
    """A user's own layer: y = act(x @ kernel + bias), unknown to tf_awt until registered."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = units, tf_keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="random_normal")
        self.use_bias = True

    def call(self, x):
        return self.activation(tf.matmul(x, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": tf_keras.activations.serialize(self.activation)}


def _twin_model(dtype="float32"):
    tf_keras.utils.set_random_seed(3)
    return tf_keras.Sequential([L.Input((6,), dtype=dtype), TwinDense(5, activation="tanh", name="twin", dtype=dtype),
                                L.Dense(3, name="out", dtype=dtype)])


def test_a_registered_custom_layer_is_pruned_and_its_kernel_block_is_exact():
    from tf_awt.engine.layer_rules import DENSE_RULE, layer_rule, register_layer_rule
    from tf_awt.tickets.search import prunable_layer_names

    model = _twin_model()
    if layer_rule(model.get_layer("twin")) is None:  # unregistered: left dense, named once in a warning
        with pytest.warns(UserWarning, match=r"layer 'twin' \(TwinDense\) has no tf_awt layer rule: it is left dense"):
            assert prunable_layer_names(model) == ["out"]
        with pytest.warns(UserWarning, match="falls back to the jacobian path.*'twin' \\(TwinDense\\)"):
            tf_awt.mixed_tangent_kernel_fn(model)
    register_layer_rule(TwinDense, DENSE_RULE)
    assert prunable_layer_names(model) == ["twin", "out"]
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 1, (40, 6)).astype("float32"), rng.integers(0, 3, 40)
    ticket = tf_awt.find_ticket(model, (x, y), density=0.4, method="magnitude", scope="layer")
    pruned = ticket.to_model(model)
    assert _kernel_densities(pruned)["twin"] == pytest.approx(ticket.layer_density["twin"], abs=1e-6)
    assert ticket.layer_density["twin"] < 0.5
    model64 = _twin_model("float64")
    model64.set_weights([w.astype("float64") for w in ticket.initial_weights])
    masks = {name: m.astype("float64") for name, m in ticket.masks.items()}
    x1 = tf.constant(x[:3], tf.float64)
    theta = tf_awt.mixed_tangent_kernel(model64, x1, x1, masks=masks, implementation="structured")
    assert relative_error(theta, reference_kernel(model64, x1, x1, masks)) < 1e-5
    with pytest.raises(ValueError, match="layer_class must be a tf_keras Layer subclass"):
        register_layer_rule(int, DENSE_RULE)


def test_results_and_configs_round_trip_through_json_with_their_types():
    import json

    model = tf_keras.Sequential([L.Input((4,)), L.Dense(3)])
    rng = np.random.default_rng(0)
    result = tf_awt.evaluate(model, (rng.uniform(0, 1, (20, 4)).astype("float32"), np.arange(20) % 3),
                             attack=tf_awt.Attack(eps=0.1, steps=1, step_size=0.1), config=tf_awt.EvalConfig(restarts=1))
    again = tf_awt.EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and all(isinstance(c, int) for c in again.per_class)
    config = tf_awt.SearchConfig(0.2, method="magnitude", scope="layer")
    assert tf_awt.SearchConfig.from_config(json.loads(json.dumps(config.get_config()))) == config
    schedule = AWTSchedule(0.2, 7, end_step=30)
    assert AWTSchedule.from_config(json.loads(json.dumps(schedule.get_config()))) == schedule


def test_ticket_on_another_architecture_says_what_differs(tmp_path):
    model = small_mlp()
    ticket = tf_awt.find_ticket(model, good_data(32), density=0.5, method="magnitude")
    wider = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(7, activation="relu", name="h"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"mask for layer 'h' has shape \(64, 6\), the model's kernel has shape \(64, 7\)"):
        ticket.to_model(wider)
    renamed = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(6, name="other"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"masks layers \['h'\] that model .* does not have"):
        ticket.to_model(renamed)
    deeper = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(6, name="h"), L.Dense(6, name="mid"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"holds 4 initial weight arrays, model .* has 6"):
        ticket.to_model(deeper)
    same = ticket.to_model(small_mlp(seed=1))  # same architecture: θ0 ⊙ m of the ticket, in tfmot wrappers
    from tf_awt.engine._layers import iter_layers, unwrap

    wrapped = {unwrap(l)[0].name: l for l in iter_layers(same)}
    for name, mask in ticket.masks.items():
        np.testing.assert_array_equal(unwrap(wrapped[name])[1].numpy(), mask)
        np.testing.assert_array_equal(unwrap(wrapped[name])[0].kernel.numpy(), model.get_layer(name).kernel.numpy() * mask)
    for payload, name in ((b"PK\x03\x04 truncated", "trunc.npz"), (b"", "empty.npz"), (b"garbage" * 10, "junk.npz")):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=f"{name} is not a tf_awt ticket file") as refused:
            tf_awt.Ticket.load(str(tmp_path / name))
        assert "pickle" not in str(refused.value)  # numpy's advice to unpickle a file that could not be read
    np.savez(tmp_path / "objects.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds Python objects, which are never loaded"):
        tf_awt.Ticket.load(str(tmp_path / "objects.npz"))
    with pytest.raises(ValueError, match="missing.npz does not exist"):
        tf_awt.Ticket.load(str(tmp_path / "missing.npz"))
    path = str(tmp_path / "t.npz")
    ticket.save(path)
    assert tf_awt.Ticket.load(path, model=small_mlp(seed=2)).masks.keys() == ticket.masks.keys()
    with pytest.raises(ValueError, match=r"t.npz: the ticket's mask for layer 'h' has shape \(64, 6\), the model's kernel"):
        tf_awt.Ticket.load(path, model=wider)
    arrays = dict(np.load(path))
    arrays["mask/h"] = arrays["mask/h"] * 0.5
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="mask of layer 'h' holds values other than 0 and 1"):
        tf_awt.Ticket.load(path)
