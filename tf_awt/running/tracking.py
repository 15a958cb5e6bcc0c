"""MLflow tracking of a run: resolved recipe as params, step metrics, artifacts, the model.

The tracking URI is MLflow's own choice: ``MLFLOW_TRACKING_URI`` when set, else MLflow's default
local store. An http(s) server is probed first (5 s) so an unreachable server is a clear error,
not a hang in MLflow's retries.

MLflow is imported inside the functions that use it: ``--no-mlflow`` runs and every check before a
run never load it.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import urllib.error
import urllib.request
from typing import Dict, Optional

from tf_awt.running import grid

__all__ = ["Tracker", "NullTracker", "check_server", "record_run", "log_history"]


def check_server(uri: str, timeout: float = 5.0) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"MLflow tracking server {uri} is unreachable ({reason}). Start it, or unset MLFLOW_TRACKING_URI "
                         "to use the local store.") from None


_REGISTRATION_LINES = ("Successfully registered model", "Created version", "Registered model")
"""How MLflow announces a registration on stderr (the closing block says it once, with the URI)."""


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serializes first use of a local sqlite store between processes on this machine: two runs
    that start together against a fresh ``mlflow.db`` would otherwise both create its tables and
    one dies in the schema migration ("Online migration expected to match one row")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = uri[len("sqlite:///"):]
    with open(os.path.abspath(path) + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tracker:
    """One MLflow run per pipeline run.

    Args:
      experiment: MLflow experiment name (default "tf_awt").
      tracking_uri: overrides ``MLFLOW_TRACKING_URI`` (default None: MLflow's choice).
      nested: start the run as a child of the active run (default False; sweeps use True).
      parent_run_id: start the run as a child of this run, from any process (default None; a
        sweep's cells on Ray workers, where the parent is not the active run).
      register: register the logged model under this name in MLflow's model registry, one new
        version per run (default None: log it without registering).

    Attributes:
      run_id: the MLflow run's id once started.
      registered_uri: ``models:/NAME/VERSION`` of the registered model, once logged with ``register``.
    """

    def __init__(self, experiment: str = "tf_awt", tracking_uri: Optional[str] = None, nested: bool = False,
                 register: Optional[str] = None, parent_run_id: Optional[str] = None):
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.nested = nested
        self.parent_run_id = parent_run_id
        self.register = register
        self.run_id: Optional[str] = None
        self.registered_uri: Optional[str] = None

    def _connect(self) -> None:
        """The tracking store reached (a server checked first), the local store created under a lock,
        and, unless nested, the experiment set and marked as model training."""
        import mlflow

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        if self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        check_server(mlflow.get_tracking_uri())
        with _store_lock(mlflow.get_tracking_uri()):
            mlflow.get_experiment_by_name(self.experiment)  # creates (or migrates) a local store
        if not self.nested:
            _training_experiment(mlflow.set_experiment(self.experiment))

    def start(self, recipe, recipe_name: str = "", run_id: Optional[str] = None, run_name: Optional[str] = None,
              otherwise: str = "--force to start over") -> str:
        """Starts the run (named ``run_name``, default ``<recipe>-<method>-d<density>-s<seed>``); with
        ``run_id`` (a resumed run) continues that MLflow run instead, and if the store does not know it,
        the error names the run's tracking URI or ``otherwise`` as the way out."""
        import mlflow

        self._connect()
        if run_id:
            try:
                run = mlflow.start_run(run_id=run_id, nested=self.nested)
            except Exception as err:  # MlflowException: the store does not know the run
                raise ValueError(f"cannot continue MLflow run {run_id} at {mlflow.get_tracking_uri()} "
                                 f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}). "
                                 f"Use the tracking URI the run started with, or {otherwise}.") from None
            self.run_id = run.info.run_id
            return self.run_id
        run = mlflow.start_run(run_name=run_name or grid.run_name_of(recipe, recipe_name),
                               nested=self.nested, parent_run_id=self.parent_run_id)
        self.run_id = run.info.run_id
        mlflow.log_params({k: ("null" if v is None else v) for k, v in recipe.flat().items()})
        mlflow.set_tags({"tf_awt.recipe": recipe_name, "tf_awt.method": recipe.method})
        return self.run_id

    def start_parent(self, name: str, params: Dict[str, object], run_id: Optional[str] = None) -> str:
        """Starts (or, with ``run_id``, continues) a parent run — a sweep's — whose children are
        nested :class:`Tracker` runs; ``params`` are logged on a new run only."""
        import mlflow

        self._connect()
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=name)
        if not run_id:
            mlflow.log_params(params)
        self.run_id = run.info.run_id
        return self.run_id

    def end_all(self) -> None:
        """Ends every active run (a parent and any child an interruption left open)."""
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str) -> None:
        import mlflow

        mlflow.log_artifact(path)

    def log_model(self, model, input_example, metrics: Optional[Dict[str, tuple]] = None, description: str = "",
                  tags: Optional[Dict[str, str]] = None, registrable: bool = True) -> str:
        """Logs the sparse model (TensorFlow flavor, signature + input example); returns its URI.

        ``metrics`` ({key: (value, step)}) are the model's own numbers, linked to it and only they:
        MLflow links a model to every run metric at its step, and the search's steps and the
        training's epochs share numbers, so the model is logged one step past every metric of the
        run. The MLflow UI then shows the trained model's final numbers only. With ``register``
        and ``registrable`` (default True; a collapsed run passes False), the model also becomes a
        new version of that registered model (:attr:`registered_uri`; ``mlflow models serve -m
        models:/NAME/latest`` serves it), whose description is ``description`` and whose tags are
        ``tags``. Without, the model is only logged on its run.
        """
        import mlflow
        import numpy as np

        example = np.asarray(input_example, np.float32)
        logits = model(example, training=False).numpy()
        signature = mlflow.models.infer_signature(example, logits)
        with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints its registration on stderr
            info = mlflow.tensorflow.log_model(model, name="model", signature=signature, input_example=example,
                                               registered_model_name=self.register if registrable else None,
                                               pip_requirements=_serving_requirements(), step=self._unused_step())
        for line in said.getvalue().splitlines():  # the registration is in tf-awt's closing block; anything else is kept
            if line.strip() and not line.startswith(_REGISTRATION_LINES):
                print(line, file=sys.stderr)
        for key, (value, step) in (metrics or {}).items():
            mlflow.log_metric(key, float(value), step=int(step), model_id=info.model_id)
        if self.register and registrable:
            version = info.registered_model_version
            self.registered_uri = f"models:/{self.register}/{version}"
            client = mlflow.tracking.MlflowClient()
            if description:
                client.update_model_version(self.register, version, description=description)
            for key, value in (tags or {}).items():
                client.set_model_version_tag(self.register, version, key, str(value))
        return info.model_uri

    def _unused_step(self) -> int:
        """One past the largest step of any metric the run logged (in this process or before a resume)."""
        import mlflow

        client = mlflow.tracking.MlflowClient()
        keys = client.get_run(self.run_id).data.metrics
        return 1 + max((m.step for key in keys for m in client.get_metric_history(self.run_id, key)), default=-1)

    def log_training_data(self, x, y, name: str) -> None:
        """Records the training split as the run's MLflow dataset input (name, digest, shape; not the data)."""
        import mlflow
        import numpy as np

        dataset = mlflow.data.from_numpy(np.asarray(x), targets=np.asarray(y), name=name)
        mlflow.log_input(dataset, context="training")

    def describe(self, text: str) -> None:
        """Sets the run's description (what the MLflow UI shows on the run page)."""
        import mlflow

        mlflow.set_tag("mlflow.note.content", text)

    def end(self, status: str = "FINISHED") -> None:
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=status)


