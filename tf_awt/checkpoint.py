"""Epoch checkpoints that let a killed run continue where it stopped.

A phase (the ticket search, the adversarial training) that runs for many epochs saves, after every
epoch, everything its next epoch depends on:

* the variables: model weights, tfmot masks and step counters, optimizer slots and its step
  counter (``tf.train.Checkpoint`` + ``tf.train.CheckpointManager``, ``max_to_keep=2``);
* the randomness and data position, which tf_awt keeps *stateless*: the PGD random start of
  optimizer step t is drawn from the seed ``[seed, t]`` (:func:`tf_awt.adversarial.attacks.pgd`) and the batch
  order of epoch e from ``[seed, e]`` (:func:`epoch_batches`); restoring the optimizer's step
  counter and the epoch number restores both;
* what the caller records beside (``extra``: e.g. the distance history so far, the MLflow run id).

Order of writes: the checkpoint files first (TensorFlow writes them to temporary names and
renames), then ``state.json`` (temporary file, then rename) naming that checkpoint. A SIGKILL at any
moment leaves ``state.json`` naming a complete checkpoint (the previous one is kept until the
next ``state.json`` is in place).

``state.json`` also holds a *fingerprint* of the call (:func:`fingerprint`: the phase and every
setting that changes its result): a checkpoint written by another call is refused with a
ValueError naming the file, and so is a corrupt one; neither is ever silently ignored.

:func:`resumable_fit` is the one loop that does this; ``find_ticket(..., checkpoint_dir=)`` and
``adversarial_fit(..., checkpoint_dir=)`` use it, and ``tf-awt run`` calls those two.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras
from tf_awt._files import atomic_write_json
from tf_awt.errors import CheckpointError

__all__ = ["PhaseCheckpoint", "epoch_batches", "resumable_fit", "fingerprint"]

_FORMAT = "tf_awt.checkpoint/1"


def epoch_batches(x, y, batch_size: int, seed: int, first_epoch: int, epochs: int, with_index: bool = False) -> tf.data.Dataset:
    """Batches of epochs ``first_epoch .. epochs-1``, epoch e shuffled by the stateless seed [seed, e].

    ``with_index``: batches ``(x, y, index)``, each example's row in ``x`` (default False: ``(x, y)``;
    Keras' own ``train_step`` would read a third element as sample weights).

    The order of an epoch depends only on (seed, e), not on the process's history or global
    seed, so a resumed run sees the same batches as an uninterrupted one. Use with
    ``fit(..., initial_epoch=first_epoch, epochs=epochs, steps_per_epoch=ceil(len(y)/batch_size))``.
    """
    x = tf.constant(np.asarray(x))
    y = tf.constant(np.asarray(y))
    n = int(y.shape[0])

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                         seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index):
        return (tf.gather(x, index), tf.gather(y, index), index) if with_index else (tf.gather(x, index), tf.gather(y, index))

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch).map(gather).prefetch(2)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-int(n) // int(batch_size))


class PhaseCheckpoint:
    """Per-epoch checkpoints of one phase in ``directory``.

    Args:
      directory: where the checkpoints and ``state.json`` live (created on the first save).
      fingerprint: a string identifying the run and phase (e.g. a hash of the resolved recipe);
        a checkpoint with another fingerprint is refused.
      **trackables: what to save: keras models, optimizers, ``tf.Variable`` s (as for
        ``tf.train.Checkpoint``).
    """

    def __init__(self, directory: str, fingerprint: str, **trackables):
        if not trackables:
            raise ValueError("PhaseCheckpoint needs at least one object to save. You passed none.")
        self.directory = directory
        self.fingerprint = fingerprint
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self._manager: Optional[tf.train.CheckpointManager] = None

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, "state.json")

    @property
    def manager(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=2)
        return self._manager

    def read_state(self) -> Optional[Dict[str, Any]]:
        """The saved state (``epoch``, ``extra``, ...), None if nothing was saved; checks it."""
        if not os.path.exists(self.state_path):
            return None
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                state = json.load(fh)
            if not isinstance(state, dict):
                raise ValueError("not a mapping")
            fields = (state["format"], state["fingerprint"], int(state["epoch"]), state["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint state {self.state_path} is corrupt ({err}). Delete {self.directory} to "
                                  "start this phase over", self.directory) from None
        if fields[0] != _FORMAT or fields[1] != self.fingerprint:
            raise CheckpointError(f"checkpoint {self.state_path} belongs to another run (its recipe or phase differs from "
                                  "this one)", self.directory, other_run=True)
        return state

    def restore(self) -> Optional[Dict[str, Any]]:
        """Restores the last checkpoint into the trackables; returns its state, or None if there is none.

        Build the optimizer's slots first (``optimizer.build(variables)``) so every saved value has
        a place to go; anything saved that does not match raises a ValueError naming the file.
        """
        state = self.read_state()
        if state is None:
            return None
        prefix = os.path.join(self.directory, state["checkpoint"])
        try:
            status = self.checkpoint.restore(prefix)
            status.assert_existing_objects_matched()
        except Exception as err:  # OpError, IndexError (truncated data), AssertionError (mismatch), ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"checkpoint {prefix} is corrupt or does not fit this model ({first}). Delete "
                                  f"{self.directory} to start this phase over", self.directory) from None
        return state

    def save(self, epoch: int, extra: Optional[Dict[str, Any]] = None) -> str:
        """Saves the trackables after ``epoch`` completed epochs, then ``state.json`` naming them."""

        path = self.manager.save(checkpoint_number=int(epoch))
        state = {"format": _FORMAT, "fingerprint": self.fingerprint, "epoch": int(epoch),
                 "checkpoint": os.path.basename(path), "extra": extra or {}}
        atomic_write_json(self.state_path, state)
        return path

    def callback(self, extra_fn: Optional[Callable[[int, dict], Dict[str, Any]]] = None) -> tf_keras.callbacks.Callback:
        """A Keras callback that calls :meth:`save` at the end of every epoch.

        Args:
          extra_fn: ``(completed_epochs, epoch_logs) -> dict`` of JSON-serializable values saved
            beside the variables (default None). Keras' own ``History`` runs after user callbacks,
            so record what you need from ``epoch_logs`` here.
        """
        owner = self

        class SaveEveryEpoch(tf_keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                owner.save(epoch + 1, extra_fn(epoch + 1, dict(logs or {})) if extra_fn else None)

        return SaveEveryEpoch()


def fingerprint(phase: str, **settings) -> str:
    """sha256 of ``phase`` and ``settings`` (JSON; non-JSON values by ``str``): what makes two calls the same call."""
    text = json.dumps({"phase": phase, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resumable_fit(model: tf_keras.Model, batches: Callable[[int], Any], epochs: int, checkpoint: Optional[PhaseCheckpoint],
                  callbacks: Sequence[tf_keras.callbacks.Callback] = (),
                  extra_fn: Optional[Callable[[dict], Dict[str, Any]]] = None, **fit_kwargs) -> Tuple[List[dict], dict]:
    """``model.fit`` over epochs ``first .. epochs-1``, saving ``checkpoint`` after every epoch.

    Args:
      model: a compiled Keras model (its optimizer built, so every saved slot has a place).
      batches: ``first_epoch -> data`` for ``fit`` (e.g. :func:`epoch_batches` from that epoch).
      epochs: the total number of epochs.
      checkpoint: where to save and what to restore; None: a plain ``fit`` from epoch 0.
      callbacks: more callbacks, run after the save (so a callback that stops the run never loses
        the epoch it saw), except those with ``writes_logs = True``, which run before it (what they
        add to the epoch's logs is saved: :class:`~tf_awt.adversarial.dynamics.DistanceTracker`). One with a ``resume_from(epoch_logs)`` method is given the restored
        epochs' logs before ``fit`` (:class:`~tf_awt.adversarial.collapse.CollapseMonitor` continues its count).
      extra_fn: ``restored_extra -> dict`` of JSON values saved beside the variables each epoch.
      **fit_kwargs: passed to ``fit`` (``steps_per_epoch``, ``validation_data``, ``verbose``).

    Returns:
      ``(epoch_logs, restored_extra)``: the logs of every epoch (restored ones first, as floats)
      and what the restored checkpoint held beside them (``{}`` for a fresh start).
    """
    state = checkpoint.restore() if checkpoint is not None else None
    first = state["epoch"] if state else 0
    restored = dict(state["extra"]) if state else {}
    logs: List[dict] = list(restored.get("epochs", []))
    for callback in callbacks:
        if hasattr(callback, "resume_from"):
            callback.resume_from(list(logs))

    def record(epoch, epoch_logs):
        logs.append({k: float(v) for k, v in epoch_logs.items()})
        return {"epochs": logs, **(extra_fn(restored) if extra_fn else {})}

    if first < epochs:
        saving = [checkpoint.callback(record)] if checkpoint is not None else [_Recorder(record)]
        writers = [c for c in callbacks if getattr(c, "writes_logs", False)]  # what they add to the logs is saved
        model.fit(batches(first), initial_epoch=first, epochs=epochs,
                  callbacks=[*writers, *saving, *[c for c in callbacks if c not in writers]], **fit_kwargs)
    return logs, restored


class _Recorder(tf_keras.callbacks.Callback):
    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_epoch_end(self, epoch, logs=None):
        self.record(epoch + 1, dict(logs or {}))
