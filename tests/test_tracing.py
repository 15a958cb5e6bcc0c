"""Training and search steps are traced once (issue 15)."""
import numpy as np
import tf_keras

import tf_awt
from tf_awt.attacks import Attack


def _model():
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.layers.Input((3, 3, 1)), tf_keras.layers.Conv2D(2, 2, activation="tanh"),
                                tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])


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
