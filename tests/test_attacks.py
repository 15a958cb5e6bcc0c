"""PGD as one traced loop: the same numbers as cleverhans' projected_gradient_descent, a graph that
does not grow with the steps, and training / search steps traced once (issue 15)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.attacks import Attack, pgd


def _model():
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.layers.Input((3, 3, 1)), tf_keras.layers.Conv2D(2, 2, activation="tanh"),
                                tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])


def _data(n=6):
    x = tf.random.stateless_uniform((n, 3, 3, 1), [0, 1])
    return x, tf.constant(np.arange(n) % 3)


@pytest.mark.parametrize("norm,eps,clip", [("linf", 0.1, (0.0, 1.0)), ("l2", 0.5, (0.0, 1.0)), ("l2", 0.5, (None, None))])
@pytest.mark.parametrize("labels", [True, False])
def test_pgd_is_cleverhans_projected_gradient_descent_step_for_step(norm, eps, clip, labels):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    model = _model()
    x, y = _data()
    attack = Attack(norm=norm, eps=eps, steps=4, step_size=eps / 3, clip_min=clip[0], clip_max=clip[1])
    y_arg = y if labels else None

    def ours():
        return pgd(model, x, y_arg, attack)

    def theirs():
        return projected_gradient_descent(model, x, eps, eps / 3, 4, np.inf if norm == "linf" else 2, clip_min=clip[0],
                                          clip_max=clip[1], y=None if y_arg is None else tf.cast(y, tf.int64),
                                          rand_init=True, sanity_checks=False)

    for wrap in (lambda f: f, tf.function):  # eager, and traced
        tf.random.set_seed(7)
        a = wrap(ours)().numpy()
        tf.random.set_seed(7)
        b = wrap(theirs)().numpy()
        np.testing.assert_array_equal(a, b)
    assert np.abs(a - x.numpy()).max() > 1e-3  # it moved


@pytest.mark.parametrize("seeded", [False, True])
def test_a_traced_pgd_does_not_grow_with_its_steps(seeded):
    model = _model()
    x, y = _data()

    def ops(steps):
        attack = Attack(eps=0.1, steps=steps, step_size=0.03)
        fn = tf.function(lambda a, b: pgd(model, a, b, attack, seed=tf.constant([1, 2]) if seeded else None))
        return len(fn.get_concrete_function(x, y).graph.get_operations())

    assert ops(3) == ops(60)  # cleverhans' Python loop unrolled: 60 copies of the model's gradient


class _TraceCount(tf_keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.traces = self.model.train_function.experimental_get_tracing_count()


def test_training_and_search_steps_are_traced_once():
    x = np.random.default_rng(0).uniform(0, 1, (24, 3, 3, 1)).astype("float32")
    y = np.arange(24) % 3
    attack = Attack(eps=0.1, steps=2, step_size=0.05)
    fit_count, search_count = _TraceCount(), _TraceCount()
    tf_awt.adversarial_fit(_model(), (x, y), attack=attack, epochs=2, batch_size=8, callbacks=[fit_count])
    tf_awt.find_ticket(_model(), (x, y), density=0.5, attack=attack, epochs=2, batch_size=8, update_every=2,
                       callbacks=[search_count])
    # The optimizer's slots are made before the first step: a step that creates variables traces twice.
    assert (fit_count.traces, search_count.traces) == (1, 1)
