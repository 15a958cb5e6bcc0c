"""``find_ticket``: every method's functional entry point, and Algorithm 1's own ``find`` (``run_search``).

:func:`find_ticket` validates the model and the settings into a :class:`SearchConfig` and runs the
registered method (:mod:`tf_awt.tickets.methods`); :func:`run_search` is what methods ``awt`` and
``ntt`` run: a :class:`~tf_awt.tickets.search.TicketSearch` trained by ``fit``, resumable from a
checkpoint directory. :func:`reference_ticket` finds or loads the ticket ``random_layerwise``
reshuffles.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tf_keras

from tf_awt import _validate
from tf_awt.adversarial.attacks import Attack
from tf_awt.checkpoint import PhaseCheckpoint, fingerprint, resumable_fit
from tf_awt.tickets.methods import FindOptions, get_method, method_names
from tf_awt.tickets.search import TicketSearch, check_model, prunable_layer_names, search_optimizer
from tf_awt.tickets.search_callback import TicketSearchCallback
from tf_awt.tickets.search_config import SearchConfig
from tf_awt.tickets.teacher_cache import TeacherCache
from tf_awt.tickets.ticket import Ticket

__all__ = ["find_ticket", "run_search", "reference_ticket"]


def find_ticket(
    model,
    data,
    density: Optional[float] = None,
    method: Optional[str] = None,
    attack: Optional[Attack] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    callbacks: Sequence[tf_keras.callbacks.Callback] = (),
    verbose: int = 0,
    checkpoint_dir: Optional[str] = None,
    config: Optional[SearchConfig] = None,
    **settings,
) -> Ticket:
    """Finds a ticket of ``model`` at its initialization.

    Args:
      model: a built tf_keras model at θ0 with logit outputs (not modified).
      data: a ``tf.data.Dataset`` of (x, y) batches, or a tuple (x, y) of arrays (batched by
        ``batch_size``).
      density: fraction of prunable (Dense/Conv2D) weights kept, in (0, 1]; needed unless ``config``
        gives it.
      method: "awt" (default), "ntt", "random", "magnitude", "snip", "synflow", "erk",
        "random_layerwise" (:mod:`tf_awt.tickets.baselines`), "cosentino" (:mod:`tf_awt.tickets.iterative`) or
        one registered with :func:`tf_awt.register_method`.
      attack: the search's PGD :class:`~tf_awt.Attack` (default: L∞, ε = 0.3, 10 steps).
      epochs: search epochs for awt/ntt (default 20; the paper's setting).
      batch_size: the batch size of (x, y) array data (default 64).
      config: a :class:`SearchConfig` holding every setting (default None: the defaults). The
        keyword arguments are a convenience: those given replace the config's fields of the same
        name, and with no config they build one.
      callbacks: more Keras callbacks for the search's ``fit`` (e.g. ``PruningSummaries``).
      verbose: ``fit`` verbosity (default 0).
      checkpoint_dir: awt/ntt only: save the search after every epoch in this directory
        (:mod:`tf_awt.checkpoint`) and, if it already holds a checkpoint of the same call, continue
        after its last epoch (default None: no checkpoints). With (x, y) arrays the resumed search
        ends with the ticket an uninterrupted one finds; the directory is left in place (a repeated
        call returns at once), delete it once the ticket is saved. Other methods ignore it.
      **settings: any other setting, flat: a :class:`SearchConfig` field every method shares
        (normalization, scope, layer_densities, pattern, implementation, seed) or one of the
        method's options (:mod:`tf_awt.tickets.method_options`: awt/ntt's gamma, update_every,
        kernel, ...; cosentino's rounds, ...); a setting the method does not have is a ValueError.

    Returns:
      a :class:`~tf_awt.Ticket`: masks, θ0, densities, the distance history.

    Example::

        model = tf_awt.models.mlp()
        ticket = tf_awt.find_ticket(model, (x_train, y_train), density=0.05, epochs=1)
        sparse = ticket.to_model(model)          # θ0 ⊙ m in tfmot wrappers, ready for fit
    """

    model = check_model(model)
    given = {k: v for k, v in dict(density=density, method=method, attack=attack, epochs=epochs,
                                   batch_size=batch_size).items() if v is not None}
    config = _search_config(config, {**given, **settings})
    options = FindOptions(config.batch_size, tuple(callbacks), verbose, checkpoint_dir)
    prunable_layer_names(model)
    found = get_method(config.method).find(model, data, config, options)
    return _as_ticket(found, model, config)


def _search_config(config: Optional[SearchConfig], settings: dict) -> SearchConfig:
    """``config`` with ``settings`` replaced, or a new SearchConfig of ``settings`` (which then need a density)."""
    if config is None:
        if "density" not in settings:
            raise ValueError("find_ticket needs a density, or a SearchConfig (config=) that holds one. You passed neither")
        return SearchConfig.from_settings(settings)
    if not isinstance(config, SearchConfig):
        raise ValueError(f"config must be a tf_awt.SearchConfig. You passed: {config!r}")
    return config.replace(**settings) if settings else config


def _as_ticket(found, model, config: SearchConfig) -> Ticket:
    """A method's result (a Ticket, masks, or (masks, history)) as a Ticket of ``model``."""
    if isinstance(found, Ticket):
        return found
    masks, history = found if isinstance(found, tuple) else (found, {})
    return Ticket(masks=masks, initial_weights=[np.array(w, copy=True) for w in model.get_weights()],
                  method=config.method, history=history, config=config.get_config())


def run_search(model, data, config: SearchConfig, options) -> Ticket:
    """Algorithm 1 (or its score variant) as a Keras ``fit``; resumable from ``options.checkpoint_dir``
    (the ``find`` of methods awt and ntt, :mod:`tf_awt.tickets.methods`)."""
    batch_size, callbacks, verbose, checkpoint_dir = options.batch_size, options.callbacks, options.verbose, options.checkpoint_dir

    if config.options.teacher_cache and not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError("search.teacher_cache needs the training data as (x, y) arrays (a tf.data.Dataset has no stable "
                         f"example index). You passed: {type(data).__name__}")
    batches, steps = _validate.epoch_data(model, data, batch_size, config.attack, config.seed, config.epochs,
                                          with_index=config.options.teacher_cache)
    search = TicketSearch(model, config, steps_per_epoch=steps)
    if config.options.teacher_cache:
        search.teacher_cache = TeacherCache.replay(search.teacher, batches(0).take(steps), config.seed,
                                                   config.effective_attack, search.student.trainable_variables[0].dtype)
    search.compile(optimizer=search_optimizer(config))
    # The slots now, not in the first step: a tf.function that creates variables is traced twice.
    search.optimizer.build(search.optimized_variables)
    checkpoint = None
    if checkpoint_dir is not None:
        scores = {"scores": list(search.scores)} if search.scores else {}
        key = fingerprint("search", config=config.get_config(), batch_size=batch_size, steps=steps)
        checkpoint = PhaseCheckpoint(checkpoint_dir, key, student=search.student, optimizer=search.optimizer,
                                     mask_updates=search.mask_updates, **scores)
    recorder = TicketSearchCallback(rewind="init")

    def history(restored):
        before = restored.get("history", {})
        if not recorder.history:
            return before
        return {k: list(before.get(k, [])) + list(v) for k, v in recorder.history.items()}

    with _validate.reraise_data_errors():
        _, restored = resumable_fit(search, batches, config.epochs, checkpoint, callbacks=[recorder, *callbacks],
                                    extra_fn=lambda restored: {"history": history(restored)},
                                    steps_per_epoch=steps, verbose=verbose)
    if not recorder.history:  # nothing left to run: the restored checkpoint is the final one
        search.rewind("init")
    return search.ticket(history=history(restored))


def reference_ticket(model, data, config: SearchConfig, options) -> Ticket:
    """The ticket whose layer densities ``random_layerwise`` reproduces (``config.options.reference``)."""
    reference = config.options.reference
    if reference in method_names():
        searched = dataclasses.replace(config, method=reference, batch_size=options.batch_size,
                                       options=config.options.reference_options)
        return find_ticket(model, data, config=searched, callbacks=options.callbacks, verbose=options.verbose)
    if not os.path.isfile(reference):
        raise ValueError(f"reference must be one of {tuple(m for m in method_names() if m != 'random_layerwise')} or the path "
                         f"of a saved ticket (.npz). You passed: {reference!r} (no such file)")
    ticket = Ticket.load(reference, model=model)
    if abs(ticket.density - config.density) > max(1e-3, 0.01 * config.density):
        raise ValueError(f"the reference ticket {reference} has density {ticket.density:.4f}, the search asks "
                         f"for {config.density}: random_layerwise reproduces the reference's layer densities, so they must agree")
    return ticket
