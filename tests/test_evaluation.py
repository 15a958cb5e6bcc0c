"""evaluate(): accuracies, restarts, per-class numbers, sanity checks, logits-only."""
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from conftest import tiny_data, tiny_model, trained_model
from tf_awt.adversarial.attack_suites import AttackSuite, attack_suite_names, register_attack_suite
from tf_awt.adversarial.evaluation import evaluation_attack

ATTACK = evaluation_attack(0.1, steps=5)


def test_accuracies_and_per_class():
    model = trained_model()
    x, y = tiny_data(64, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy evaluation raises no sanity warning
        result = tf_awt.evaluate(model, (x, y), attack=ATTACK, batch_size=20, config=tf_awt.EvalConfig(restarts=2))
    pred = model(x).numpy().argmax(1)
    assert np.isclose(result.natural_accuracy, np.mean(pred == y))
    assert 0 <= result.robust_accuracy <= result.natural_accuracy
    assert result.num_examples == 64 and result.restarts == 2 and result.warnings == []
    counts = sum(v["count"] for v in result.per_class.values())
    assert counts == 64
    for c, v in result.per_class.items():
        assert np.isclose(v["natural_accuracy"], np.mean(pred[y == c] == c))


def test_eps_zero_robust_equals_natural():
    model = trained_model()
    result = tf_awt.evaluate(model, tiny_data(40, seed=6), attack=ATTACK.replace(eps=0.0), config=tf_awt.EvalConfig(restarts=1))
    assert result.robust_accuracy == result.natural_accuracy


def test_restarts_never_raise_robust_accuracy():
    model = trained_model()
    data = tiny_data(64, seed=7)
    one = tf_awt.evaluate(model, data, attack=ATTACK, seed=1, config=tf_awt.EvalConfig(restarts=1))
    five = tf_awt.evaluate(model, data, attack=ATTACK, seed=1, config=tf_awt.EvalConfig(restarts=5))
    assert five.robust_accuracy <= one.robust_accuracy


def test_default_attack_is_the_papers_pgd100():
    attack = evaluation_attack(0.3)
    assert attack.steps == 100 and np.isclose(attack.effective_step_size, 2.5 * 0.3 / 100) and attack.random_start


def test_softmax_output_is_refused():
    model = tf_keras.Sequential([tf_keras.layers.Input((6, 6, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="outputs probabilities.*needs logits"):
        tf_awt.evaluate(model, tiny_data(8))
    hidden_softmax = tf_keras.Sequential([tf_keras.layers.Input((6, 6, 1)), tf_keras.layers.Flatten(),
                                          tf_keras.layers.Dense(3), tf_keras.layers.Activation(tf.nn.softmax)])
    with pytest.raises(ValueError, match="outputs probabilities"):
        tf_awt.evaluate(hidden_softmax, tiny_data(8))


def test_gradient_masking_is_reported():
    """A model with a step function inside has zero input gradients everywhere."""
    inp = tf_keras.layers.Input((6, 6, 1))
    h = tf_keras.layers.Lambda(lambda t: tf.stop_gradient(tf.round(t)))(inp)
    out = tf_keras.layers.Dense(3)(tf_keras.layers.Flatten()(h))
    model = tf_keras.Model(inp, out)
    with pytest.warns(UserWarning, match="all-zero input gradient"):
        result = tf_awt.evaluate(model, tiny_data(16), attack=ATTACK, config=tf_awt.EvalConfig(restarts=1))
    assert any("gradient masking" in w for w in result.warnings)


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="restarts must be an integer >= 1. You passed: 0"):
        tf_awt.evaluate(model, tiny_data(8), config=tf_awt.EvalConfig(restarts=0))
    x, y = tiny_data(8)
    with pytest.raises(ValueError, match="8 inputs and 7 labels"):
        tf_awt.evaluate(model, (x, y[:7]))


def _image_task(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32")
    f = x.reshape(n, -1)
    y = (f[:, :32].mean(1) > 0.5).astype("int64") + (f[:, 32:].mean(1) > 0.5)
    return x, y


def _image_model(masked_gradient=False):
    tf_keras.utils.set_random_seed(0)
    layers = [tf_keras.layers.Input((8, 8, 1))]
    if masked_gradient:  # input quantization: zero input gradient almost everywhere (gradient masking)
        layers.append(tf_keras.layers.Lambda(lambda z: tf.stop_gradient(tf.round(z * 2) / 2)))
    layers += [tf_keras.layers.Flatten(), tf_keras.layers.Dense(32, activation="relu"), tf_keras.layers.Dense(3)]
    model = tf_keras.Sequential(layers)
    x, y = _image_task()
    model.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, verbose=0)
    return model


def test_art_autoattack_suite_is_counted_as_worst_case_and_stays_in_the_ball():
    pytest.importorskip("art")
    pytest.importorskip("multiprocess")  # ART's AutoAttack needs it; without it the test skips, not fails
    from tf_awt.adversarial.attack_suites import ARTAutoAttackSuite
    from tf_awt.adversarial.autoattack import autoattack

    for bad in ("apgd_iterations", "apgd_restarts", "square_queries"):
        with pytest.raises(ValueError, match=f"{bad}.*You passed: 0"):
            ARTAutoAttackSuite(**{bad: 0})
    model = _image_model()
    x, y = _image_task(48, seed=1)
    attack = evaluation_attack(0.08, steps=10)
    adv = autoattack(lambda z: model(z, training=False), x, y, attack, 3, square_queries=50, apgd_iterations=20,
                     apgd_restarts=1)
    assert np.abs(adv - x).max() <= 0.08 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    suite = ARTAutoAttackSuite(square_queries=50, apgd_iterations=20, apgd_restarts=1)
    result = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=["pgd", suite], restarts=1))
    assert list(result.suites) == ["pgd", "art-autoattack"]
    assert result.robust_accuracy == result.suites["art-autoattack"] <= result.suites["pgd"] <= result.natural_accuracy


def test_the_default_evaluation_exposes_gradient_masking_that_fools_pgd():
    """Input quantization masks the gradient: PGD alone overstates robustness, the default suites
    (PGD, then the native standard AutoAttack) do not, and the black-box Square says why."""
    model = _image_model(masked_gradient=True)
    x, y = _image_task(48, seed=1)
    attack = evaluation_attack(0.3, steps=10)
    config = tf_awt.EvalConfig(restarts=1, apgd_iterations=20, fab_iterations=20, square_queries=300)
    with pytest.warns(UserWarning) as caught:
        result = tf_awt.evaluate(model, (x, y), attack=attack, config=config)
    said = [str(w.message) for w in caught]
    assert any("all-zero input gradient" in m for m in said)
    assert any("black-box Square attack broke" in m and "gradient masking" in m for m in said)
    assert list(result.suites) == ["pgd", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert result.robust_accuracy == result.suites["square"] < result.suites["pgd"] - 0.2
    assert result.broken_by["square"] > 0.1 and result.attack_label.startswith("worst case of PGD-10 ×1, APGD-CE-20")


def test_a_pgd_only_evaluation_of_a_masked_network_warns_and_is_labelled_so():
    model = _image_model(masked_gradient=True)
    x, y = _image_task(48, seed=1)
    attack = evaluation_attack(0.3, steps=10)
    config = tf_awt.EvalConfig(attacks=["pgd"], restarts=1, apgd_iterations=20, fab_iterations=20, square_queries=300)
    with pytest.warns(UserWarning):
        result = tf_awt.evaluate(model, (x, y), attack=attack, config=config)
    assert list(result.suites) == ["pgd"] and result.pgd_only and result.attack_label == "PGD-only (PGD-10 ×1)"
    probe = [w for w in result.warnings if w.startswith("on the first 48 examples, the black-box Square broke")]
    assert probe and "overestimates robustness" in probe[0] and "eval.attacks: [pgd, autoattack]" in probe[0]


def test_evaluation_takes_a_list_of_attack_suites():
    from tf_awt.adversarial.attack_suites import AttackSuite, PGDSuite

    model = _image_model()
    x, y = _image_task(48, seed=2)
    attack = evaluation_attack(0.2, steps=5)
    by_name = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=["pgd"], restarts=2))
    by_list = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=[PGDSuite(restarts=2)]))
    assert by_name.suites == by_list.suites and by_name.robust_accuracy == by_list.robust_accuracy
    assert by_list.restarts == 2

    class Blur(AttackSuite):  # a user's own attack: a wrong input outside the ball is not counted, and reported
        name, label = "blur", "Blur"

        def adversarial_sets(self, context):
            yield np.clip(context.x + 0.05, 0, 1)           # inside the L∞ ball of 0.2
            yield np.clip(context.x + 0.5, 0, 1)            # outside: must not be counted

    with pytest.warns(UserWarning, match=r"Blur returned \d+ inputs outside the eps-ball"):
        result = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=[Blur(), "pgd"], restarts=1))
    assert list(result.suites) == ["blur", "pgd"]
    assert result.robust_accuracy == result.suites["pgd"] <= result.suites["blur"]
    assert any(w.startswith("Blur returned") and "not counted" in w for w in result.warnings)
    for bad, message in (([], "non-empty list"), (["pgd", "pgd"], "must not repeat"), (["fgsm"], "You passed: 'fgsm'"),
                         (42, "must be a list of attack suite names")):
        with pytest.raises(ValueError, match=message):
            tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=bad))


