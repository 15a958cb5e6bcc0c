"""The sketched kernel distance: unbiased against the float64 brute-force reference, its
gradient too, variance ∝ 1/K, and ``search.kernel: sketch`` from the search and the command line."""
import numpy as np
import pytest
import tensorflow as tf
from _reference import explicit_jacobian, reference_kernel
from conftest import ATTACK, NO_TRAINING, alive_masks, inputs_for, make_model, tiny_data, tiny_model, tiny_recipe

import tf_awt
from tf_awt.running import cli
from tf_awt.engine.kernel_sketch import draw_probes, kernel_distance_sketch, tangent_products_fn

N = 4


def _setting(kind):
    """Teacher and student at one init (the search's first step) and three input sets; the masks
    keep every layer alive."""
    teacher, student = make_model(kind, seed=0), make_model(kind, seed=0)
    x, x_t, x_s = (inputs_for(teacher, N, seed=s) for s in (2, 3, 4))
    return teacher, student, x, x_t, x_s, alive_masks(student, x, density=0.3)


def _student_kernel(student, x, x_s, masks, convention):
    if convention == "masked":
        return reference_kernel(student, x, x_s, masks)
    j1, j2 = (explicit_jacobian(student, z, masks, effective=True) for z in (x, x_s))
    return tf.einsum("icp,jdp->ijcd", j1, j2)


def _exact(teacher, student, x, x_t, x_s, masks, convention):
    """‖Θ0(x, x_t) − Θˢ(x, x_s)‖²_F / N², one explicit Jacobian row at a time (differentiable)."""
    theta_t = tf.stop_gradient(reference_kernel(teacher, x, x_t))
    return tf.reduce_sum(tf.square(theta_t - _student_kernel(student, x, x_s, masks, convention))) / N**2


@pytest.mark.parametrize("kind,convention", [("mlp", "masked"), ("mlp", "full"), ("cnn", "masked"), ("cnn", "full"),
                                             ("functional", "masked")])
def test_estimate_is_unbiased(kind, convention):
    teacher, student, x, x_t, x_s, masks = _setting(kind)
    exact = float(_exact(teacher, student, x, x_t, x_s, masks, convention))
    unmasked = float(_exact(teacher, student, x, x_t, x_s, {}, "masked"))
    estimate, samples = kernel_distance_sketch(teacher, student, x, x_t, x_s, masks=masks, probes=3000, seed=(7, 1),
                                               student_kernel=convention, return_samples=True)
    se = float(np.std(samples) / np.sqrt(samples.shape[0]))
    assert float(estimate) == pytest.approx(float(np.mean(samples)), rel=1e-9)
    assert abs(float(estimate) - exact) < 3 * se, (float(estimate), exact, se)
    assert abs(unmasked - exact) > 6 * se, (unmasked, exact, se)  # an estimate ignoring the masks fails
    if kind == "mlp":  # and one of the other convention
        other = float(_exact(teacher, student, x, x_t, x_s, masks, "full" if convention == "masked" else "masked"))
        assert abs(other - exact) > 6 * se, (other, exact, se)


@pytest.mark.parametrize("kind,convention", [("mlp", "masked"), ("mlp", "full"), ("cnn", "masked"), ("cnn", "full")])
def test_gradient_is_unbiased_per_weight_tensor(kind, convention):
    teacher, student, x, x_t, x_s, masks = _setting(kind)
    variables = student.trainable_variables
    with tf.GradientTape() as tape:
        exact = _exact(teacher, student, x, x_t, x_s, masks, convention)
    exact_grads = tape.gradient(exact, variables)

    @tf.function
    def sketched_gradient(seed):  # the gradient of one estimate with 8 probes
        with tf.GradientTape() as tape:
            estimate = kernel_distance_sketch(teacher, student, x, x_t, x_s, masks=masks, probes=8, seed=seed,
                                              student_kernel=convention)
        return tape.gradient(estimate, variables)

    draws = [sketched_gradient(tf.constant([3, r], tf.int64)) for r in range(200)]  # independent draws
    per_probe = [None if g[0] is None else tf.stack(g) for g in zip(*draws)]
    checked = 0
    for v, g_exact, g in zip(variables, exact_grads, per_probe):
        if g is None:  # the output bias: its kernel column is constant, so the distance does not depend on it
            assert g_exact is None or not np.any(g_exact.numpy()), v.name
            continue
        checked += 1
        g = g.numpy().reshape(g.shape[0], -1)
        mean, exact_flat = g.mean(axis=0), g_exact.numpy().ravel()
        se = np.sqrt(np.sum(g.var(axis=0)) / g.shape[0])  # standard error of the mean, as a vector norm
        assert np.linalg.norm(exact_flat) > 3 * se, v.name  # a gradient the test can tell from zero
        assert np.linalg.norm(mean - exact_flat) < 3 * se, (v.name, np.linalg.norm(mean - exact_flat), se)
    assert checked >= len(variables) - 1


