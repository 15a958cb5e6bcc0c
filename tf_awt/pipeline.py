"""The whole method as phases over one output directory (what ``tf-awt`` runs).

DIR layout (every file written to a temporary name, then renamed: an interrupted run never
leaves a complete-looking half-written file)::

    recipe.yaml             the fully resolved recipe
    ticket.npz              search: masks, θ0, distance history          (phase "search")
    trained.weights.h5      the adversarially trained ticket              (phase "train")
    history.json            per-epoch natural/adversarial loss and accuracy
    evaluation.json         natural/robust accuracy, per class, sanity warnings (phase "evaluate")
    saved_model/            strip_pruning'd sparse model, serving_default(images) -> logits (phase "export")
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
import gzip
import hashlib
import io
import json
import os
import shutil
import time
from typing import Callable, Dict, Optional

import numpy as np

from tf_awt._files import apply_umask, atomic_directory, atomic_write_bytes, atomic_write_json
from tf_awt.collapse import TrainingCollapsed, advice, collapse_reasons
from tf_awt.paper import SEARCH_METHODS
from tf_awt.recipes import Recipe

__all__ = ["Run", "PHASES"]

PHASES = ("search", "train", "evaluate", "export")
_OUTPUTS = ("summary.json", "ticket.npz", "trained.weights.h5", "history.json", "evaluation.json", "run.json", "saved_model",
            "checkpoints")


def _trailing_stuck(epoch_logs, num_classes: int) -> int:
    """Epochs at the end of ``epoch_logs`` whose loss sits at ln k (what a resumed monitor continues from)."""
    from tf_awt.collapse import _stuck

    count = 0
    for stuck in reversed(_stuck([e.get("loss", 0.0) for e in epoch_logs], num_classes, 0.02)):
        if not stuck:
            break
        count += 1
    return count


def _gzip_size(arrays) -> int:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as fh:
        for a in arrays:
            fh.write(np.ascontiguousarray(a).tobytes())
    return len(buf.getvalue())


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

    def _checkpoint(self, phase: str, **trackables):
        from tf_awt.checkpoint import PhaseCheckpoint

        directory = self.path(os.path.join("checkpoints", phase))
        if self.force and os.path.exists(directory):
            shutil.rmtree(directory)
        return PhaseCheckpoint(directory, f"{self.fingerprint}:{phase}", **trackables)

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
        return build_model(self.recipe.model, self.split.input_shape, self.split.num_classes)

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
        from tf_awt.search import TicketSearch, TicketSearchCallback, find_ticket, search_optimizer
        from tf_awt.ticket import Ticket

        t0 = time.time()
        r = self.recipe
        with self.strategy.scope():
            model = self.base_model()
        if r.method == "dense":
            from tf_awt.layer_rules import prunable_layers

            masks = {l.name: np.ones(l.kernel.shape, np.float32) for l in prunable_layers(model)}
            ticket = Ticket(masks=masks, initial_weights=model.get_weights(), method="dense",
                            config=dataclasses.replace(r.search_config(), density=1.0).get_config())
        elif r.method in SEARCH_METHODS:
            import tf_keras

            from tf_awt.checkpoint import epoch_batches, steps_per_epoch

            config = r.search_config()
            config = dataclasses.replace(config, attack=self._in_range(config.attack))
            steps = steps_per_epoch(len(self.split.y_train), r.search.batch_size)
            with self.strategy.scope():
                search = TicketSearch(model, config, steps_per_epoch=steps)
                search.compile(optimizer=search_optimizer(config))
                search.optimizer.build(search.optimized_variables)
            checkpoint = self._checkpoint("search", student=search.student, optimizer=search.optimizer,
                                          mask_updates=search.mask_updates,
                                          **({"scores": list(search.scores)} if search.scores else {}))
            state = checkpoint.restore()
            first = state["epoch"] if state else 0
            before = state["extra"].get("history", {}) if state else {}
            if first:
                self.log(f"search: resuming after epoch {first} of {config.epochs} ({checkpoint.directory})")
            recorder = TicketSearchCallback()

            def history():
                return {k: list(before.get(k, [])) + list(v) for k, v in recorder.history.items()} if recorder.history else before

            if first < config.epochs:
                ds = epoch_batches(self.split.x_train, self.split.y_train, r.search.batch_size, r.seed, first, config.epochs)
                search.fit(ds, initial_epoch=first, epochs=config.epochs, steps_per_epoch=steps, verbose=0,
                           callbacks=[recorder, checkpoint.callback(lambda epoch, logs: {"history": history()}),
                                      *self._callbacks("search", steps * (config.epochs - first))])
            else:
                search.rewind("init")
            ticket = search.ticket(history=history())
        else:  # every search.* key reaches the baseline through the same SearchConfig fields
            config = dataclasses.replace(r.search_config(), attack=self._in_range(r.attack_config()))
            settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            ticket = find_ticket(model, (self.split.x_train, self.split.y_train), batch_size=r.search.batch_size, **settings)
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
            model = base if self.recipe.method == "dense" else ticket.to_model(base, rescale=self.recipe.train.rescale)
        return ticket, model

    def train(self):
        import tensorflow as tf
        import tf_keras

        from tf_awt.training import AdversarialTrainer

        t0 = time.time()
        r = self.recipe
        ticket, model = self.ticket_model()
        from tf_awt.checkpoint import epoch_batches, steps_per_epoch

        tf_keras.utils.set_random_seed(r.seed)
        s = self.split
        held = min(len(s.y_test), 1000)
        val = tf.data.Dataset.from_tensor_slices((s.x_test[:held], s.y_test[:held])).batch(256)
        steps = steps_per_epoch(len(s.y_train), r.train.batch_size)
        schedule = r.training_schedule(steps)
        with self.strategy.scope():
            trainer = AdversarialTrainer(model, self._in_range(r.train_attack()), seed=r.seed, schedule=schedule)
            trainer.compile(optimizer=tf_keras.optimizers.Adam(schedule.learning_rate(r.train.lr)))
            trainer.optimizer.build(model.trainable_variables)
        checkpoint = self._checkpoint("train", model=model, optimizer=trainer.optimizer)
        state = checkpoint.restore()
        first = state["epoch"] if state else 0
        epochs_logs = list(state["extra"].get("epochs", [])) if state else []
        if first:
            self.log(f"train: resuming after epoch {first} of {r.train.epochs} ({checkpoint.directory})")

        def record(epoch, logs):
            epochs_logs.append({k: float(v) for k, v in logs.items()})
            return {"epochs": epochs_logs}

        if first < r.train.epochs:
            from tf_awt.collapse import CollapseMonitor

            train = epoch_batches(s.x_train, s.y_train, r.train.batch_size, r.seed, first, r.train.epochs)
            monitor = CollapseMonitor(s.num_classes, log=self.log)
            monitor.stuck_epochs = _trailing_stuck(epochs_logs, s.num_classes)
            trainer.fit(train, validation_data=val, initial_epoch=first, epochs=r.train.epochs, steps_per_epoch=steps,
                        verbose=0, callbacks=[checkpoint.callback(record), monitor,
                                              *self._callbacks("train", steps * (r.train.epochs - first))])
        hist = {k: [e[k] for e in epochs_logs] for k in (epochs_logs[0] if epochs_logs else {})}
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
        import tensorflow as tf

        from tensorflow_model_optimization.python.core.sparsity.keras import prune

        t0 = time.time()
        ticket = None
        if model is None:
            ticket, model = self.trained_model(distributed=False)
        stripped = prune.strip_pruning(model)
        shape = (None,) + tuple(self.split.input_shape)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
        def serving_default(images):
            return {"logits": stripped(images, training=False)}

        target = self.path("saved_model")
        atomic_directory(target, lambda tmp: stripped.save(tmp, save_format="tf", include_optimizer=False,
                                                           signatures={"serving_default": serving_default}))
        sparse_weights = stripped.get_weights()
        dense_weights = self.base_model().get_weights()
        sizes = {"raw_bytes": int(sum(w.nbytes for w in sparse_weights)),
                 "dense_gzip_bytes": _gzip_size(dense_weights), "sparse_gzip_bytes": _gzip_size(sparse_weights)}
        self.timings["export"] = time.time() - t0
        self.log(f"export: {target} (weights gzip: dense {sizes['dense_gzip_bytes']:,} B, sparse {sizes['sparse_gzip_bytes']:,} B)")
        return stripped, sizes

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
        from tf_awt import plots
        from tf_awt.evaluation import EvaluationResult
        from tf_awt.ticket import Ticket

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
            self.tracker.start(self.recipe, self.recipe_name, run_id=state.get("mlflow_run_id"))
            state["mlflow_run_id"] = self.tracker.run_id
        self._save_state(state)
        try:
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
            s = self.split
            n_eval = result.num_examples
            shares = np.bincount(s.y_test[:n_eval], minlength=s.num_classes) / max(n_eval, 1)
            reasons = collapse_reasons(hist, result.natural_accuracy, s.num_classes, n_eval, float(shares.max()),
                                       result.zero_gradient_fraction)
            if reasons:
                self.log(f"warning: training collapsed: {'; '.join(reasons)}. {advice(self.recipe.train)}")
            # a distributed model is exported from a one-device copy of its trained weights
            stripped, sizes = self.export(model if self.recipe.distribute == "none" else None)
            plots.write_all(self.out, ticket, hist)
            summary = {
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
                "mlflow_run_id": None,
                "model_uri": None,
            }
            if self.tracker:
                summary["mlflow_run_id"] = self.tracker.run_id
                summary["model_uri"] = self.tracker.log_model(stripped, self.split.x_test[:2])
                self.tracker.log_metrics({"density": ticket.density, "sparse_gzip_bytes": sizes["sparse_gzip_bytes"]})
                self.tracker.set_tags({"collapsed": str(bool(reasons)).lower(),
                                       **({"collapse_reason": summary["collapse_reason"]} if reasons else {})})
                for name in ("ticket.npz", "recipe.yaml", "history.json", "evaluation.json", *plots.NAMES):
                    if os.path.exists(self.path(name)):
                        self.tracker.log_artifact(self.path(name))
            atomic_write_json(self.path("summary.json"), summary)
            if self.tracker:
                self.tracker.log_artifact(self.path("summary.json"))
                self.tracker.end("FINISHED")
            if reasons and self.recipe.train.fail_on_collapse:
                raise TrainingCollapsed(f"training collapsed (train.fail_on_collapse): {summary['collapse_reason']}")
            return summary
        except BaseException:
            if self.tracker:
                self.tracker.end("FAILED")
            raise
