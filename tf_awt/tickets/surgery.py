r"""Dynamic Network Surgery (Guo, Yao & Chen, NeurIPS 2016): pruning *during* training, with splicing.

The paper's Figure 1 sets Neural Tangent Transfer (a mask found at θ0 that keeps the dense
network's dynamics) against DNS, which finds its mask while it trains. DNS trains the dense weights
W with a mask T on them:

1. the forward pass (and the attack, for adversarial training) uses :math:`W \odot T`;
2. the gradient of the loss with respect to the masked kernel :math:`W \odot T` updates *every*
   weight, kept or pruned (Guo et al. eq. 3: :math:`W \leftarrow W - \beta\,\partial L / \partial (W \odot T)`),
   so a pruned weight keeps moving and can grow back;
3. every ``update_every`` steps the *surgery* re-derives T from |W|. Guo et al. prune a weight
   whose magnitude falls below :math:`a` and splice it back once it rises above :math:`b > a`, the
   band between the two keeping T as it was. Here the band is relative and the count exact: the
   surgery keeps the top-k of

   .. math::  s = |W| \cdot (1 + h\,(2T - 1))

   (the kept weights' magnitudes lifted by ``hysteresis`` = h, the pruned ones' lowered by h), so
   a pruned weight is spliced back only when it outgrows a kept one by the factor
   :math:`(1 + h)/(1 - h)`, and each surgery keeps exactly the scheduled number of weights (every
   method's ``scope``, ``layer_densities`` and N:M ``pattern`` apply).

The density falls from 1 to ``density`` along the cubic schedule of Zhu & Gupta (2017),
:math:`d_t = d + (1 - d)\,(1 - \min(1, t / (\rho\,S)))^3` over the first ``ramp_fraction`` = ρ
of the S search steps (Guo et al. start from a trained network; at initialization every magnitude
is noise, so the mask has to arrive gradually), and the last surgery, at step S, keeps exactly
``density``. With ``epsilon = 0`` (``search.attack.eps``) the training is natural, as in the paper's
Figure 1; otherwise each batch is replaced by PGD examples against :math:`W \odot T`, as
:func:`tf_awt.adversarial_fit` does.

The ticket keeps θ0 (``initial_weights``) and the trained W (``learned_weights``): DNS's own
fine-tuning continues from W (``train.rewind: learned``), training the mask from θ0 is
``train.rewind: init``. Its ``history`` has one entry per surgery: "step", "density" (after it),
"spliced" (weights brought back), "pruned" (weights removed) and, for (x, y) arrays, the
"target_distance" and "kernel_distance" of the network after the surgery to the dense θ0 on the
first 64 examples (:class:`tf_awt.adversarial.dynamics.DistanceTracker`): the paper's Figure 1 (b)–(c)
for the search, in ``distances.png`` and MLflow like AWT's per-step distances.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt import _validate
from tf_awt.adversarial.dynamics import DistanceTracker
from tf_awt.adversarial.training import AdversarialTrainer
from tf_awt.checkpoint import PhaseCheckpoint, fingerprint, resumable_fit
from tf_awt.engine import _layers, layer_rules
from tf_awt.engine.passes import count_forward
from tf_awt.tickets import _selection
from tf_awt.tickets.ticket import Ticket

__all__ = ["surgery_masks", "surgery_densities", "SurgeryTrainer", "find_surgery"]


def surgery_masks(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], density: float, hysteresis: float,
                  scope: str = "global", pattern: str = "unstructured", layer_densities=None,
                  final_density: float = 1.0) -> List[np.ndarray]:
    """One surgery: the top-k of :math:`|W|\\,(1 + h\\,(2T - 1))` at ``density`` (module docstring).

    Args:
      weights: the kernels W, one array per prunable layer.
      masks: their current 0/1 masks T.
      density: what the surgery keeps, a step towards ``final_density`` (``scope``, ``pattern`` and the
        final ``layer_densities`` as :func:`tf_awt.tickets._selection.stepped_masks`: every layer
        shrinks at its own geometric rate, an N:M pattern tightens towards N of M).
      hysteresis: h in [0, 1): 0 is plain top-k magnitude pruning of W.
    """
    scores = [tf.constant(np.abs(w) * (1.0 + hysteresis * (2.0 * m - 1.0)), tf.float32) for w, m in zip(weights, masks)]
    kept = _selection.stepped_masks(scores, density, scope, pattern, layer_densities, final_density)
    return [k.numpy().astype(np.float32) for k in kept]


def surgery_densities(density: float, update_every: int, total_steps: int, ramp_fraction: float) -> Dict[int, float]:
    """{optimizer step: the density its surgery keeps}: every ``update_every`` steps and at the last
    step, along the cubic ramp from 1 to ``density`` over ``ramp_fraction`` of ``total_steps``."""
    ramp = max(1.0, ramp_fraction * total_steps)
    steps = sorted({*range(update_every, total_steps + 1, update_every), total_steps} - {0})
    return {t: density + (1.0 - density) * (1.0 - min(1.0, t / ramp)) ** 3 for t in steps}


class SurgeryTrainer(AdversarialTrainer):
    """:class:`~tf_awt.adversarial.training.AdversarialTrainer` of a plain model under masks T
    (``masks``, non-trainable variables): the forward pass and the attack see W ⊙ T, the gradient
    reaches every weight (straight-through: W ⊙ T + (1 − T) ⊙ (W − sg(W)))."""

    def __init__(self, model, masks: Dict[str, tf.Variable], **kwargs):
        super().__init__(model, **kwargs)
        layers = {layer.name: layer for layer in layer_rules.prunable_layers(model)}
        self.masks = masks
        self._masked = [(layers[name], mask) for name, mask in masks.items()]

    def student(self):
        return self.model, dict(self.masks)

    def _kernels(self, straight_through: bool):
        replacements = {}
        for layer, mask in self._masked:
            w, t = layer.kernel, tf.cast(mask, layer.kernel.dtype)
            kernel = w * t + (1.0 - t) * (w - tf.stop_gradient(w)) if straight_through else w * t
            replacements[id(layer)] = (layer, kernel)
        return _layers.substituted_kernels(replacements)

    def _inference(self, x):
        with self._kernels(False):
            return count_forward(self.model(x, training=False), x)

    def _training_forward(self, x):
        with self._kernels(True):
            return count_forward(self.model(x, training=True), x)


class _Surgeon(tf_keras.callbacks.Callback):
    """Runs the scheduled surgeries after the optimizer steps they belong to; records each."""

    def __init__(self, trainer: SurgeryTrainer, schedule: Dict[int, float], config, allocation, tracker=None):
        super().__init__()
        self.trainer, self.schedule, self.config, self.allocation, self.tracker = trainer, schedule, config, allocation, tracker
        keys = ("step", "density", "spliced", "pruned") + (("target_distance", "kernel_distance") if tracker else ())
        self.history: Dict[str, List[float]] = {k: [] for k in keys}

    def on_train_begin(self, logs=None):
        if self.tracker is not None:
            self.tracker.set_model(self.trainer)
            self.tracker.on_train_begin()

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.trainer.optimizer.iterations.numpy())
        if step not in self.schedule:
            return
        c, variables = self.config, list(self.trainer.masks.values())
        old = [v.numpy() for v in variables]
        weights = [layer.kernel.numpy() for layer, _ in self.trainer._masked]
        new = surgery_masks(weights, old, self.schedule[step], c.options.hysteresis, c.scope, c.pattern, self.allocation, c.density)
        for variable, value in zip(variables, new):
            variable.assign(value)
        total = sum(m.size for m in new)
        for key, value in (("step", step), ("density", sum(m.sum() for m in new) / total),
                           ("spliced", sum(((n > 0) & (o == 0)).sum() for n, o in zip(new, old))),
                           ("pruned", sum(((n == 0) & (o > 0)).sum() for n, o in zip(new, old)))):
            self.history[key].append(float(value))
        if self.tracker is not None:  # after the surgery: the network the next steps train
            for key, value in zip(("target_distance", "kernel_distance"), self.tracker.distances()):
                self.history[key].append(value)


def find_surgery(model, data, config, options) -> Ticket:
    """The ``find`` of ``dns`` (:mod:`tf_awt.tickets.methods`): DNS for ``config.epochs`` epochs;
    resumable from ``options.checkpoint_dir`` (model, optimizer, masks and the surgeries' record)."""

    theta0 = [np.array(w, copy=True) for w in model.get_weights()]
    attack = config.attack
    batches, steps = _validate.epoch_data(model, data, options.batch_size, attack, config.seed, config.epochs)
    if steps is None:
        raise ValueError("method 'dns' schedules its surgeries by step: it needs (x, y) arrays or a dataset of known cardinality")
    plain = tf_keras.models.clone_model(model)
    plain.set_weights(theta0)
    layers = layer_rules.prunable_layers(plain)
    masks = {layer.name: tf.Variable(tf.ones_like(layer.kernel), trainable=False, name=f"{layer.name}_surgery_mask")
             for layer in layers}
    allocation = _selection.layer_allocation(config, [layer.kernel.shape for layer in layers], list(masks))
    trainer = SurgeryTrainer(plain, masks, attack=attack, seed=config.seed)
    trainer.compile(optimizer=tf_keras.optimizers.Adam(config.options.learning_rate))
    trainer.optimizer.build(plain.trainable_variables)
    schedule = surgery_densities(config.density, config.options.update_every, steps * config.epochs, config.options.ramp_fraction)
    tracker = None
    if isinstance(data, (tuple, list)):  # the distances to the dense θ0 on the first 64 examples, at every surgery
        tracker = DistanceTracker(model, (data[0][:64], data[1][:64]), attack, config.normalization, config.seed,
                                  config.implementation)
    surgeon = _Surgeon(trainer, schedule, config, allocation, tracker)
    checkpoint = None
    if options.checkpoint_dir is not None:
        key = fingerprint("search", config=config.get_config(), batch_size=options.batch_size, steps=steps)
        checkpoint = PhaseCheckpoint(options.checkpoint_dir, key, model=plain, optimizer=trainer.optimizer,
                                     masks=list(masks.values()))

    def record(restored):
        before = restored.get("history", {})
        return {k: list(before.get(k, [])) + v for k, v in surgeon.history.items()}

    with _validate.reraise_data_errors():
        _, restored = resumable_fit(trainer, batches, config.epochs, checkpoint, callbacks=[surgeon, *options.callbacks],
                                    extra_fn=lambda restored: {"history": record(restored)},
                                    steps_per_epoch=steps, verbose=options.verbose)
    final = {name: m.numpy().astype(np.float32) for name, m in masks.items()}
    return Ticket(masks=final, initial_weights=theta0, method=config.method, history=record(restored),
                  config=config.get_config(), learned_weights=[np.array(w, copy=True) for w in plain.get_weights()])