# --------------------------------------------------------------------------- exact aggregation
def _sign_model():
    """logits = (x0 − x1, x1 − x0): class 0 iff x0 > x1; known outcome for any input."""
    inp = tf_keras.Input((2,))
    out = tf_keras.layers.Dense(2, use_bias=False, kernel_initializer=tf_keras.initializers.Constant([[1., -1.], [-1., 1.]]))(inp)
    return tf_keras.Model(inp, out)


def _flip(x, which):
    """x with the examples ``which`` moved 0.2 across the decision line (inside an L∞ ball of 0.25)."""
    adv = x.copy()
    for i in which:
        adv[i] = x[i] + (np.array([-0.2, 0.2]) if x[i, 0] > x[i, 1] else np.array([0.2, -0.2]))
    return adv


def test_robust_accuracy_is_the_worst_case_over_every_set_of_every_suite():
    from tf_awt.adversarial.attack_suites import AttackSuite

    x = np.array([[0.6, 0.45], [0.45, 0.6], [0.7, 0.55], [0.3, 0.42], [0.58, 0.5], [0.5, 0.6], [0.62, 0.5], [0.45, 0.55]],
                 "float32")
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1])  # example 6 is misclassified clean

    class Sets(AttackSuite):
        def __init__(self, name, flips):
            self.name = self.label = name
            self.flips = flips

        def adversarial_sets(self, context):  # flips examples by their place in the evaluation set
            for which in self.flips:
                yield _flip(context.x, [list(context.index).index(i) for i in which if i in context.index])

    first = Sets("first", [[0], [1, 2], []])           # restarts of one suite: worst over its sets
    second = Sets("second", [[3], [0, 4]])
    attack = evaluation_attack(0.25, steps=1)
    result = tf_awt.evaluate(_sign_model(), (x, y), attack=attack, check_subset=8, config=tf_awt.EvalConfig(attacks=[first, second]))
    assert result.natural_accuracy == 7 / 8
    assert result.suites == {"first": 4 / 8, "second": 2 / 8}  # after each suite; clean-wrong 6 never counts as robust
    assert result.broken_by == {"first": 3 / 8, "second": 2 / 8}  # second attacked only 3, 4, 5, 7
    assert result.robust_accuracy == 2 / 8                     # survivors: 5 and 7 only
    assert result.per_class[0]["robust_accuracy"] == 0.0 and result.per_class[1]["robust_accuracy"] == 2 / 5


