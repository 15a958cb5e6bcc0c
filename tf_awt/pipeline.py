"""The whole method as phases over one output directory (what ``tf-awt`` runs).

DIR layout (every file written to a temporary name, then renamed: an interrupted run never
leaves a complete-looking half-written file)::

    recipe.yaml             the fully resolved recipe
    ticket.npz              search: masks, θ0, distance history          (phase "search")
    trained.weights.h5      the adversarially trained ticket              (phase "train")
    history.json            per-epoch natural/adversarial loss and accuracy
    evaluation.json         natural/robust accuracy, per class, sanity warnings (phase "evaluate")
    saved_model/            strip_pruning'd sparse model, serving_default(images) -> logits (phase "export")
    model.tflite            the same model for TFLite, pruned kernels stored sparse (export.tflite: true)
    model.keras             the same model as a Keras 3 file (export.keras3: true)
    summary.json            the run's results; written last
    *.png                   distance curves, accuracy curves, per-layer density
    run.json                MLflow run id and phase timings (what a resumed run continues)
    checkpoints/search|train/   per-epoch checkpoints of the running phase (deleted when it completes)

Resume: :meth:`Run.all` on a DIR that holds an unfinished run of the *same* resolved recipe skips
the phases whose outputs exist, continues the interrupted phase from its last epoch checkpoint
(:mod:`tf_awt.checkpoint`) and logs into the same MLflow run; randomness is stateless in (seed,
step) and (seed, epoch), so it ends with the summary an uninterrupted run writes. A finished DIR
(``summary.json``) is left alone; ``force=True`` discards whatever DIR holds and starts over. A DIR
holding another recipe's run is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Callable, Dict, Optional

import numpy as np

from tf_awt._files import apply_umask, atomic_write_bytes, atomic_write_json
from tf_awt.collapse import TrainingCollapsed, advice, collapse_reasons
from tf_awt.methods import get_method
from tf_awt.recipes import Recipe

__all__ = ["Run", "PHASES"]

PHASES = ("search", "train", "evaluate", "export")
_OUTPUTS = ("summary.json", "ticket.npz", "trained.weights.h5", "history.json", "evaluation.json", "run.json", "saved_model",
            "model.tflite", "model.keras", "checkpoints")


class Run:
    """One run of a recipe in ``out``; phases may run together (:meth:`all`) or one by one.

    Args:
      recipe: the resolved :class:`~tf_awt.recipes.Recipe`.
      out: the output directory.
      recipe_name: the recipe's name or path (recorded in the summary).
      data_dir: tensorflow-datasets ``data_dir`` (default None).
      progress: callable ``(phase, total_steps) -> keras Callback`` for progress display, or None.
      tracker: a :class:`tf_awt.tracking.Tracker` or None (no MLflow).
      log: callable for one-line progress messages (default ``print``).
      force: discard what ``out`` holds (finished or not) and start over (default False).
    """

    def __init__(self, recipe: Recipe, out: str, recipe_name: str = "", data_dir: Optional[str] = None,
                 progress: Optional[Callable] = None, tracker=None, log: Callable[[str], None] = print,
                 force: bool = False):
        self.recipe, self.out, self.recipe_name = recipe, out, recipe_name
        self.data_dir, self.progress, self.tracker, self.log = data_dir, progress, tracker, log
        self.force = force
        self.timings: Dict[str, float] = {}
        self._split = None
        self._strategy = None

    @property
    def strategy(self):
        """The recipe's ``tf.distribute`` strategy (``distribute``: none | mirrored | multi_worker)."""
        if self._strategy is None:
            from tf_awt._distribute import strategy_for

            self._strategy = strategy_for(self.recipe.distribute)
        return self._strategy

    @property
    def fingerprint(self) -> str:
        """sha256 of the resolved recipe: what makes two runs the same run."""
        return hashlib.sha256(self.recipe.to_yaml().encode()).hexdigest()

    def _resuming(self, phase: str, epochs: int, batch_size: int):
        """(the phase's checkpoint directory, its progress callbacks); logs where a resumed phase continues."""
        from tf_awt.checkpoint import completed_epochs, steps_per_epoch

        directory = self.path(os.path.join("checkpoints", phase))
        first = min(completed_epochs(directory), epochs)
        if first:
            self.log(f"{phase}: resuming after epoch {first} of {epochs} ({directory})")
        if not epochs:
            return directory, []
        return directory, self._callbacks(phase, steps_per_epoch(len(self.split.y_train), batch_size) * (epochs - first))

    def _drop_checkpoint(self, phase: str):
        directory = self.path(os.path.join("checkpoints", phase))
        if os.path.exists(directory):
            shutil.rmtree(directory)
        parent = self.path("checkpoints")
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)

    # ------------------------------------------------------------------ helpers
    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    @property
    def split(self):
        if self._split is None:
            from tf_awt import data

            self._split = data.load(self.recipe.dataset, self.data_dir)
            if self.recipe.eval.split == "validation":
                self._split = data.validation_split(self._split)
        return self._split

    def base_model(self):
        """The architecture at its seeded initialization θ0."""
        import tf_keras

        from tf_awt.models import build_model

        tf_keras.utils.set_random_seed(self.recipe.seed)
        return build_model(self.recipe.model, self.split.input_shape, self.split.num_classes, self.recipe.init)

    def _in_range(self, attack):
        """The attack clipped to this data set's range (unbounded for Gaussian toy data)."""
        return attack.replace(clip_min=self.split.clip_min, clip_max=self.split.clip_max)

    def _callbacks(self, phase, steps):
        return [self.progress(phase, steps)] if self.progress else []

    def _require(self, name, phase):
        if not os.path.exists(self.path(name)):
            raise ValueError(f"{self.path(name)} does not exist: run the {phase!r} phase first (or 'tf-awt run').")

    def write_recipe(self):
        atomic_write_bytes(self.path("recipe.yaml"), self.recipe.to_yaml().encode())

    # ------------------------------------------------------------------ phases
    def search(self):
        from tf_awt.search import find_ticket

        t0 = time.time()
        r = self.recipe
        with self.strategy.scope():
            model = self.base_model()
            # every search.* key reaches find_ticket through the same SearchConfig fields
            config = dataclasses.replace(r.search_config(), attack=self._in_range(r.attack_config()))
            settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            epochs = config.epochs if get_method(r.method).trains else 0  # the one-shot methods have no epochs
            directory, progress = self._resuming("search", epochs, r.search.batch_size)
            ticket = find_ticket(model, (self.split.x_train, self.split.y_train), batch_size=r.search.batch_size,
                                 callbacks=progress, checkpoint_dir=directory, **settings)
        ticket.save(self.path("ticket.npz"))
        self._drop_checkpoint("search")
        if self.tracker:
            hist = ticket.history
            for i, step in enumerate(hist.get("step", [])):
                self.tracker.log_metrics({f"search_{k}": hist[k][i] for k in ("target_distance", "kernel_distance", "loss")}, step=step)
        self.timings["search"] = time.time() - t0
        self.log(f"search: {ticket.method} ticket, density {ticket.density:.4f} ({self.timings['search']:.0f} s)")
        return ticket

    def ticket_model(self, distributed: bool = True):
        """The ticket (θ0 ⊙ m in tfmot wrappers); in the recipe's strategy scope unless ``distributed=False``."""
        import tensorflow as tf

        from tf_awt.ticket import Ticket

        self._require("ticket.npz", "search")
        ticket = Ticket.load(self.path("ticket.npz"))
        strategy = self.strategy if distributed else tf.distribute.get_strategy()
        with strategy.scope():
            base = self.base_model()
            model = ticket.to_model(base, rescale=self.recipe.train.rescale)
        return ticket, model

    def train(self):
        import tensorflow as tf
        import tf_keras

        from tf_awt.checkpoint import steps_per_epoch
        from tf_awt.collapse import CollapseMonitor
        from tf_awt.training import adversarial_fit

        t0 = time.time()
        r, s = self.recipe, self.split
        _, model = self.ticket_model()
        tf_keras.utils.set_random_seed(r.seed)
        held = min(len(s.y_test), 1000)
        val = tf.data.Dataset.from_tensor_slices((s.x_test[:held], s.y_test[:held])).batch(256)
        directory, progress = self._resuming("train", r.train.epochs, r.train.batch_size)
        steps = steps_per_epoch(len(s.y_train), r.train.batch_size)
        with self.strategy.scope():
            history = adversarial_fit(model, (s.x_train, s.y_train), validation=val, attack=self._in_range(r.train_attack()),
                                      epochs=r.train.epochs, learning_rate=r.train.lr, batch_size=r.train.batch_size,
                                      seed=r.seed, schedule=r.training_schedule(steps), checkpoint_dir=directory,
                                      callbacks=[CollapseMonitor(s.num_classes, log=self.log), *progress])
        hist = history.history
        tmp = self.path(".tmp-trained.weights.h5")
        model.save_weights(tmp)
        apply_umask(tmp)
        os.replace(tmp, self.path("trained.weights.h5"))
        atomic_write_json(self.path("history.json"), hist)
        self._drop_checkpoint("train")
        if self.tracker:
            for epoch in range(len(next(iter(hist.values()), []))):
                self.tracker.log_metrics({f"train_{k}": v[epoch] for k, v in hist.items()}, step=epoch)
        self.timings["train"] = time.time() - t0
        last = {k: round(v[-1], 4) for k, v in hist.items()} if hist else {}
        self.log(f"train: {r.train.epochs} epochs ({self.timings['train']:.0f} s) {last}")
        return model, hist

    def trained_model(self, distributed: bool = True):
        ticket, model = self.ticket_model(distributed)
        self._require("trained.weights.h5", "train")
        model.load_weights(self.path("trained.weights.h5"))
        return ticket, model

    def evaluate(self, model=None):
        from tf_awt.evaluation import evaluate

        t0 = time.time()
        r = self.recipe
        if model is None:
            _, model = self.trained_model()
        s = self.split
        n = len(s.y_test) if r.eval.max_examples is None else min(r.eval.max_examples, len(s.y_test))
        result = evaluate(model, (s.x_test[:n], s.y_test[:n]), attack=self._in_range(r.eval_attack()), restarts=r.eval.restarts,
                          strategy=None if r.distribute == "none" else self.strategy, autoattack=r.eval.autoattack)
        atomic_write_json(self.path("evaluation.json"), result.to_dict())
        if self.tracker:
            self.tracker.log_metrics({"natural_accuracy": result.natural_accuracy, "robust_accuracy": result.robust_accuracy})
        self.timings["evaluate"] = time.time() - t0
        self.log(f"evaluate: natural {result.natural_accuracy:.4f}, robust {result.robust_accuracy:.4f} "
                 f"(PGD-{r.eval.steps} x{r.eval.restarts}{' + AutoAttack' if r.eval.autoattack else ''}, eps {r.attack.eps:g}, {n} examples, {self.timings['evaluate']:.0f} s)")
        return result

    def export(self, model=None):
        from tf_awt.export import export_keras3, export_saved_model, export_tflite, gzip_size

        t0 = time.time()
        if model is None:
            _, model = self.trained_model(distributed=False)
        shape = tuple(self.split.input_shape)
        result = export_saved_model(model, self.path("saved_model"), shape)
        sizes = {"raw_bytes": result.raw_bytes, "dense_gzip_bytes": gzip_size(self.base_model().get_weights()),
                 "sparse_gzip_bytes": result.sparse_gzip_bytes}
        if self.recipe.export.tflite:
            sizes["tflite_bytes"] = export_tflite(model, self.path("model.tflite"), sparse=True, input_shape=shape)
        if self.recipe.export.keras3:
            sizes["keras3_bytes"] = export_keras3(result.model, self.path("model.keras"))
        self.timings["export"] = time.time() - t0
        tflite = "".join(f", {name} {sizes[key]:,} B" for key, name in (("tflite_bytes", "model.tflite"), ("keras3_bytes", "model.keras"))
                         if key in sizes)
        self.log(f"export: {result.path} (weights gzip: dense {sizes['dense_gzip_bytes']:,} B, sparse {sizes['sparse_gzip_bytes']:,} B{tflite})")
        return result.model, sizes

    # ------------------------------------------------------------------ everything
    def _prepare(self) -> dict:
        """Checks what ``out`` holds; returns the saved run state (``run.json``) to continue."""
        os.makedirs(self.out, exist_ok=True)
        if self.force:
            for name in _OUTPUTS:
                target = self.path(name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
            return {}
        recipe_path = self.path("recipe.yaml")
        if os.path.exists(recipe_path):
            with open(recipe_path, encoding="utf-8") as fh:
                held = fh.read()
            if held != self.recipe.to_yaml():
                raise ValueError(f"{self.out} holds a run of another recipe ({recipe_path} differs from this one). "
                                 "Use another --out directory, or --force to discard it.")
        state_path = self.path("run.json")
        if not os.path.exists(state_path):
            return {}
        try:
            with open(state_path, encoding="utf-8") as fh:
                state = json.load(fh)
            if not isinstance(state, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError) as err:
            raise ValueError(f"{state_path} is corrupt ({err}). Rerun with --force to start over.") from None
        return state

    def _save_state(self, state: dict):
        state = dict(state, phase_seconds=self.timings, fingerprint=self.fingerprint)
        atomic_write_json(self.path("run.json"), state)

    def all(self) -> dict:
        """Runs (or resumes) search → train → evaluate → export; returns the summary."""
        summary_path = self.path("summary.json")
        if os.path.exists(summary_path) and not self.force:
            self.log(f"{self.out} holds a finished run (summary.json): kept. Pass --force to run it again.")
            with open(summary_path, encoding="utf-8") as fh:
                return json.load(fh)
        self.split  # the data load first: a data set that cannot be read leaves nothing behind
        state = self._prepare()
        self.timings.update(state.get("phase_seconds", {}))
        self.write_recipe()
        if self.tracker:
            fresh = not state.get("mlflow_run_id")
            self.tracker.start(self.recipe, self.recipe_name, run_id=state.get("mlflow_run_id"))
            state["mlflow_run_id"] = self.tracker.run_id
            if fresh:
                self.tracker.log_training_data(self.split.x_train, self.split.y_train, self.recipe.dataset)
        self._save_state(state)
        try:
            ticket, model, hist, result = self._phases(state)
            reasons = self._collapse_reasons(hist, result)
            # a distributed model is exported from a one-device copy of its trained weights
            stripped, sizes = self.export(model if self.recipe.distribute == "none" else None)
            summary = self._summary(ticket, result, sizes, reasons)
            self._finish(summary, ticket, hist, stripped, reasons)
            if reasons and self.recipe.train.fail_on_collapse:
                raise TrainingCollapsed(f"training collapsed (train.fail_on_collapse): {summary['collapse_reason']}")
            return summary
        except BaseException:
            if self.tracker:
                self.tracker.end("FAILED")
            raise

    def _phases(self, state: dict):
        """(ticket, trained model, training history, evaluation): each read from DIR if there, else run."""
        from tf_awt.evaluation import EvaluationResult
        from tf_awt.ticket import Ticket

        if os.path.exists(self.path("ticket.npz")):
            ticket = Ticket.load(self.path("ticket.npz"))
            self.log("search: ticket.npz exists, kept")
        else:
            ticket = self.search()
            self._save_state(state)
        if os.path.exists(self.path("trained.weights.h5")) and os.path.exists(self.path("history.json")):
            _, model = self.trained_model()
            with open(self.path("history.json"), encoding="utf-8") as fh:
                hist = json.load(fh)
            self.log("train: trained.weights.h5 exists, kept")
        else:
            model, hist = self.train()
            self._save_state(state)
        if os.path.exists(self.path("evaluation.json")):
            with open(self.path("evaluation.json"), encoding="utf-8") as fh:
                result = EvaluationResult.from_dict(json.load(fh))
            self.log("evaluate: evaluation.json exists, kept")
        else:
            result = self.evaluate(model)
            self._save_state(state)
        return ticket, model, hist, result

    def _collapse_reasons(self, hist, result):
        s = self.split
        n_eval = result.num_examples
        shares = np.bincount(s.y_test[:n_eval], minlength=s.num_classes) / max(n_eval, 1)
        reasons = collapse_reasons(hist, result.natural_accuracy, s.num_classes, n_eval, float(shares.max()),
                                   result.zero_gradient_fraction)
        if reasons:
            self.log(f"warning: training collapsed: {'; '.join(reasons)}. {advice(self.recipe.train)}")
        return reasons

    def _summary(self, ticket, result, sizes, reasons) -> dict:
        return {
            "natural_accuracy": result.natural_accuracy,
            "robust_accuracy": result.robust_accuracy,
            "density": ticket.density,
            "layer_density": ticket.layer_density,
            "method": self.recipe.method,
            "recipe": self.recipe_name,
            "dataset": self.recipe.dataset,
            "seed": self.recipe.seed,
            "phase_seconds": dict(self.timings),
            "model_size": sizes,
            "sanity_warnings": result.warnings,
            "collapsed": bool(reasons),
            "collapse_reason": (f"{'; '.join(reasons)}. {advice(self.recipe.train)}" if reasons else None),
            "saved_model": os.path.abspath(self.path("saved_model")),
            "mlflow_run_id": self.tracker.run_id if self.tracker else None,
            "model_uri": None,
            "registered_model": None,
        }

    def _description(self, summary: dict) -> str:
        """The MLflow run description: the recipe's own, then the headline numbers."""
        r = self.recipe
        line = (f"{r.method} ticket of the {r.model} at density {summary['density']:.4f} on {r.dataset} "
                f"({r.attack.norm} ε = {r.attack.eps:g}): natural accuracy {summary['natural_accuracy']:.4f}, robust "
                f"accuracy {summary['robust_accuracy']:.4f} (PGD-{r.eval.steps} ×{r.eval.restarts}, {r.eval.split} split)")
        if summary["collapsed"]:
            line += f". Training collapsed: {summary['collapse_reason']}"
        return f"{r.description.strip()}\n\n{line}." if r.description.strip() else line + "."

    def _finish(self, summary: dict, ticket, hist, stripped, reasons):
        """Plots, MLflow model/metrics/tags/artifacts, then summary.json (written last)."""
        from tf_awt import plots

        plots.write_all(self.out, ticket, hist)
        if self.tracker:
            summary["model_uri"] = self.tracker.log_model(stripped, self.split.x_test[:2])
            summary["registered_model"] = self.tracker.registered_uri
            self.tracker.describe(self._description(summary))
            self.tracker.log_metrics({"density": ticket.density, "sparse_gzip_bytes": summary["model_size"]["sparse_gzip_bytes"]})
            self.tracker.set_tags({"collapsed": str(bool(reasons)).lower(),
                                   **({"collapse_reason": summary["collapse_reason"]} if reasons else {})})
            for name in ("ticket.npz", "recipe.yaml", "history.json", "evaluation.json", "model.tflite", *plots.NAMES):
                if os.path.exists(self.path(name)):
                    self.tracker.log_artifact(self.path(name))
        atomic_write_json(self.path("summary.json"), summary)
        if self.tracker:
            self.tracker.log_artifact(self.path("summary.json"))
            self.tracker.end("FINISHED")
