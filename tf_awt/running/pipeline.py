"""A run of a recipe: ``find_ticket → adversarial_fit → evaluate → export_saved_model`` over one
output directory (what ``tf-awt run`` and ``tf-awt sweep`` call). This module only composes:

* the directory (layout, what it holds, resume state) is :class:`tf_awt.running.run_directory.RunDirectory`;
* what the run reads (data, θ0, strategy, the data's range) is :class:`tf_awt.running.run_inputs.RunInputs`;
* the phases are the library's own public calls, given the recipe's configuration objects;
* the summary, its description and the collapse diagnosis are :mod:`tf_awt.running.report`;
* MLflow is a :class:`tf_awt.running.tracking.Tracker` (a :class:`~tf_awt.running.tracking.NullTracker` by default).

Resume: :meth:`Run.all` on a directory that holds an unfinished run of the *same* resolved recipe
skips the phases whose outputs exist, continues the interrupted phase from its last epoch
checkpoint (:mod:`tf_awt.checkpoint`) and logs into the same MLflow run; randomness is stateless in
(seed, step) and (seed, epoch), so it ends with the summary an uninterrupted run writes. A finished
directory (``summary.json``) is left alone; ``force=True`` discards what it holds and starts over.
The library raises (a collapsed training with ``train.fail_on_collapse``:
:class:`tf_awt.errors.TrainingCollapsed`); the command line turns errors into exit codes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt.adversarial.dynamics import DistanceTracker
from tf_awt.adversarial.collapse import CollapseMonitor, TrainingCollapsed, advice
from tf_awt.adversarial import training  # the phases by module: what a spy replaces is what runs (evaluate: report.evaluate_quietly)
from tf_awt.adversarial.evaluation import EvaluationResult
from tf_awt.checkpoint import steps_per_epoch
from tf_awt.engine.passes import PassCount
from tf_awt.running import grafts, plots, report
from tf_awt.running.recipes import Recipe
from tf_awt.running.run_directory import RunDirectory
from tf_awt.running.run_inputs import RunInputs
from tf_awt.running.grid import run_name_of
from tf_awt.running.tracking import NullTracker, log_history, record_run
from tf_awt.tickets import export, find
from tf_awt.tickets.methods import get_method
from tf_awt.tickets.ticket import Ticket

__all__ = ["Run", "PHASES"]

PHASES = ("search", "train", "evaluate", "export")
_ARTIFACTS = ("ticket.npz", "recipe.yaml", "history.json", "evaluation.json", "model.tflite")


class _EpochWeights(tf_keras.callbacks.Callback):
    """Writes the trained network's weights (m ⊙ W, the plain model's ``get_weights()`` order)
    after every epoch to ``directory/<name>-e<epoch>.npz``."""

    def __init__(self, directory: str, name: str):
        super().__init__()
        self.directory, self.name = directory, name

    def on_epoch_end(self, epoch, logs=None):
        from tf_awt import _internals
        from tf_awt._files import atomic_write_bytes

        network = self.model.student()[0] if hasattr(self.model, "student") else self.model
        weights = _internals.strip_pruning(network).get_weights()
        buffer = io.BytesIO()
        np.savez(buffer, *weights)
        os.makedirs(self.directory, exist_ok=True)
        atomic_write_bytes(os.path.join(self.directory, f"{self.name}-e{epoch + 1}.npz"), buffer.getvalue())


class Run:
    """One run of a recipe in ``out``; phases may run together (:meth:`all`) or one by one.

    Args:
      recipe: the resolved :class:`~tf_awt.running.recipes.Recipe`.
      out: the output directory (:mod:`tf_awt.running.run_directory` for its layout).
      recipe_name: the recipe's name or path (recorded in the summary; default "").
      data_dir: tensorflow-datasets ``data_dir`` (default None).
      progress: callable ``(phase, total_steps) -> keras Callback`` for progress display (default None);
        if it also has an ``attacks(label, total)`` method (the CLI's does), the evaluation's attack
        suites report through it (``tf_awt.evaluate(progress=)``).
      tracker: a :class:`tf_awt.running.tracking.Tracker` (default None: nothing recorded).
      log: callable for one-line progress messages (default ``print``).
      force: discard what ``out`` holds (finished or not) and start over (default False).
      dense_from: a run directory whose dense reference (``train.dense_reference``) this run copies
        instead of training it (default None: trained here); checked at once
        (:func:`tf_awt.running.grafts.check_dense_source`) and its θ0 against this run's.
    """

    def __init__(self, recipe: Recipe, out: str, recipe_name: str = "", data_dir: Optional[str] = None,
                 progress: Optional[Callable] = None, tracker=None, log: Callable[[str], None] = print,
                 force: bool = False, dense_from: Optional[str] = None):
        self.dense_from = dense_from
        if dense_from is not None:
            grafts.check_dense_source(recipe, dense_from)
        self.recipe, self.out, self.recipe_name = recipe, out, recipe_name
        self.progress, self.log, self.force = progress, log, force
        self.tracker = tracker if tracker is not None else NullTracker()
        self.directory, self.inputs = RunDirectory(out, recipe), RunInputs(recipe, data_dir)
        self.path = self.directory.path
        self.timings: Dict[str, float] = {}
        """Wall-clock seconds of each phase."""
        self.cpu_seconds: Dict[str, float] = {}
        """CPU seconds of each phase (every thread of this process: on two busy cores about 2× the wall time)."""
        self.passes: Dict[str, Dict[str, int]] = {}
        """Each phase's forward and backward passes and Jacobians (:mod:`tf_awt.engine.passes`)."""

    @contextlib.contextmanager
    def _measured(self, phase: str):
        """The block's wall and CPU seconds and its passes, kept as ``phase``'s (those of the part run
        in this process: a resumed phase counts from where it resumed, like its seconds)."""
        c0, t0 = time.process_time(), time.time()
        self.inputs.strategy  # a multi-worker strategy is made before any TensorFlow op (the counter's variables)
        with PassCount() as passes:
            yield
        self.timings[phase] = time.time() - t0
        self.cpu_seconds[phase] = time.process_time() - c0
        self.passes[phase] = passes.totals()

    def _restore_costs(self, state: dict) -> None:
        self.timings.update(state.get("phase_seconds", {}))
        self.cpu_seconds.update(state.get("phase_cpu_seconds", {}))
        self.passes.update(state.get("phase_passes", {}))

    def _save_state(self, state: dict) -> None:
        self.directory.save_state(dict(state, phase_cpu_seconds=self.cpu_seconds, phase_passes=self.passes), self.timings)

    def _resuming(self, phase: str, epochs: int, batch_size: int):
        """(the phase's checkpoint directory, its progress callbacks); logs where a resumed phase
        continues. ``force``: the phase's checkpoint is discarded first (a single-phase command starts over)."""
        if self.force:
            self.directory.drop_checkpoint(phase)
        directory, first = self.directory.resume_point(phase, epochs)
        if first:
            self.log(f"{phase}: resuming after epoch {first} of {epochs} ({directory})")
        if not epochs or not self.progress:
            return directory, []
        return directory, [self.progress(phase, steps_per_epoch(len(self.inputs.split.y_train), batch_size) * (epochs - first))]

    # ------------------------------------------------------------------ the phases
    def search(self):
        with self._measured("search"):
            ticket = self._find_ticket()
            ticket.save(self.path("ticket.npz"))
            self.directory.drop_checkpoint("search")
            log_history(self.tracker, ticket.history, "search_", ("target_distance", "kernel_distance", "loss", "density", "spliced",
                                                                  "pruned"), plots.search_axis(ticket.history)[1])
        self.log(f"search: {ticket.method} ticket, density {ticket.density:.4f} ({self.timings['search']:.0f} s)")
        return ticket

    def _find_ticket(self):
        r = self.recipe
        with self.inputs.strategy.scope():
            config = dataclasses.replace(r.search, attack=self.inputs.in_range(r.attack))
            epochs = config.epochs if get_method(r.method).trains else 0  # the one-shot methods have no epochs
            directory, progress = self._resuming("search", epochs, config.batch_size)
            return find.find_ticket(self.inputs.base_model(), (self.inputs.split.x_train, self.inputs.split.y_train), config=config,
                                    callbacks=progress, checkpoint_dir=directory)

    def ticket_model(self, distributed: bool = True):
        """The ticket (θ0 ⊙ m in tfmot wrappers); in the recipe's strategy scope unless ``distributed=False``."""


        self.directory.require("ticket.npz", "search")
        ticket = Ticket.load(self.path("ticket.npz"))
        with (self.inputs.strategy if distributed else tf.distribute.get_strategy()).scope():
            return ticket, ticket.to_model(self.inputs.base_model(), rewind=self.recipe.train.rewind, rescale=self.recipe.train.rescale)

    def train(self):
        with self._measured("train"):
            model, hist = self._train()
        self.log(report.training_line(self.recipe.train.epochs, self.timings["train"], hist))
        return model, hist

    def _train(self):
        r, s = self.recipe, self.inputs.split
        if r.train.dense_reference and self.dense_from is not None:
            self._check_dense_theta0(self.dense_from)
        _, model = self.ticket_model()
        tf_keras.utils.set_random_seed(r.seed)
        val = self.inputs.validation()
        directory, progress = self._resuming("train", r.train.epochs, r.train.batch_size)
        kept = [_EpochWeights(self.path("epochs"), "ticket")] if r.train.dense_reference else []
        with self.inputs.strategy.scope():
            history = training.adversarial_fit(model, (s.x_train, s.y_train), validation=val, attack=self.inputs.in_range(r.train_attack()),
                                      seed=r.seed, config=r.train, checkpoint_dir=directory, validation_name=self.inputs.held_out_name,
                                      callbacks=[CollapseMonitor(s.num_classes, log=self.log), *self._trackers(), *kept, *progress])
        if r.train.dense_reference:
            self._train_dense_reference()
        hist = history.history
        self.directory.save_weights(model)
        self.directory.write_json("history.json", hist)
        self.directory.drop_checkpoint("train")
        log_history(self.tracker, hist, "train_")
        return model, hist

    def _train_dense_reference(self):
        """``train.dense_reference``: the dense θ0 trained like the ticket (same data order, seeds and
        settings), its weights kept after every epoch beside the ticket's (``tf-awt graft``)."""
        r, s = self.recipe, self.inputs.split
        if self.dense_from is not None:
            return self._copy_dense_reference(self.dense_from)
        tf_keras.utils.set_random_seed(r.seed)
        directory, progress = self._resuming("train_dense", r.train.epochs, r.train.batch_size)
        with self.inputs.strategy.scope():
            dense = self.inputs.base_model()
            training.adversarial_fit(dense, (s.x_train, s.y_train), attack=self.inputs.in_range(r.train_attack()), seed=r.seed,
                                     config=r.train, checkpoint_dir=directory, callbacks=[_EpochWeights(self.path("epochs"), "dense"), *progress])
        self.directory.drop_checkpoint("train_dense")
        self.log(f"train: the dense reference, {r.train.epochs} epochs, weights of both kept per epoch in {self.path('epochs')}")

    def _check_dense_theta0(self, source: str) -> None:
        """``dense_from``: ``source``'s θ0 (its ticket.npz) must be this run's (checked before the ticket trains)."""
        path = os.path.join(source, "ticket.npz")
        theta0 = Ticket.load(path).initial_weights if os.path.isfile(path) else None
        mine = self.inputs.base_model().get_weights()
        if theta0 is None or len(theta0) != len(mine) or any(not np.array_equal(a, b) for a, b in zip(theta0, mine)):
            raise ValueError(f"--dense-from {source}: its θ0 ({path}) is not this run's: its dense reference cannot be reused")

    def _copy_dense_reference(self, source: str):
        """``dense_from``: ``source``'s dense weights per epoch (its settings and θ0 checked)."""
        from tf_awt._files import atomic_write_bytes

        files = grafts.check_dense_source(self.recipe, source)
        self._check_dense_theta0(source)
        os.makedirs(self.path("epochs"), exist_ok=True)
        for path in files:
            with open(path, "rb") as fh:
                atomic_write_bytes(os.path.join(self.path("epochs"), os.path.basename(path)), fh.read())
        self.log(f"train: the dense reference copied from {source} ({len(files)} epochs; same θ0, data, seed and "
                 f"training settings), weights of both kept per epoch in {self.path('epochs')}")

    def _trackers(self):
        """``train.track_distances``: the distances to the dense θ0 on the first ``probe_examples``
        training examples, with the search's attack and normalization."""
        r, s = self.recipe, self.inputs.split
        if not r.train.track_distances:
            return []
        n = r.train.probe_examples
        attack = dataclasses.replace(r.search, attack=self.inputs.in_range(r.attack)).effective_attack
        return [DistanceTracker(self.inputs.base_model(), (s.x_train[:n], s.y_train[:n]), attack,
                                normalization=r.search.normalization, seed=r.seed)]

    def trained_model(self, distributed: bool = True):
        ticket, model = self.ticket_model(distributed)
        self.directory.require("trained.weights.h5", "train")
        model.load_weights(self.path("trained.weights.h5"))
        return ticket, model

    def evaluate(self, model=None):
        with self._measured("evaluate"):
            result = self._evaluate(model)
        self.log(report.evaluation_line(self.recipe, result, self.timings["evaluate"]))
        return result

    def _evaluate(self, model):
        r, s = self.recipe, self.inputs.split
        model = model if model is not None else self.trained_model()[1]
        n = len(s.y_test) if r.eval.max_examples is None else min(r.eval.max_examples, len(s.y_test))
        result = report.evaluate_quietly(model, (s.x_test[:n], s.y_test[:n]), attack=self.inputs.in_range(r.eval_attack()),
                                         config=r.eval, strategy=None if r.distribute == "none" else self.inputs.strategy,
                                         progress=getattr(self.progress, "attacks", None))
        for message in result.warnings:
            self.log(report.warning_line(message))
        self.directory.write_json("evaluation.json", result.to_dict())
        self.tracker.log_metrics({"natural_accuracy": result.natural_accuracy, "robust_accuracy": result.robust_accuracy,
                                  **{f"robust_accuracy_after_{name.replace('-', '_')}": value for name, value in result.suites.items()}})
        self.tracker.set_tags({"robust_accuracy_attacks": result.attack_label,
                               "sanity_warnings": " | ".join(result.warnings)[:5000] or "none"})
        return result

    def export(self, model=None):
        with self._measured("export"):
            model = model if model is not None else self.trained_model(distributed=False)[1]
            stripped, sizes, path = export.export_run(model, self.out, tuple(self.inputs.split.input_shape),
                                                      self.inputs.base_model().get_weights(), self.recipe.export)
        self.log(report.export_line(path, sizes))
        return stripped, sizes

    def phase(self, name: str):
        """One phase alone (``tf-awt search|train|evaluate|export``): runs it and keeps its wall and CPU
        seconds in ``run.json`` beside those of the phases run before it."""
        state = self.directory.saved_state()
        self._restore_costs(state)
        result = getattr(self, name)()
        self._save_state(state)
        return result

    # ------------------------------------------------------------------ everything
    def all(self) -> dict:
        """Runs (or resumes) search → train → evaluate → export; returns the summary."""
        finished = None if self.force else self.directory.finished_summary()
        if finished is not None:
            self.log(f"{self.out} holds a finished run (summary.json): kept. Pass --force to run it again.")
            return finished
        self.inputs.split  # the data load first: a data set that cannot be read leaves nothing behind
        state = self.directory.prepare(self.force)
        self._restore_costs(state)
        self.directory.write_recipe()
        fresh = not state.get("mlflow_run_id")
        self.tracker.start(self.recipe, self.recipe_name, run_id=state.get("mlflow_run_id"),
                           run_name=f"{run_name_of(self.recipe, self.recipe_name)}-{os.path.basename(os.path.abspath(self.out))}")
        state["mlflow_run_id"] = self.tracker.run_id
        if fresh:
            self.tracker.log_training_data(self.inputs.split.x_train, self.inputs.split.y_train, self.recipe.dataset)
        self._save_state(state)
        try:
            ticket, model, hist, result = self._phases(state)
            reasons = report.collapse_report(self.recipe, self.inputs.split, hist, result)
            if reasons:
                self.log(f"warning: training collapsed: {'; '.join(reasons)}. {advice(self.recipe.train)}")
            # a distributed model is exported from a one-device copy of its trained weights
            stripped, sizes = self.export(model if self.recipe.distribute == "none" else None)
            summary = report.summary(self.recipe, self.recipe_name, ticket, result, sizes, reasons, self.timings, self.cpu_seconds, self.passes,
                                     self.path("saved_model") if self.recipe.export.saved_model else None, self.tracker.run_id)
            self._finish(summary, ticket, hist, stripped, reasons)
            if reasons and self.recipe.train.fail_on_collapse:
                raise TrainingCollapsed(f"training collapsed (train.fail_on_collapse): {summary['collapse_reason']}")
            return summary
        except BaseException:
            self.tracker.end("FAILED")
            raise

    def _phases(self, state: dict):
        """(ticket, trained model, training history, evaluation): each read from the directory if there, else run."""

        done = {}
        for phase, outputs, load, run in (
                ("search", ("ticket.npz",), lambda: Ticket.load(self.path("ticket.npz")), self.search),
                ("train", ("trained.weights.h5", "history.json"),
                 lambda: (self.trained_model()[1], self.directory.read_json("history.json")), self.train),
                ("evaluate", ("evaluation.json",), lambda: EvaluationResult.from_dict(self.directory.read_json("evaluation.json")),
                 lambda: self.evaluate(done["train"][0]))):
            if self.directory.has(*outputs):
                done[phase] = load()
                self.log(f"{phase}: {outputs[0]} exists, kept")
            else:
                done[phase] = run()
                self._save_state(state)
        return (done["search"], *done["train"], done["evaluate"])

    def _finish(self, summary: dict, ticket, hist, stripped, reasons):
        """Plots, the MLflow record (:func:`tf_awt.running.tracking.record_run`), then summary.json (written last)."""

        if self.recipe.export.plots:
            plots.write_all(self.out, ticket, hist)
        artifacts = [self.path(name) for name in (*_ARTIFACTS, *plots.NAMES) if self.directory.has(name)]
        record_run(self.tracker, self.recipe, self.recipe_name, summary, stripped, self.inputs.split.x_test[:2], hist,
                   report.description(self.recipe, summary), reasons, artifacts)
        self.directory.write_json("summary.json", summary)
        self.tracker.log_artifact(self.path("summary.json"))
        self.tracker.end("FINISHED")
