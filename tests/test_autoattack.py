"""The native standard AutoAttack (APGD-CE, APGD-T, Square): against a closed form, against ART's
implementation of the same attacks on the same model and digits, and its schedule."""
import numpy as np
import pytest
import tf_keras

import tf_awt
from tf_awt.adversarial.apgd import checkpoints
from tf_awt.adversarial.square import image_layout, p_schedule
from tf_awt.adversarial.evaluation import evaluation_attack


def test_apgd_checkpoints_follow_the_published_schedule():
    # Croce & Hein (2020): p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)
    assert checkpoints(100)[:4] == [21, 40, 56, 69]
    assert all(b - a >= 6 for a, b in zip(checkpoints(100), checkpoints(100)[1:]))
    assert checkpoints(100)[-1] < 100 and checkpoints(1) == [0]


def test_square_schedule_and_layout():
    p = p_schedule(0.8, 10000)
    assert p[0] == p[10] == pytest.approx(0.8) and p[11] == pytest.approx(0.4) and p[-1] == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 5000)[6] == pytest.approx(0.4)  # the fractions scale with the budget
    assert image_layout((784,)) == (28, 28, 1) and image_layout((10,)) == (1, 10, 1) and image_layout((8, 8)) == (8, 8, 1)


# --------------------------------------------------------------------------- closed form
def _linear_task(n=400, d=16, seed=0):
    """Two logits (w·x + b, 0) with w > 0 everywhere, Gaussian data, no data range: under L∞ an
    example is robust exactly when its margin |w·x + b| exceeds ε‖w‖₁ on the right side."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, d).astype("float32")
    x = rng.normal(0, 1, (n, 4, 4, 1)).astype("float32")
    score = x.reshape(n, -1) @ w + 0.3
    y = (score < 0).astype("int64")  # class 0 iff the score is positive: every clean example is right
    flip = rng.random(n) < 0.1       # and 10% labels flipped: wrong clean, never robust
    y[flip] = 1 - y[flip]
    model = tf_keras.Sequential([tf_keras.layers.Input((4, 4, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(2, kernel_initializer=tf_keras.initializers.Constant(0.0))])
    model.layers[-1].set_weights([np.stack([w, np.zeros(d, "float32")], 1), np.array([0.3, 0.0], "float32")])
    return model, x, y, score, w


@pytest.mark.parametrize("suite", ["apgd-ce", "apgd-t", "square"])
def test_each_native_attack_reaches_the_exact_robust_accuracy_of_a_linear_classifier(suite):
    model, x, y, score, w = _linear_task()
    eps = 0.05
    exact = ((y == 0) & (score - eps * w.sum() > 0)) | ((y == 1) & (score + eps * w.sum() < 0))
    attack = evaluation_attack(eps, steps=10).replace(clip_min=None, clip_max=None)
    config = tf_awt.EvalConfig(apgd_iterations=20, fab_iterations=20, square_queries=300)
    result = tf_awt.evaluate(model, (x, y), attack=attack, config=config.replace(attacks=[suite]))
    assert 0.2 < exact.mean() < 0.8  # the ε-ball matters for this data: a test that can fail
    # sound (nothing breaks what is provably robust) and complete (it finds every break there is)
    assert result.robust_accuracy == pytest.approx(exact.mean(), abs=1 / len(x))


def test_fab_t_finds_the_minimal_linf_perturbation_of_a_linear_classifier():
    """FAB-T converges to the closest point of the boundary from outside: on a linear classifier the
    distance is exact, |w·x + b| / ‖w‖₁; it breaks nothing farther than ε (sound) and everything
    closer than ε / 1.01 (its published settings stop within 1% of the minimum)."""
    import tensorflow as tf

    from tf_awt.adversarial.fab import fab_targeted

    model, x, y, score, w = _linear_task()
    eps = 0.05
    distance = np.abs(score) / w.sum()
    right = (score > 0) == (y == 0)
    run = tf.function(lambda a, b, t: fab_targeted(model, a, b, t, eps=eps, clip=(-np.inf, np.inf)))
    adv, fooled = (v.numpy() for v in run(tf.constant(x), tf.constant(y), tf.constant(1 - y)))
    found = np.abs(adv - x).reshape(len(x), -1).max(axis=1)
    assert 20 < (right & (distance <= eps)).sum() < right.sum() - 20  # ε matters: a test that can fail
    assert not (fooled & right & (distance > eps)).any()
    assert fooled[right & (distance <= eps / 1.01)].all()
    assert np.all(found[fooled & right] >= distance[fooled & right] * (1 - 1e-5))
    assert np.all(found[fooled & right] <= distance[fooled & right] * 1.01)
    result = tf_awt.evaluate(model, (x, y), attack=evaluation_attack(eps, steps=10).replace(clip_min=None, clip_max=None),
                             config=tf_awt.EvalConfig(attacks=["fab-t"]))
    assert result.robust_accuracy == pytest.approx((right & ~fooled).mean(), abs=1e-9)
    assert result.attack_label == "FAB-T-100 ×1 targets"


def test_the_linf_projection_equals_a_linear_program_in_float64():
    """project_linf: the smallest ‖δ‖∞ with w·(t + δ) = b inside [0, 1], against scipy's LP."""
    import tensorflow as tf
    from scipy.optimize import linprog

    from tf_awt.adversarial.fab import project_linf

    rng = np.random.default_rng(1)
    solved = 0
    for _ in range(100):
        d = int(rng.integers(1, 9))
        t, w = rng.uniform(0, 1, (1, d)), rng.normal(0, 1, (1, d))
        w[0, rng.random(d) < 0.2] = 0
        b = np.array([w[0] @ t[0] + rng.normal(0, 1)])
        delta = project_linf(*(tf.constant(v) for v in (t, w, b)), tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64))
        delta = delta.numpy()[0]
        c = b[0] - w[0] @ t[0]
        a_ub = np.vstack([np.hstack([np.eye(d), -np.ones((d, 1))]), np.hstack([-np.eye(d), -np.ones((d, 1))])])
        lp = linprog(np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w[0], 0.0][None], b_eq=[c],
                     bounds=[(-t[0, i], 1 - t[0, i]) for i in range(d)] + [(0, None)])
        if lp.status != 0:  # the box cannot reach the hyperplane: the step goes as far as it can towards it
            continue
        solved += 1
        assert w[0] @ delta == pytest.approx(c, abs=1e-9) and np.all((t[0] + delta >= -1e-12) & (t[0] + delta <= 1 + 1e-12))
        assert np.abs(delta).max() == pytest.approx(lp.x[-1], abs=1e-9)
    assert solved > 50