_EXPERIMENT_KIND = "mlflow.experimentKind"


def _training_experiment(experiment) -> None:
    """Marks the experiment as model training (MLflow 3's UI then opens its runs table, not the GenAI
    overview), unless it already has a kind."""
    import mlflow

    if _EXPERIMENT_KIND not in (experiment.tags or {}):
        mlflow.set_experiment_tag(_EXPERIMENT_KIND, "custom_model_development")


class NullTracker(Tracker):
    """A :class:`Tracker` that records nothing (runs without MLflow): every public method of
    :class:`Tracker` is there and does nothing, so a caller never asks whether it tracks.
    ``run_id`` and ``registered_uri`` stay None."""


def _does_nothing(*args, **kwargs) -> None:
    return None


for _name, _value in list(vars(Tracker).items()):
    if callable(_value) and not _name.startswith("_"):
        setattr(NullTracker, _name, _does_nothing)
del _name, _value


def _serving_requirements():
    """What serving the logged SavedModel imports, pinned to this environment's versions. Given
    explicitly: MLflow's inference of them loads the model in a subprocess (about 10 s per run)."""
    from importlib import metadata

    import tensorflow as tf

    pins = [f"tensorflow=={tf.__version__}"]
    for name in ("numpy", "cloudpickle"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - both come with MLflow
            pins.append(name)
    return pins


def _version_tags(recipe_name, recipe, summary) -> Dict[str, str]:
    """A registered version's tags, at most the five its page shows: what was pruned, how, against which
    attack, and the headline with the attacks it is the worst case of (the natural accuracy is in the description).

    MLflow's model version page (3.x) lists a version's first five tags in name order and no more: a sixth
    is on the version (REST, search) but never on the page a user opens (tools/mlflow_screenshots.py;
    checked by adding a tag "a_test", which pushed the fifth one off the page)."""
    robust = f"{summary['robust_accuracy']:.4f}"
    label = summary.get("robust_accuracy_attacks")
    return {"method": recipe.method, "density": f"{summary['density']:.4f}",
            "attack": f"{recipe.attack.norm} ε = {recipe.attack.eps:g}", "recipe": recipe_name,
            "robust_accuracy": f"{robust} ({label})" if label else robust}


def record_run(tracker, recipe, recipe_name: str, summary: dict, model, input_example, history: dict,
               description: str, reasons, artifacts) -> None:
    """A finished run into ``tracker`` (a :class:`Tracker` or :class:`NullTracker`): the model,
    linked to its final numbers (the last training epoch's ``train_*`` of ``history``, the
    evaluation's accuracies) and registered with ``description`` and tags (a
    collapsed run's model, ``reasons`` non-empty, is logged but never registered: ``models:/NAME/latest``
    keeps serving the last healthy one); the run's description, final metrics, each phase's wall
    seconds and passes (``search_forward_passes``, ...), collapse tags and ``artifacts`` (paths). Sets ``summary["model_uri"]`` and ``summary["registered_model"]``."""
    tags = _version_tags(recipe_name, recipe, summary)
    if recipe.export.saved_model:  # else no model: a comparison's selection try, say
        final = {f"train_{k}": (v[-1], len(v) - 1) for k, v in history.items() if v}
        final.update({k: (summary[k], 0) for k in ("natural_accuracy", "robust_accuracy")})
        final.update({f"robust_accuracy_after_{k.replace('-', '_')}": (v, 0) for k, v in summary.get("suites", {}).items()})
        summary["model_uri"] = tracker.log_model(model, input_example, metrics=final, description=description, tags=tags,
                                                 registrable=not reasons)
    summary["registered_model"] = tracker.registered_uri
    tracker.describe(description)
    tracker.log_metrics({"density": summary["density"], "sparse_gzip_bytes": summary["model_size"]["sparse_gzip_bytes"],
                         **{f"{phase}_seconds": seconds for phase, seconds in summary.get("phase_seconds", {}).items()},
                         **{f"{phase}_{kind}_passes": n for phase, counts in summary.get("phase_passes", {}).items()
                            for kind, n in counts.items()}})
    tracker.set_tags({"collapsed": str(bool(reasons)).lower(),
                      **({"collapse_reason": summary["collapse_reason"]} if reasons else {})})
    for path in artifacts:
        tracker.log_artifact(path)


def log_history(tracker, history: dict, prefix: str, keys=None, steps=None) -> None:
    """Per-step metrics ``prefix + key`` of ``history`` ({key: [values]}), at ``steps`` (default 0, 1, ...)."""
    keys = [k for k in (keys if keys is not None else history) if k in history]  # a method's own record: what it has
    count = len(history[keys[0]]) if keys and keys[0] in history else 0
    for i, step in enumerate(steps if steps is not None else range(count)):
        tracker.log_metrics({f"{prefix}{k}": history[k][i] for k in keys}, step=step)
