r"""Does a ticket keep the dense network's dynamics? The two distances of the search, along any training.

:class:`DistanceTracker` is a Keras callback for :func:`tf_awt.adversarial_fit` (and every method that
trains with ``fit``: DNS). At the end of every epoch it measures, on a fixed probe batch (X, Y),
the two distances of the AWT objective (eq. 13) between the network being trained, :math:`f_s`
(its masks applied), and a fixed dense reference :math:`f_0` (the dense network at θ0, the search's
teacher):

.. math::

    d_{target} = \tfrac{1}{N}\lVert f_0(\tilde X_0) - f_s(\tilde X_s)\rVert^2, \qquad
    d_{kernel} = \tfrac{1}{N^2}\lVert \Theta_0(X, \tilde X_0) - \Theta_s(X, \tilde X_s)\rVert_F^2

with :math:`\tilde X_0`, :math:`\tilde X_s` PGD examples of the probe against each network
(from one random start, fixed by ``seed``, for both; ε = 0: the clean probe), Θ the Mixed Tangent Kernel
(:func:`tf_awt.mixed_tangent_kernel_fn`, the student's own masked kernel), and the search's
``normalization``. This is the paper's Figure 1 (b)–(c) for any ticket: NTT's distances stay low,
those of a mask found by training (Dynamic Network Surgery) grow.

The values go into the epoch's logs as ``target_distance`` and ``kernel_distance`` before the
epoch's checkpoint is saved (``writes_logs``), so they are in the history ``adversarial_fit``
returns (``history.json`` and MLflow in ``tf-awt run``) and survive a resume. The reference's
side is computed once for the tracker's life: one tracker can follow several ``fit`` calls (each
binds its network in ``on_train_begin``), as the rounds of ``cosentino``'s search do.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt.adversarial.attacks import Attack, pgd
from tf_awt.engine.distances import kernel_distance, target_distance
from tf_awt.engine.kernel import mixed_tangent_kernel_fn

__all__ = ["DistanceTracker"]


class DistanceTracker(tf_keras.callbacks.Callback):
    """Logs ``target_distance`` and ``kernel_distance`` to a dense reference after every epoch.

    Args:
      reference: the dense tf_keras model to compare with (e.g. the network at θ0); not modified.
      probe: (x, y) arrays, the fixed probe batch (64 examples is a (640 × 640) kernel for 10 classes).
      attack: the :class:`~tf_awt.Attack` of X̃ (default None: ε = 0, the clean probe).
      normalization: "per_example" (default, eq. 13) or "per_entry" (NTT's code).
      seed: the PGD random starts' stateless seed (default 0), the same every epoch.
      implementation: the kernel implementation (default "auto").

    The trained model is the ``fit``'s model: an :class:`~tf_awt.adversarial.training.AdversarialTrainer`
    (its ``student()``: the network and its masks) or a plain tf_keras model.
    """

    writes_logs = True
    """Runs before the epoch's checkpoint is saved (:func:`tf_awt.checkpoint.resumable_fit`)."""

    def __init__(self, reference, probe, attack: Optional[Attack] = None, normalization: str = "per_example", seed: int = 0,
                 implementation: str = "auto"):
        super().__init__()
        x, y = probe
        self.x = tf.convert_to_tensor(np.asarray(x), reference.inputs[0].dtype if reference.inputs else tf.float32)
        self.y = tf.convert_to_tensor(np.asarray(y))
        self.reference = reference
        self.attack = attack if attack is not None else Attack(eps=0.0, steps=1)
        self.normalization, self.seed, self.implementation = normalization, int(seed), implementation
        self._teacher = None
        target_distance(tf.zeros([1, 1]), tf.zeros([1, 1]), normalization)  # a bad normalization fails here

    def _adversarial(self, fn):
        """PGD examples of the probe against ``fn``; both networks from the same random start, so
        the distances of a network to itself are zero."""
        if self.attack.eps == 0:
            return self.x
        return pgd(fn, self.x, self.y, self.attack, seed=tf.constant([self.seed, 0], tf.int64))

    def _reference_side(self):
        """(f_0(X̃0), Θ0(X, X̃0)): fixed by the constructor's arguments, so computed once for every fit."""
        if self._teacher is None:
            def teacher(z):
                return self.reference(z, training=False)

            x_adv = self._adversarial(teacher)
            self._teacher = (teacher(x_adv), mixed_tangent_kernel_fn(self.reference, self.implementation)(self.x, x_adv))
        return self._teacher

    def on_train_begin(self, logs=None):
        """Binds the network being trained (the ``fit``'s model); the reference's side is kept."""
        self._reference_side()
        self._network, self._masks = self.model.student() if hasattr(self.model, "student") else (self.model, None)
        self._kernel_fn = mixed_tangent_kernel_fn(self._network, self.implementation)

    def distances(self):
        """(target distance, kernel distance) of the trained network now."""
        forward = self.model.forward if hasattr(self.model, "forward") else (lambda z: self._network(z, training=False))
        x_adv = self._adversarial(forward)
        f_0, theta_0 = self._reference_side()
        theta_s = self._kernel_fn(self.x, x_adv, masks=self._masks)
        return (float(target_distance(f_0, forward(x_adv), self.normalization)),
                float(kernel_distance(theta_0, theta_s, self.normalization)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["target_distance"], logs["kernel_distance"] = self.distances()