@pytest.mark.parametrize("restarts", [1, 3])
def test_pgd_runs_as_many_starts_as_restarts_says(monkeypatch, restarts):
    from tf_awt.adversarial import attack_suites

    calls = []
    original = attack_suites.PGDSuite.adversarial_sets

    def counting(self, context):
        for adv in original(self, context):
            calls.append(1)
            yield adv

    monkeypatch.setattr(attack_suites.PGDSuite, "adversarial_sets", counting)
    result = tf_awt.evaluate(trained_model(), tiny_data(16, seed=3), attack=ATTACK, config=tf_awt.EvalConfig(restarts=restarts))
    assert len(calls) == restarts and result.restarts == restarts


def test_cli_evaluate_equals_the_library_at_a_non_default_attack(tmp_path):
    """``tf-awt evaluate --model`` on an exported model = ``tf_awt.evaluate`` of the same model, data
    and attack (L2, ε = 0.7, 4 steps, 2 restarts, 40 examples); the JSON echoes the attack."""
    import json

    from tf_awt.running import cli

    model = trained_model()
    x, y = tiny_data(60, seed=11)
    np.savez(tmp_path / "data.npz", x=x[:30], y=y[:30], x_test=x[30:], y_test=y[30:])
    tf_awt.export_saved_model(model, str(tmp_path / "saved"))
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", str(tmp_path / "saved"), "--data", str(tmp_path / "data.npz"), "--norm", "l2",
                     "--eps", "0.7", "--steps", "4", "--restarts", "2", "--max-examples", "40", "--json", str(out),
                     "--quiet"]) == 0
    got = json.loads(out.read_text())
    attack = evaluation_attack(0.7, norm="l2", steps=4)
    want = tf_awt.evaluate(model, (x[:40], y[:40]), attack=attack, config=tf_awt.EvalConfig(restarts=2))
    assert got["num_examples"] == 40
    assert (got["attack"]["norm"], got["attack"]["eps"], got["attack"]["steps"]) == ("l2", 0.7, 4)
    assert got["natural_accuracy"] == want.natural_accuracy
    assert abs(got["robust_accuracy"] - want.robust_accuracy) <= 1 / 40  # the SavedModel's float order may flip one tie
    assert want.robust_accuracy < want.natural_accuracy  # the attack does something at this ε


