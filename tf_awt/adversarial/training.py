"""PGD adversarial training (Madry et al.) through ``model.fit``, masks held fixed.

:class:`AdversarialTrainer` wraps a tf_keras model (dense, or a ticket in tfmot wrappers). Each
``train_step`` replaces the batch by PGD examples (cleverhans, random start, clipped to the data
range) generated against the current model in inference mode, then takes one optimizer step on
them. For a pruned model the forward passes (attack and training) run the wrappers' inner layers
with the kernels m ⊙ W (the masks stay in the tfmot wrappers; the wrappers' own call, with its
weight assignments, is bypassed), so pruned weights get exactly zero gradient; the wrappers' step
counter is kept in line with the optimizer (no ``UpdatePruningStep`` needed, though it may be
added) and, after every update, pruned weights are set back to exactly zero. Per epoch it reports natural and adversarial loss/accuracy on the
training batches and, with ``validation_data``, on the held-out split (``val_`` prefix).

``epsilon = 0`` is natural training.

Under a ``tf.distribute`` strategy (build the model and compile the trainer inside
``strategy.scope()``), ``fit`` splits each global batch over the replicas; each replica attacks its
own rows (with ``seed``, the random starts are the rows of the global batch's, see
:func:`tf_awt.adversarial.attacks.pgd`), the loss is averaged over the *global* batch
(``tf.nn.compute_average_loss``) and the optimizer all-reduces the gradients, so a step equals the
one-device step on the same global batch. Mask and step-counter writes go through
``merge_call`` (as tfmot's own wrappers do).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

from tf_awt import _internals, _validate
from tf_awt.engine import _layers
from tf_awt._distribute import assign_in_replica
from tf_awt.engine._masks import sparse_forward
from tf_awt.adversarial.attacks import Attack, pgd
from tf_awt.adversarial.phase_config import TrainConfig
from tf_awt.adversarial.training_schedule import TrainingSchedule
from tf_awt.paper import attack_numbers
from tf_awt.checkpoint import PhaseCheckpoint, fingerprint, resumable_fit
from tf_awt.keras3 import as_tf_keras, copy_weights, is_keras3

__all__ = ["AdversarialTrainer", "adversarial_fit", "training_attack"]


def training_attack(dataset: str = "mnist", norm: str = "linf") -> Attack:
    """The paper's training attack (:data:`tf_awt.paper.ATTACKS`): MNIST ε = 0.3, 40 steps of 0.01;
    CIFAR ε = 8/255, 10 of 2/255."""

    eps, steps, step_size = attack_numbers("train", dataset)
    return Attack(norm=norm, eps=eps, steps=steps, step_size=step_size)


class AdversarialTrainer(tf_keras.Model):
    """Trains ``model`` on PGD examples of each batch.

    Args:
      model: a built tf_keras model with logit outputs (may hold tfmot PruneLowMagnitude wrappers).
      attack: the training :class:`~tf_awt.Attack` (default: the paper's MNIST setting).
      seed: None (default: cleverhans' stateful random starts) or an integer: the PGD random start
        of optimizer step t is then drawn from the stateless seed [seed, t] (validation batches of
        an epoch share [seed + 1, t]), so training is reproducible and resumes exactly from a
        checkpoint of the model and optimizer.

      schedule: a :class:`~tf_awt.adversarial.training_schedule.TrainingSchedule` (default None: full ε from the first step, no
        clipping): the ε warm-up and gradient clipping happen here; give the optimizer
        ``schedule.learning_rate(peak)`` for its learning-rate schedule. Every part is a function
        of the optimizer's step, so resuming from a checkpoint of the optimizer continues it.
        Validation batches are always attacked at the full ε.

    Compile with an optimizer only (the loss is sparse softmax cross-entropy on logits). Metrics:
    ``loss`` / ``adv_accuracy`` (on the PGD examples), ``nat_loss`` / ``nat_accuracy``.
    """

    def __init__(self, model, attack: Optional[Attack] = None, seed: Optional[int] = None,
                 schedule: Optional[TrainingSchedule] = None, **kwargs):
        super().__init__(**kwargs)
        if schedule is not None and not isinstance(schedule, TrainingSchedule):
            raise ValueError(f"schedule must be a tf_awt.adversarial.training_schedule.TrainingSchedule or None. You passed: {schedule!r}")
        self.schedule = schedule or TrainingSchedule()
        self.seed = None if seed is None else _validate.integer(seed, "seed")
        if not isinstance(model, tf_keras.Model):
            raise ValueError(f"model must be a tf_keras.Model. You passed: {type(model).__name__}")
        self.model = model
        self.attack = attack if attack is not None else training_attack()
        self._wrappers = [l for l in _layers.iter_layers(model) if _layers.is_prune_wrapper(l)]
        self._loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
        self._trackers = {
            "loss": tf_keras.metrics.Mean(name="loss"),
            "adv_accuracy": tf_keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy"),
            "nat_loss": tf_keras.metrics.Mean(name="nat_loss"),
            "nat_accuracy": tf_keras.metrics.SparseCategoricalAccuracy(name="nat_accuracy"),
        }

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def _inference(self, x):
        return sparse_forward(self.model, x)

    def forward(self, x):
        """The trained network's logits in inference mode, its masks applied."""
        return self._inference(x)

    def student(self):
        """(the trained network, its masks {layer name: mask} beside tfmot wrappers, or None)."""
        return self.model, None

    def _training_forward(self, x):
        # through the inner layers: 1.65x faster per step than the wrappers' own training call on
        # the 5% MLP ticket (docs/performance.md), and pruned weights get exactly zero gradient
        return sparse_forward(self.model, x, training=True)

    def _sync_pruning_step(self):
        assign_in_replica([(tf.cast(self.optimizer.iterations, w.pruning_step.dtype) + 1, w.pruning_step)
                            for w in self._wrappers])

    def _attack_seed(self, offset: int):
        if self.seed is None:
            return None
        return tf.stack([tf.constant(self.seed + offset, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])

    def _remask(self):
        assign_in_replica([(weight * tf.cast(mask, weight.dtype), weight)
                            for wrapper in self._wrappers for weight, mask, _ in _internals.pruning_vars(wrapper)])

    def _update_metrics(self, y, adv_logits, nat_logits):
        self._trackers["loss"].update_state(self._loss(y, adv_logits))  # per-example losses, averaged by Mean
        self._trackers["adv_accuracy"].update_state(y, adv_logits)
        self._trackers["nat_loss"].update_state(self._loss(y, nat_logits))
        self._trackers["nat_accuracy"].update_state(y, nat_logits)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, data):
        x, y = data[0], data[1]
        self._sync_pruning_step()
        scale = self.schedule.eps_scale(self.optimizer.iterations) if self.schedule.eps_warmup_steps else None
        x_adv = pgd(self._inference, x, y, self.attack, seed=self._attack_seed(0), scale=scale)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            adv_logits = self._training_forward(x_adv)
            per_example = self._loss(y, adv_logits)
            loss = tf.nn.compute_average_loss(per_example)  # mean over the global batch
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
        grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if self.schedule.clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.schedule.clip_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        self._remask()
        return self._update_metrics(y, adv_logits, self._inference(x))

    def test_step(self, data):
        x, y = data[0], data[1]
        x_adv = pgd(self._inference, x, y, self.attack, seed=self._attack_seed(1))
        return self._update_metrics(y, self._inference(x_adv), self._inference(x))


class _HeldOutName(tf_keras.callbacks.Callback):
    """Renames Keras's ``val_`` keys to ``<name>_`` in each epoch's logs, in place, before the
    callbacks after it (progress, History) see them."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def renamed(self, logs: dict) -> dict:
        if self.name == "val":
            return logs
        return {(f"{self.name}_{k[4:]}" if k.startswith("val_") else k): v for k, v in logs.items()}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.name != "val":
            new = self.renamed(logs)
            logs.clear()
            logs.update(new)


def adversarial_fit(model, train, validation=None, attack: Optional[Attack] = None, epochs: Optional[int] = None,
                    learning_rate: Optional[float] = None, batch_size: Optional[int] = None, callbacks=(), verbose: int = 0,
                    seed: int = 0, checkpoint_dir: Optional[str] = None, config: Optional[TrainConfig] = None,
                    validation_name: str = "val"):
    """Adversarially trains ``model`` in place (Adam); returns the Keras ``History``.

    Args:
      model: tf_keras model with logits (a ticket from ``Ticket.to_model`` or a dense model), or a
        Keras 3 model (trained as its tf_keras twin, weights written back; :mod:`tf_awt.keras3`).
      train: (x, y) arrays (epoch e shuffled by the stateless seed [seed, e]) or a
        ``tf.data.Dataset`` of batches (used in its own order).
      validation: optional held-out (x, y) arrays or dataset; its per-epoch values are logged as
        ``<validation_name>_loss``, ``<validation_name>_adv_accuracy``, ...
      attack: training attack (default: the paper's MNIST setting).
      epochs, learning_rate, batch_size: given ones replace ``config``'s (paper defaults 100, 1e-3, 64).
      callbacks: more Keras callbacks (default none), run after the epoch's checkpoint is saved.
      verbose: ``fit`` verbosity (default 0).
      seed: seeds the shuffle of array data and the PGD random starts (stateless in [seed, step]).
      checkpoint_dir: save model, optimizer and the epoch logs after every epoch in this directory
        (:mod:`tf_awt.checkpoint`) and, if it holds a checkpoint of the same call, continue after
        its last epoch (default None: no checkpoints). With array data the resumed training ends
        with the weights and history an uninterrupted one gives (the schedule's position is the
        optimizer's step counter, which is saved). The directory is left in place (a repeated
        call returns at once); delete it once the model is saved.
      config: a :class:`~tf_awt.TrainConfig` (default None: ``TrainConfig()``), the one place the
        schedule is given: epochs, learning rate, batch size, the ε warm-up, the learning-rate
        schedule with ``learning_rate`` as its peak, and gradient clipping, in epochs (turned into
        optimizer steps of this data: ``config.schedule``).
        Its ``steps``/``step_size``/``rescale``/``fail_on_collapse`` are a run's: pass
        ``attack=config.attack(attack)`` for its training PGD.
      validation_name: what ``validation`` is, the prefix of its keys in the logs the callbacks
        see and in the history (default ``"val"``, Keras's own). ``tf-awt run`` passes ``"test"``
        when its curves are computed on the test split, so nothing reads them as a validation split.

    Returns:
      the ``History`` of the ``fit``; its ``history`` holds every epoch, restored ones included.

    Data are checked first (:mod:`tf_awt._validate`): finite inputs of the model's shape inside the
    attack's data range, integer labels in [0, number of model outputs); a ValueError names the
    first bad entry.
    """

    if is_keras3(model):  # trained as its tf_keras twin; the trained weights are written back
        twin = as_tf_keras(model)
        history = adversarial_fit(twin, train, validation, attack, epochs, learning_rate, batch_size, callbacks, verbose,
                                  seed, checkpoint_dir, config, validation_name)
        copy_weights(twin, model)
        return history
    if config is not None and not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a tf_awt.TrainConfig. You passed: {config!r}")
    given = {k: v for k, v in dict(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size).items() if v is not None}
    settings = (config or TrainConfig()).replace(**given)  # validated there
    epochs, learning_rate, batch_size = settings.epochs, settings.learning_rate, settings.batch_size
    seed = _validate.integer(seed, "seed")
    if not (isinstance(validation_name, str) and validation_name.isidentifier()):
        raise ValueError(f"validation_name must be a name like 'val' or 'test'. You passed: {validation_name!r}")
    rename = _HeldOutName(validation_name)
    attack = attack if attack is not None else training_attack()
    batches, steps = _validate.epoch_data(model, train, batch_size, attack, seed, epochs, "train")
    validation_ds = None if validation is None else _validate.batches(model, validation, batch_size, attack, "validation")
    if steps is None and (settings.eps_warmup_epochs or settings.lr_warmup_epochs or settings.lr_schedule != "constant"):
        raise ValueError("a TrainConfig with warm-ups or an lr_schedule needs data whose steps per epoch are known: (x, y) "
                         "arrays or a dataset of known cardinality (tf.data.experimental.assert_cardinality)")
    schedule = settings.schedule(steps or 1)
    trainer = AdversarialTrainer(model, attack, seed=seed, schedule=schedule)
    trainer.compile(optimizer=tf_keras.optimizers.Adam(schedule.learning_rate(learning_rate)))
    # The slots now, not in the first step: a tf.function that creates variables is traced twice.
    trainer.optimizer.build(model.trainable_variables)
    checkpoint = None
    if checkpoint_dir is not None:
        key = fingerprint("train", attack=attack.get_config(), epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                          seed=seed, schedule=schedule.get_config(), steps=steps)
        checkpoint = PhaseCheckpoint(checkpoint_dir, key, model=model, optimizer=trainer.optimizer)
    history = tf_keras.callbacks.History()
    with _validate.reraise_data_errors():
        logs, _ = resumable_fit(trainer, batches, epochs, checkpoint, callbacks=[rename, *callbacks, history],
                                validation_data=validation_ds, steps_per_epoch=steps, verbose=verbose)
    logs = [rename.renamed(e) for e in logs]
    history.epoch = list(range(len(logs)))
    history.history = {k: [e[k] for e in logs] for k in (logs[0] if logs else {})}
    return history