def test_variance_falls_as_one_over_the_number_of_probes():
    teacher, student, x, x_t, x_s, masks = _setting("mlp")
    _, samples = kernel_distance_sketch(teacher, student, x, x_t, x_s, masks=masks, probes=4000, seed=(1, 1),
                                        return_samples=True)
    samples = samples.numpy()
    for k in (4, 16):
        means = samples.reshape(-1, k).mean(axis=1)
        ratio = k * means.var() / samples.var()
        assert 0.6 < ratio < 1.5, (k, ratio)


def test_probes_are_rademacher_stateless_and_fresh_per_seed():
    a = draw_probes([3, 4], 8, 5, 10)
    assert a.shape == (8, 5, 10) and set(np.unique(a.numpy())) == {-1.0, 1.0}
    np.testing.assert_array_equal(a, draw_probes([3, 4], 8, 5, 10))
    assert not np.array_equal(a, draw_probes([3, 5], 8, 5, 10))
    assert abs(float(tf.reduce_mean(a))) < 4 / np.sqrt(a.shape.num_elements())  # E[v] = 0 up to sampling
    gram = np.einsum("kp,kq->pq", a.numpy().reshape(8, -1), a.numpy().reshape(8, -1)) / 8
    assert np.allclose(np.diag(gram), 1.0)


def test_products_are_theta_times_v_for_a_model_without_layer_rules():
    """A layer the structured kernel has no rule for (a custom Dense) works: no layer rule needed."""
    import tf_keras

    class Scaled(tf_keras.layers.Layer):
        def build(self, shape):
            self.kernel = self.add_weight("kernel", (shape[-1], 3), dtype=self.dtype)

        def call(self, x):
            return tf.tanh(x @ self.kernel) * 2.0

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Input((4,), dtype="float64"), Scaled(dtype="float64", name="custom"),
                                 tf_keras.layers.Dense(2, dtype="float64", name="out")])
    x1, x2 = tf.constant(np.random.default_rng(0).normal(size=(3, 4))), tf.constant(np.random.default_rng(1).normal(size=(5, 4)))
    v = draw_probes([0, 0], 2, 5, 2, tf.float64)
    products = tangent_products_fn(model)(x1, x2, v)
    theta = reference_kernel(model, x1, x2)  # (3, 5, 2, 2)
    np.testing.assert_allclose(products, tf.einsum("ijcd,kjd->kic", theta, v), rtol=1e-10)


def test_bad_arguments_name_the_value():
    teacher, student = make_model("mlp"), make_model("mlp", seed=1)
    x = inputs_for(teacher, 2)
    with pytest.raises(ValueError, match=r"probes must be an integer >= 1. You passed: 0"):
        kernel_distance_sketch(teacher, student, x, x, probes=0)
    with pytest.raises(ValueError, match="student_kernel must be one of"):
        kernel_distance_sketch(teacher, student, x, x, student_kernel="ntk")
    with pytest.raises(ValueError, match="probes must be an integer >= 1. You passed: 0"):
        tf_awt.SearchConfig.from_settings(dict(density=0.1, kernel="sketch", probes=0))
    with pytest.raises(ValueError, match=r"kernel must be one of \('full', 'diagonal', 'sketch'\)"):
        tf_awt.SearchConfig.from_settings(dict(density=0.1, kernel="exact"))


def _first_step_distance(kernel, probes=4):
    from tf_awt.tickets.search import TicketSearch, search_optimizer

    x, y = tiny_data(16)
    config = tf_awt.SearchConfig.from_settings(dict(density=0.3, kernel=kernel, probes=probes, attack=ATTACK, epochs=1, seed=3))
    search = TicketSearch(tiny_model(), config)
    search.compile(optimizer=search_optimizer(config))
    search.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return float(search.step_values["kernel_distance"].numpy())


