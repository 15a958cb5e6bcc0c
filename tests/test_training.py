"""PGD adversarial training through model.fit: masks fixed, metrics, and that it buys robustness."""
import numpy as np
import tensorflow as tf
import tf_keras

import tf_awt
from tf_awt.adversarial.attacks import Attack

from conftest import ATTACK, tiny_data, tiny_model
from tf_awt.adversarial.evaluation import evaluation_attack
from tf_awt.adversarial.training import AdversarialTrainer, training_attack


def test_masks_stay_fixed_and_pruned_weights_exactly_zero():
    model = tiny_model()
    ticket = tf_awt.find_ticket(model, tiny_data(), density=0.2, method="magnitude")
    sparse = ticket.to_model(model)
    x, y = tiny_data()
    history = tf_awt.adversarial_fit(sparse, (x, y), (x[:16], y[:16]), attack=ATTACK, epochs=2, batch_size=16)
    for key in ("loss", "adv_accuracy", "nat_loss", "nat_accuracy", "val_loss", "val_adv_accuracy", "val_nat_loss", "val_nat_accuracy"):
        assert len(history.history[key]) == 2, key
    changed = False
    for layer in sparse.layers:
        if hasattr(layer, "pruning_vars"):
            kernel, mask, _ = layer.pruning_vars[0]
            np.testing.assert_array_equal(mask.numpy(), ticket.masks[layer.layer.name])
            assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)
            w0 = ticket.initial_weights[[w.shape for w in ticket.initial_weights].index(kernel.shape)]
            changed |= not np.allclose(kernel.numpy()[mask.numpy() == 1], w0[mask.numpy() == 1])
    assert changed  # it did train


def test_dense_model_trains_too():
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    tf_awt.adversarial_fit(model, tiny_data(), attack=ATTACK, epochs=1, batch_size=16)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_training_examples_are_adversarial():
    """The trainer's PGD examples raise the loss over the clean batch (on an untrained net)."""
    model = tiny_model()
    trainer = AdversarialTrainer(model, ATTACK.replace(eps=0.3, steps=5, step_size=0.1))
    x, y = tiny_data(32)
    adv = tf_awt.pgd(trainer._inference, x, y, trainer.attack)
    ce = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert float(ce(y, model(adv))) > float(ce(y, model(x)))
    assert np.abs(adv.numpy() - x).max() <= 0.3 + 1e-6 and adv.numpy().min() >= 0 and adv.numpy().max() <= 1


def test_paper_training_attacks():
    assert training_attack("mnist") == tf_awt.Attack(eps=0.3, steps=40, step_size=0.01)
    cifar = training_attack("cifar10")
    assert np.isclose(cifar.eps, 8 / 255) and cifar.steps == 10 and np.isclose(cifar.step_size, 2 / 255)


def test_adversarial_training_buys_robustness_on_real_mnist():
    """MNIST-5k (real digits), MLP 784-64-10, 3 epochs: PGD training vs natural training at eps=0.1."""
    split = tf_awt.data.load("mnist-5k")
    test = (split.x_test[:300], split.y_test[:300])
    robust = {}
    for eps in (0.0, 0.1):
        tf_keras.utils.set_random_seed(0)
        model = tf_awt.models.mlp(hidden=(64,))
        tf_awt.adversarial_fit(model, (split.x_train, split.y_train), attack=tf_awt.Attack(eps=eps, steps=10, step_size=0.025),
                               epochs=3)
        result = tf_awt.evaluate(model, test, attack=evaluation_attack(0.1, steps=20), config=tf_awt.EvalConfig(restarts=1))
        assert result.natural_accuracy > 0.75
        robust[eps] = result.robust_accuracy
    assert robust[0.1] > robust[0.0] + 0.2, robust


def test_one_training_step_descends_the_loss_on_the_seeded_pgd_inputs():
    """The trainer's step = one SGD step on the cross-entropy of PGD inputs drawn with the stateless
    seed [seed, step] against the current model (not the clean inputs)."""
    model = tiny_model()
    reference = tf_keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    attack = ATTACK.replace(eps=0.3, steps=3, step_size=0.1)
    x, y = tiny_data(16)
    trainer = AdversarialTrainer(model, attack, seed=4)
    trainer.compile(optimizer=tf_keras.optimizers.SGD(0.5))
    trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    x_adv = tf_awt.pgd(lambda z: reference(z, training=False), tf.constant(x), y, attack, seed=tf.constant([4, 0], tf.int64))
    assert float(tf.reduce_max(tf.abs(x_adv - x))) > 0.1
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, reference(x_adv, training=True)))
    grads = tape.gradient(loss, reference.trainable_variables)
    for variable, grad, trained in zip(reference.trainable_variables, grads, model.trainable_variables):
        np.testing.assert_allclose(trained.numpy(), (variable - 0.5 * grad).numpy(), rtol=1e-4, atol=1e-6)


def _traced_mlp():
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
    tf_awt.adversarial_fit(_traced_mlp(), (x, y), attack=attack, epochs=2, batch_size=8, callbacks=[fit_count])
    tf_awt.find_ticket(_traced_mlp(), (x, y), density=0.5, attack=attack, epochs=2, batch_size=8, update_every=2,
                       callbacks=[search_count])
    # The optimizer's slots are made before the first step: a step that creates variables traces twice.
    assert (fit_count.traces, search_count.traces) == (1, 1)