# --------------------------------------------------------------------------- against ART
@pytest.fixture(scope="module")
def digits_model():
    tf_keras.utils.set_random_seed(0)
    split = tf_awt.data.load("mnist-5k")
    model = tf_awt.models.mlp(hidden=(64,))
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.x_train[:2000], split.y_train[:2000], epochs=3, batch_size=64, verbose=0)
    return model, split.x_test[:200], split.y_test[:200]


def _noise(p, n):
    return 2 * np.sqrt(2 * max(p * (1 - p), 1 / n) / n)  # two standard errors of a difference of two estimates


def _art_robust(model, x, y, make):
    pytest.importorskip("art")
    from tf_awt.adversarial.autoattack import art_classifier

    attack = evaluation_attack(0.04).replace(clip_min=0.0, clip_max=1.0)
    classifier = art_classifier(lambda z: model(z), x.shape[1:], 10, attack)
    natural = model.predict(x, verbose=0).argmax(1) == y
    return float(np.mean(natural & (model.predict(make(classifier), verbose=0).argmax(1) == y)))


@pytest.mark.parametrize("suite", ["apgd-ce", "apgd-t", "square"])
def test_each_native_attack_agrees_with_arts_implementation(digits_model, suite):
    model, x, y = digits_model
    labels = np.eye(10, dtype="float32")[y]

    def art_attack(classifier):
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

        if suite == "square":
            return SquareAttack(classifier, eps=0.04, max_iter=1000, p_init=0.8, nb_restarts=1, batch_size=256,
                                verbose=False).generate(x, labels)
        if suite == "apgd-ce":
            return AutoProjectedGradientDescent(classifier, eps=0.04, eps_step=0.08, max_iter=100, nb_random_init=1,
                                                loss_type="cross_entropy", batch_size=256, verbose=False).generate(x, labels)
        # APGD-T: ART's targeted APGD with the DLR loss, once per target (the 3 highest clean logits after the top)
        order = np.argsort(-model.predict(x, verbose=0), axis=1)
        adv, fooled = x.copy(), np.zeros(len(x), bool)
        for k in range(1, 4):
            run = AutoProjectedGradientDescent(classifier, eps=0.04, eps_step=0.08, max_iter=100, nb_random_init=1,
                                               targeted=True, loss_type="difference_logits_ratio", batch_size=256,
                                               verbose=False).generate(x, np.eye(10, dtype="float32")[order[:, k]])
            hit = ~fooled & (model.predict(run, verbose=0).argmax(1) != y)
            adv[hit], fooled = run[hit], fooled | hit
        return adv

    theirs = _art_robust(model, x, y, art_attack)
    budget = {"apgd-ce": {}, "apgd-t": {}, "square": {"square_queries": 1000}}[suite]
    made = tf_awt.adversarial.attack_suites.attack_suites([suite], tf_awt.EvalConfig(**budget))[0]
    if suite == "apgd-t":
        made.targets = 3
    ours = tf_awt.evaluate(model, (x, y), attack=evaluation_attack(0.04), config=tf_awt.EvalConfig(attacks=[made])).robust_accuracy
    assert 0.2 < theirs < 0.9  # an ε where the attacks have work to do
    assert abs(ours - theirs) <= _noise(theirs, len(x)), (suite, ours, theirs)


