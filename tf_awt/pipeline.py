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
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, Optional

import numpy as np

from tf_awt.recipes import Recipe

__all__ = ["Run", "PHASES"]

PHASES = ("search", "train", "evaluate", "export")


def atomic_write_bytes(path: str, payload: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


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
    """

    def __init__(self, recipe: Recipe, out: str, recipe_name: str = "", data_dir: Optional[str] = None,
                 progress: Optional[Callable] = None, tracker=None, log: Callable[[str], None] = print):
        if recipe.distribute != "none":
            raise ValueError(f"distribute: {recipe.distribute} is not implemented yet; only 'none' (one device) runs today.")
        self.recipe, self.out, self.recipe_name = recipe, out, recipe_name
        self.data_dir, self.progress, self.tracker, self.log = data_dir, progress, tracker, log
        self.timings: Dict[str, float] = {}
        self._split = None

    # ------------------------------------------------------------------ helpers
    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    @property
    def split(self):
        if self._split is None:
            from tf_awt import data

            self._split = data.load(self.recipe.dataset, self.data_dir)
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
        import tensorflow as tf

        from tf_awt.search import TicketSearch, TicketSearchCallback, find_ticket
        from tf_awt.ticket import Ticket

        t0 = time.time()
        r = self.recipe
        model = self.base_model()
        if r.method == "dense":
            masks = {l.name: np.ones(l.kernel.shape, np.float32) for l in model.layers if hasattr(l, "kernel")}
            ticket = Ticket(masks=masks, initial_weights=model.get_weights(), method="dense", config=r.to_dict())
        elif r.method in ("awt", "ntt"):
            import tf_keras

            import dataclasses

            config = r.search_config()
            config = dataclasses.replace(config, attack=self._in_range(config.attack))
            ds = tf.data.Dataset.from_tensor_slices((self.split.x_train, self.split.y_train))
            ds = ds.shuffle(len(self.split.y_train), seed=r.seed).batch(r.search.batch_size)
            steps = int(ds.cardinality().numpy())
            search = TicketSearch(model, config, steps_per_epoch=steps)
            search.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
            recorder = TicketSearchCallback()
            search.fit(ds, epochs=config.epochs, verbose=0, callbacks=[recorder, *self._callbacks("search", steps * config.epochs)])
            ticket = search.ticket(history=recorder.history)
        else:
            ticket = find_ticket(model, (self.split.x_train, self.split.y_train), density=r.density, method=r.method,
                                 attack=self._in_range(r.attack_config()), seed=r.seed)
        ticket.save(self.path("ticket.npz"))
        if self.tracker:
            hist = ticket.history
            for i, step in enumerate(hist.get("step", [])):
                self.tracker.log_metrics({f"search_{k}": hist[k][i] for k in ("target_distance", "kernel_distance", "loss")}, step=step)
        self.timings["search"] = time.time() - t0
        self.log(f"search: {ticket.method} ticket, density {ticket.density:.4f} ({self.timings['search']:.0f} s)")
        return ticket

    def ticket_model(self):
        from tf_awt.ticket import Ticket

        self._require("ticket.npz", "search")
        ticket = Ticket.load(self.path("ticket.npz"))
        base = self.base_model()
        model = base if self.recipe.method == "dense" else ticket.to_model(base)
        return ticket, model

    def train(self):
        import tensorflow as tf
        import tf_keras

        from tf_awt.training import AdversarialTrainer

        t0 = time.time()
        r = self.recipe
        ticket, model = self.ticket_model()
        tf_keras.utils.set_random_seed(r.seed)
        s = self.split
        train = tf.data.Dataset.from_tensor_slices((s.x_train, s.y_train)).shuffle(len(s.y_train), seed=r.seed).batch(r.train.batch_size)
        held = min(len(s.y_test), 1000)
        val = tf.data.Dataset.from_tensor_slices((s.x_test[:held], s.y_test[:held])).batch(256)
        trainer = AdversarialTrainer(model, self._in_range(r.train_attack()))
        trainer.compile(optimizer=tf_keras.optimizers.Adam(r.train.lr))
        steps = int(train.cardinality().numpy()) * r.train.epochs
        history = trainer.fit(train, validation_data=val, epochs=r.train.epochs, verbose=0, callbacks=self._callbacks("train", steps))
        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        tmp = self.path(".tmp-trained.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, self.path("trained.weights.h5"))
        atomic_write_json(self.path("history.json"), hist)
        if self.tracker:
            for epoch in range(len(next(iter(hist.values()), []))):
                self.tracker.log_metrics({f"train_{k}": v[epoch] for k, v in hist.items()}, step=epoch)
        self.timings["train"] = time.time() - t0
        last = {k: round(v[-1], 4) for k, v in hist.items()} if hist else {}
        self.log(f"train: {r.train.epochs} epochs ({self.timings['train']:.0f} s) {last}")
        return model, hist

    def trained_model(self):
        ticket, model = self.ticket_model()
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
        result = evaluate(model, (s.x_test[:n], s.y_test[:n]), attack=self._in_range(r.eval_attack()), restarts=r.eval.restarts)
        atomic_write_json(self.path("evaluation.json"), result.to_dict())
        if self.tracker:
            self.tracker.log_metrics({"natural_accuracy": result.natural_accuracy, "robust_accuracy": result.robust_accuracy})
        self.timings["evaluate"] = time.time() - t0
        self.log(f"evaluate: natural {result.natural_accuracy:.4f}, robust {result.robust_accuracy:.4f} "
                 f"(PGD-{r.eval.steps} x{r.eval.restarts}, eps {r.attack.eps:g}, {n} examples, {self.timings['evaluate']:.0f} s)")
        return result

    def export(self, model=None):
        import tensorflow as tf

        from tensorflow_model_optimization.python.core.sparsity.keras import prune

        t0 = time.time()
        ticket = None
        if model is None:
            ticket, model = self.trained_model()
        stripped = prune.strip_pruning(model)
        shape = (None,) + tuple(self.split.input_shape)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
        def serving_default(images):
            return {"logits": stripped(images, training=False)}

        target = self.path("saved_model")
        tmp = tempfile.mkdtemp(dir=self.out, prefix=".tmp-saved_model-")
        try:
            stripped.save(tmp, save_format="tf", signatures={"serving_default": serving_default}, include_optimizer=False)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
        sparse_weights = stripped.get_weights()
        dense_weights = self.base_model().get_weights()
        sizes = {"raw_bytes": int(sum(w.nbytes for w in sparse_weights)),
                 "dense_gzip_bytes": _gzip_size(dense_weights), "sparse_gzip_bytes": _gzip_size(sparse_weights)}
        self.timings["export"] = time.time() - t0
        self.log(f"export: {target} (weights gzip: dense {sizes['dense_gzip_bytes']:,} B, sparse {sizes['sparse_gzip_bytes']:,} B)")
        return stripped, sizes

    # ------------------------------------------------------------------ everything
    def all(self) -> dict:
        from tf_awt import plots

        os.makedirs(self.out, exist_ok=True)
        if os.path.exists(self.path("summary.json")):
            os.remove(self.path("summary.json"))  # a rerun is not complete until it writes a new one
        self.write_recipe()
        if self.tracker:
            self.tracker.start(self.recipe, self.recipe_name)
        try:
            ticket = self.search()
            model, hist = self.train()
            result = self.evaluate(model)
            stripped, sizes = self.export(model)
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
                "phase_seconds": self.timings,
                "model_size": sizes,
                "sanity_warnings": result.warnings,
                "saved_model": os.path.abspath(self.path("saved_model")),
                "mlflow_run_id": None,
                "model_uri": None,
            }
            if self.tracker:
                summary["mlflow_run_id"] = self.tracker.run_id
                summary["model_uri"] = self.tracker.log_model(stripped, self.split.x_test[:2])
                self.tracker.log_metrics({"density": ticket.density, "sparse_gzip_bytes": sizes["sparse_gzip_bytes"]})
                for name in ("ticket.npz", "recipe.yaml", "history.json", "evaluation.json", *plots.NAMES):
                    if os.path.exists(self.path(name)):
                        self.tracker.log_artifact(self.path(name))
            atomic_write_json(self.path("summary.json"), summary)
            if self.tracker:
                self.tracker.log_artifact(self.path("summary.json"))
                self.tracker.end("FINISHED")
            return summary
        except BaseException:
            if self.tracker:
                self.tracker.end("FAILED")
            raise