def test_a_registered_attack_suite_is_run_by_name_like_the_built_in_ones(monkeypatch):
    """``register_attack_suite`` (the suites' registry, like ``register_method``): ``attacks=[name]``
    builds it from ``restarts``, and its robust accuracy is exactly that of its adversarial inputs
    (a shift of every pixel by ε, recomputed here)."""
    from tf_awt.adversarial import attack_suites

    monkeypatch.setattr(attack_suites, "_BY_NAME", dict(attack_suites._BY_NAME))  # the test's registration is undone
    made = []

    class Shift(AttackSuite):
        name, label = "shift", "Shift"

        def __init__(self, restarts):
            made.append(restarts)
            self.restarts = restarts

        def adversarial_sets(self, context):
            yield np.clip(context.x + context.attack.eps, 0, 1)  # a corner of the ε-ball: an adversarial input

    register_attack_suite("shift", lambda config: Shift(config.restarts))
    assert "shift" in attack_suite_names() and attack_suite_names()[:2] == ("pgd", "apgd-ce")
    model = _image_model()
    x, y = _image_task(48, seed=2)
    attack = evaluation_attack(0.2, steps=5)
    alone = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=["shift"], restarts=2))
    result = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=["pgd", "shift"], restarts=2))
    assert made == [2, 2] and list(result.suites) == ["pgd", "shift"]
    shifted = np.clip(x + 0.2, 0, 1)
    natural = model.predict(x, verbose=0).argmax(-1) == y  # an example counts only if it is also classified right
    expected = float((natural & (model.predict(shifted, verbose=0).argmax(-1) == y)).mean())
    assert alone.suites["shift"] == pytest.approx(expected)
    assert result.robust_accuracy == result.suites["shift"] <= min(result.suites["pgd"], expected)
    register_attack_suite("wrong", lambda config: Shift(config.restarts))
    with pytest.raises(ValueError, match=r"registered as 'wrong' must make an AttackSuite named 'wrong'"):
        tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=["wrong"]))
    for name, make, message in (("a b", lambda c: None, "letters, digits"), ("autoattack", lambda c: None, "not a preset"), ("ok", "nope", "make must be a callable")):
        with pytest.raises(ValueError, match=message):
            register_attack_suite(name, make)


def test_evaluate_leaves_the_callers_global_seed_as_it_was():
    """The attacks' random starts are seeded inside evaluate only: a caller's seeded stream of random
    numbers continues after evaluate as if it had not run, and the result is the same whatever the
    caller's seed (an unseeded caller: tests/test_internals.py)."""
    from tensorflow.python.eager import context

    model, data = trained_model(), tiny_data(16, seed=3)
    tf.random.set_seed(7)
    first, second = tf.random.uniform([4]).numpy(), tf.random.uniform([4]).numpy()
    tf.random.set_seed(7)
    assert np.array_equal(tf.random.uniform([4]).numpy(), first)
    one = tf_awt.evaluate(model, data, attack=ATTACK, check_subset=8, config=tf_awt.EvalConfig(restarts=1))
    assert context.global_seed() == 7 and np.array_equal(tf.random.uniform([4]).numpy(), second)
    tf.random.set_seed(123)
    two = tf_awt.evaluate(model, data, attack=ATTACK, check_subset=8, config=tf_awt.EvalConfig(restarts=1))
    assert (one.natural_accuracy, one.robust_accuracy, one.suites) == (two.natural_accuracy, two.robust_accuracy, two.suites)


def test_attacks_and_their_budgets_are_chosen_in_one_place_the_eval_config():
    import inspect

    from tf_awt.adversarial.attack_suites import PGDSuite

    assert not {"attacks", "restarts"} & set(inspect.signature(tf_awt.evaluate).parameters)
    assert tf_awt.EvalConfig(attacks="pgd,autoattack").get_config()["attacks"] == ["pgd", "autoattack"]
    with pytest.raises(ValueError, match=r"register_attack_suite\(name, make\).*You passed: \[PGDSuite\(restarts=2\)\]"):
        tf_awt.EvalConfig(attacks=["apgd-ce", PGDSuite(restarts=2)]).get_config()