def test_fab_t_agrees_with_apgd_t_on_digits(digits_model):
    """ART has no FAB: FAB-T's cross-check on a trained network is the other targeted attack of the
    standard suite, APGD-T, on the same targets (the 3 highest clean logits after the top), within
    binomial noise, and the worst case of both is no better than either."""
    from tf_awt.adversarial.attack_suites import APGDSuite, FABSuite

    model, x, y = digits_model
    attack = evaluation_attack(0.04)
    fab, apgd_t = FABSuite(targets=3), APGDSuite("dlr-targeted", targets=3)
    one = {s.name: tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=[s]), check_subset=8).robust_accuracy
           for s in (fab, apgd_t)}
    both = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=[apgd_t, fab]), check_subset=8)
    assert 0.2 < one["apgd-t"] < 0.9
    assert abs(one["fab-t"] - one["apgd-t"]) <= _noise(one["apgd-t"], len(x)), one
    assert both.robust_accuracy <= min(one.values()) and list(both.suites) == ["apgd-t", "fab-t"]


def test_the_worst_case_agrees_with_arts_autoattack(digits_model):
    pytest.importorskip("multiprocess")
    from tf_awt.adversarial.attack_suites import ARTAutoAttackSuite

    model, x, y = digits_model
    attack = evaluation_attack(0.04, steps=20)
    ours = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(square_queries=1000).replace(restarts=1))
    theirs = tf_awt.evaluate(model, (x, y), attack=attack, config=tf_awt.EvalConfig(attacks=[ARTAutoAttackSuite(apgd_restarts=1)]))
    assert list(ours.suites) == ["pgd", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert abs(ours.robust_accuracy - theirs.robust_accuracy) <= _noise(theirs.robust_accuracy, len(x))
    assert ours.robust_accuracy <= ours.suites["pgd"]


def test_native_attacks_are_reproducible_and_stay_in_the_ball(digits_model):
    model, x, y = digits_model
    attack = evaluation_attack(0.04, steps=5)
    config = tf_awt.EvalConfig(apgd_iterations=10, fab_iterations=10, square_queries=100)
    one = tf_awt.evaluate(model, (x[:64], y[:64]), attack=attack, config=config.replace(attacks=["autoattack"]), seed=3)
    two = tf_awt.evaluate(model, (x[:64], y[:64]), attack=attack, config=config.replace(attacks=["autoattack"]), seed=3)
    assert one.suites == two.suites and not any("outside the eps-ball" in w for w in one.warnings)


def test_square_on_a_stated_subset_is_named_in_the_label(digits_model):
    model, x, y = digits_model
    config = tf_awt.EvalConfig(restarts=1, apgd_iterations=10, fab_iterations=10, square_queries=100, square_examples=20)
    result = tf_awt.evaluate(model, (x[:64], y[:64]), attack=evaluation_attack(0.04, steps=5), config=config)
    assert result.attack_label.endswith("Square-100 on the first 20 examples")
