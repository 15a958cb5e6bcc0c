r"""Iterative magnitude pruning with adversarial training: the paper's Table-1 baseline.

Cosentino et al. (2019, "The search for sparse, robust neural networks") find sparse robust
networks with the lottery-ticket procedure run adversarially: starting from the dense θ0 and
:math:`m = \mathbf 1`, each round

1. adversarially trains :math:`f(m \odot \theta)` from :math:`m \odot \theta_0` (PGD, the search's
   attack, ``epochs`` epochs, Adam at ``learning_rate``, ε ramped up over ``eps_warmup_epochs``);
2. keeps the largest trained magnitudes :math:`|\theta|` among the kept weights, down to the round's
   density (same ``scope`` and collapse guard as every method; with per-layer densities, from
   ``layer_densities`` or ``scope="frankle_carbin"``, every layer shrinks at its own geometric rate:
   :func:`tf_awt.tickets._selection.stepped_masks`);
3. resets the kept weights to θ0.

The round densities are :math:`d_r = d^{r/R}` for ``rounds`` = R (every round prunes the same
fraction :math:`1 - d^{1/R}` of what is left), or, with ``prune_rate`` = p,
:math:`d_r = \max(d, (1 - p)^r)` until d is reached. It costs R adversarial trainings, so it is
the most expensive method here; the ticket's ``history`` records each round's density, training
accuracy, seconds and (array data) the trained network's distances to the dense θ0, as DNS's does
at every surgery: issue 39's "does it keep the dense network's dynamics?" for this method too.

Cosentino et al.'s published rates (20% of the fully connected layers' and 10% of the output
layer's remaining weights per round, layer-wise, as Frankle & Carbin) are ``scope="frankle_carbin"``
with ``rounds`` = the number of Frankle–Carbin rounds of the density (15 at 3.6%, 18 at 1.8% on the
MLP: :func:`tf_awt.tickets._selection.frankle_carbin_rounds`); every round then prunes exactly those rates.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_awt.engine import _layers, layer_rules
from tf_awt.tickets import _selection
from tf_awt.adversarial.dynamics import DistanceTracker
from tf_awt.adversarial.phase_config import TrainConfig
from tf_awt.tickets.ticket import Ticket
from tf_awt.adversarial import training  # by module: what a spy replaces is what runs
from tf_awt import _validate

__all__ = ["round_densities", "iterative_masks", "find_iterative"]


def round_densities(density: float, rounds: int = 5, prune_rate: Optional[float] = None) -> List[float]:
    """The density after each round: ``density ** (r / rounds)``, or ``(1 - prune_rate) ** r``
    clipped at ``density`` when ``prune_rate`` is given (then ``rounds`` is what it takes)."""
    if density >= 1.0:
        return [1.0]
    if prune_rate is not None:
        count = max(1, math.ceil(math.log(density) / math.log(1.0 - prune_rate) - 1e-9))
        return [max(density, (1.0 - prune_rate) ** r) for r in range(1, count + 1)]
    return [density ** (r / rounds) for r in range(1, rounds + 1)]


def _round_training(data, config, batch_size: int):
    """(the data, the :class:`~tf_awt.TrainConfig` of every round): the search's epochs, learning
    rate and ε warm-up; a dataset of unknown length is counted once, so the warm-up's epochs are steps."""
    if config.options.eps_warmup_epochs and not isinstance(data, (tuple, list)) and int(data.cardinality()) < 1:
        data = data.apply(tf.data.experimental.assert_cardinality(max(1, sum(1 for _ in data))))
    return data, TrainConfig(epochs=config.epochs, learning_rate=config.options.learning_rate, batch_size=batch_size,
                             eps_warmup_epochs=config.options.eps_warmup_epochs)