def test_search_step_sketch_estimates_the_exact_step_distance():
    """The first step's logged kernel distance (before any update): the sketch with many probes is
    the exact one within its standard error (≤ √(2/K) relative), same PGD inputs, same masks."""
    exact = _first_step_distance("full")
    assert _first_step_distance("sketch", probes=2048) == pytest.approx(exact, rel=0.1)
    assert _first_step_distance("diagonal") != pytest.approx(exact, rel=0.1)  # the tolerance tells kernels apart


def test_cli_runs_a_sketched_search_and_refuses_bad_probes(tmp_path, capsys, monkeypatch):
    from tf_awt.tickets import search

    seen = {}
    original = search.TicketSearch.__init__

    def spy(self, model, config, *args, **kwargs):
        seen["config"] = config
        original(self, model, config, *args, **kwargs)

    monkeypatch.setattr(search.TicketSearch, "__init__", spy)
    recipe = tiny_recipe(tmp_path, train=NO_TRAINING)
    out = tmp_path / "sketch"
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow", "--set", "search.kernel=sketch",
                     "--set", "search.probes=3", "--set", "search.student_kernel=full"]) == 0, capsys.readouterr().err[-2000:]
    assert (seen["config"].options.kernel, seen["config"].options.probes, seen["config"].options.student_kernel) == \
        ("sketch", 3, "full")
    ticket = tf_awt.Ticket.load(str(out / "ticket.npz"))
    distances = np.asarray(ticket.history["kernel_distance"])
    assert ticket.config["options"]["kernel"] == "sketch" and ticket.config["options"]["probes"] == 3
    assert distances.size and np.all(np.isfinite(distances)) and np.all(distances > 0), distances
    assert cli.main(["run", recipe, "--out", str(tmp_path / "bad"), "--quiet", "--no-mlflow",
                     "--set", "search.kernel=sketch", "--set", "search.probes=0"]) == 2
    err = capsys.readouterr().err
    assert "probes must be an integer >= 1. You passed: 0" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
def test_a_large_model_search_runs_through_the_cli_with_the_sketch(tmp_path, capsys, model):
    """The machinery at VGG-16 / ResNet-18 size (32×32×3 inputs): the exact kernels would need
    ≈ 15–19 GB of per-example gradients per side; the sketch runs (the fast variant of this path is
    ``test_cli_runs_a_sketched_search_and_refuses_bad_probes``)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_shaped.npz"
    np.savez(path, x=rng.uniform(0, 1, (64, 32, 32, 3)).astype("float32"), y=rng.integers(0, 10, 64))
    recipe = tiny_recipe(tmp_path, dataset=str(path), model=model, density=0.05, train=NO_TRAINING,
                         attack={"norm": "linf", "eps": 8 / 255, "steps": 2, "step_size": 2 / 255},
                         search={"epochs": 1, "update_every": 1, "batch_size": 32, "kernel": "sketch", "probes": 1},
                         eval={"steps": 2, "restarts": 1})
    out = tmp_path / model
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0, capsys.readouterr().err[-2000:]
    ticket = tf_awt.Ticket.load(str(out / "ticket.npz"))
    kept = sum(float(m.sum()) for m in ticket.masks.values()) / sum(m.size for m in ticket.masks.values())
    distances = np.asarray(ticket.history["kernel_distance"])
    assert kept == pytest.approx(0.05, abs=1e-3) and distances.size >= 1 and np.all(np.isfinite(distances))


@pytest.mark.parametrize("method,optimize,norm", [("ntt", "weights", "linf"), ("awt", "scores", "l2")])
def test_every_kernel_method_searches_with_the_sketch(method, optimize, norm):
    """NTT, the score search and an L2 attack take the sketch too: the logged distance is the
    estimate (positive, finite) and the ticket keeps the density."""
    x, y = tiny_data(32)
    attack = tf_awt.Attack(norm=norm, eps=0.1 if norm == "linf" else 0.5, steps=2,
                           step_size=0.05 if norm == "linf" else 0.25)
    model = tiny_model()
    ticket = tf_awt.find_ticket(model, (x, y), density=0.3, method=method, epochs=1, batch_size=16, update_every=1,
                                optimize=optimize, attack=attack, kernel="sketch", probes=2, seed=1)
    distances = np.asarray(ticket.history["kernel_distance"])
    assert distances.size == 2 and np.all(np.isfinite(distances)) and np.all(distances > 0)
    kept = sum(float(m.sum()) for m in ticket.masks.values()) / sum(m.size for m in ticket.masks.values())
    assert kept == pytest.approx(0.3, abs=0.01)
    assert ticket.config["options"]["kernel"] == "sketch" and ticket.config["options"]["optimize"] == optimize