def iterative_masks(model, data, config, batch_size: int = 64) -> Tuple[Dict[str, np.ndarray], Dict[str, List[float]]]:
    """Masks of ``config.density`` by adversarial iterative magnitude pruning with reset to θ0.

    Args:
      model: the built tf_keras model at θ0 (not modified).
      data: (x, y) arrays (shuffled each epoch) or a dataset of batches.
      config: a :class:`tf_awt.SearchConfig` (``density``, ``attack``, ``epochs`` per round,
        ``learning_rate``, ``rounds``, ``prune_rate``, ``eps_warmup_epochs``, ``scope``, ``seed``).

    Returns:
      (masks by layer name, history with one entry per round: "round", "round_density",
      "adv_accuracy", "nat_accuracy" (last training epoch), "round_seconds", and with (x, y) arrays
      "target_distance" and "kernel_distance": the round's trained network against the dense θ0 on the
      first 64 examples, as :class:`~tf_awt.adversarial.dynamics.DistanceTracker` measures them (a
      dataset has no fixed probe batch: no distances)).
    """

    layers = layer_rules.prunable_layers(model)
    masks = {layer.name: np.ones(layer.kernel.shape, np.float32) for layer in layers}
    theta0 = [np.array(w, copy=True) for w in model.get_weights()]
    keys = ("round", "round_density", "adv_accuracy", "nat_accuracy", "round_seconds")
    tracker = None
    if isinstance(data, (tuple, list)):  # the distances to the dense θ0 on the first 64 examples, after every round
        tracker = DistanceTracker(model, (data[0][:64], data[1][:64]), config.attack, config.normalization, config.seed,
                                  config.implementation)
        keys += ("target_distance", "kernel_distance")
    history: Dict[str, List[float]] = {k: [] for k in keys}
    data, round_config = _round_training(data, config, batch_size)
    allocation = _selection.layer_allocation(config, [layer.kernel.shape for layer in layers], list(masks))
    for r, density in enumerate(round_densities(config.density, config.options.rounds, config.options.prune_rate), start=1):
        t0 = time.time()
        sparse = Ticket(masks=masks, initial_weights=theta0, method="cosentino").to_model(model)
        fit = training.adversarial_fit(sparse, data, attack=config.attack, seed=config.seed + r, config=round_config)
        trained = {_layers.unwrap(l)[0].name: _layers.unwrap(l)[0].kernel.numpy() for l in _layers.iter_layers(sparse)
                   if _layers.unwrap(l)[0].name in masks}
        # the kept weights ranked by trained magnitude; pruned ones stay out (below every |w|)
        scores = [tf.constant(np.where(masks[n] > 0, np.abs(trained[n]), -1.0), tf.float32) for n in masks]
        kept = _selection.stepped_masks(scores, density, config.scope, config.pattern, allocation, config.density)
        masks = {n: m.numpy().astype(np.float32) * masks[n] for n, m in zip(masks, kept)}
        for key, value in (("round", r), ("round_density", sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values())),
                           ("adv_accuracy", (fit.history.get("adv_accuracy") or [float("nan")])[-1]),
                           ("nat_accuracy", (fit.history.get("nat_accuracy") or [float("nan")])[-1]),
                           *_round_distances(tracker, sparse), ("round_seconds", time.time() - t0)):
            history[key].append(float(value))
    return masks, history


def _round_distances(tracker, trained) -> Tuple[Tuple[str, float], ...]:
    """The round's trained network's (target, kernel) distances to the dense θ0, or none without a tracker."""
    if tracker is None:
        return ()
    tracker.set_model(trained)
    tracker.on_train_begin()
    return tuple(zip(("target_distance", "kernel_distance"), tracker.distances()))


def find_iterative(model, data, config, options):
    """The ``find`` of ``cosentino`` (:mod:`tf_awt.tickets.methods`): (masks, history)."""

    dataset = _validate.batches(model, data, options.batch_size, config.attack)  # checks the data too
    with _validate.reraise_data_errors():  # arrays are reshuffled every epoch of every round
        return iterative_masks(model, data if isinstance(data, (tuple, list)) else dataset, config,
                               batch_size=options.batch_size)
