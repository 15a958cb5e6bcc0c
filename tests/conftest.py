"""Shared fixtures: tiny tf_keras models covering every layer the kernel engine supports."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_awt.running.cli import _import_tensorflow  # noqa: E402

_import_tensorflow(verbose=False)  # without TensorFlow's load-time lines (xdist workers print them otherwise)

import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import yaml  # noqa: E402

import tf_awt  # noqa: E402
from tf_awt.running import cli  # noqa: E402
from tf_awt.adversarial.evaluation import evaluation_attack

L = tf_keras.layers


def _randomize_bn(model, rng):
    """Sets moving statistics, BN scale/shift and biases away from their trivial initial values."""
    for v in model.trainable_variables:
        if "bias" in v.name:
            v.assign(rng.normal(0, 0.1, v.shape))
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0, 0.1, c))


def build_mlp(dtype="float64"):
    return tf_keras.Sequential(
        [
            L.Input((6,), dtype=dtype),
            L.Dense(5, activation="tanh", name="d1", dtype=dtype),
            L.Dense(4, name="d2", dtype=dtype),
            L.ReLU(dtype=dtype),
            L.Dropout(0.5, dtype=dtype),
            L.Reshape((2, 2), dtype=dtype),
            L.Flatten(dtype=dtype),
            L.Activation("sigmoid", dtype=dtype),
            L.Dense(3, name="out", dtype=dtype),
        ]
    )


def build_cnn(dtype="float64"):
    return tf_keras.Sequential(
        [
            L.Input((9, 9, 2), dtype=dtype),
            L.Conv2D(3, 3, strides=2, padding="same", activation="relu", name="c1", dtype=dtype),
            L.BatchNormalization(name="bn", dtype=dtype),
            L.Conv2D(4, 2, padding="same", dilation_rate=2, name="c2", dtype=dtype),
            L.LeakyReLU(0.1, dtype=dtype),
            L.AveragePooling2D(2, padding="same", dtype=dtype),
            L.Conv2D(4, (2, 1), strides=(1, 2), padding="valid", activation="elu", name="c3", dtype=dtype),
            L.MaxPooling2D((2, 1), dtype=dtype),
            L.Flatten(dtype=dtype),
            L.Dense(5, activation="relu", name="fc", dtype=dtype),
            L.Dropout(0.2, dtype=dtype),
            L.Dense(3, name="out", dtype=dtype),
        ]
    )


def build_functional(dtype="float64"):
    inp = L.Input((5, 5, 1), dtype=dtype)
    h = L.Conv2D(3, 2, padding="valid", activation="softplus", name="c1", dtype=dtype)(inp)
    a = L.Dense(2, activation="tanh", name="dense_rank4", dtype=dtype)(h)  # Dense over a rank-4 input
    b = L.Conv2D(2, 1, name="c_skip", dtype=dtype)(h)
    h = L.Add(dtype=dtype)([a, b])
    h = L.GlobalAveragePooling2D(dtype=dtype)(h)
    head = tf_keras.Sequential(
        [L.Input((2,), dtype=dtype), L.Dense(4, activation="relu", name="h1", dtype=dtype), L.Dense(3, name="h2", dtype=dtype)],
        name="head",
    )
    return tf_keras.Model(inp, head(h), name="functional")


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "functional": build_functional}


def make_model(kind, dtype="float64", seed=0):
    tf_keras.utils.set_random_seed(seed)
    model = BUILDERS[kind](dtype)
    _randomize_bn(model, np.random.default_rng(seed))
    return model


def random_masks(model, density=0.5, seed=1, names=None):
    """0/1 masks for every leaf layer with a kernel (or the given names)."""
    from tf_awt.engine._layers import iter_layers, unwrap

    rng = np.random.default_rng(seed)
    masks = {}
    for layer in iter_layers(model):
        inner, _ = unwrap(layer)
        if hasattr(inner, "kernel") and (names is None or layer.name in names):
            masks[layer.name] = (rng.random(inner.kernel.shape) < density).astype(inner.kernel.dtype.name)
    return masks


def alive_masks(model, x, density=0.5, seeds=range(1, 200)):
    """``random_masks`` whose every masked layer contributes non-zero Jacobian columns on ``x``
    (the first seed that works), so a masked-kernel test checks the mask of every layer: with an
    unlucky mask a layer's ReLUs are all dead and the expected kernel ignores its mask."""
    for seed in seeds:
        masks = random_masks(model, density=density, seed=seed)
        if not dead_masked_layers(model, x, masks):
            return masks
    raise AssertionError(f"no mask seed keeps every layer of {model.name} alive")


def dead_masked_layers(model, x, masks):
    """Names of masked layers whose kept kernel weights have an all-zero Jacobian on ``x``."""
    from _reference import explicit_jacobian, leaf_layers

    jac = explicit_jacobian(model, x, masks).numpy()
    layers = leaf_layers(model)
    offsets, start = {}, 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        offsets[id(v)] = (start, start + size)
        start += size
    dead = []
    for name, mask in masks.items():
        a, b = offsets[id(layers[name].kernel)]
        columns = jac[..., a:b][..., np.asarray(mask).ravel() > 0]
        if not np.any(columns):
            dead.append(name)
    return dead


def inputs_for(model, n, seed=2, dtype="float64"):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0, 1, (n,) + tuple(model.inputs[0].shape[1:])), dtype)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    tf_keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _no_leftover_mlflow_tracking_uri():
    """A test that calls ``mlflow.set_tracking_uri`` leaves a process-wide URI that would override the
    ``MLFLOW_TRACKING_URI`` of every later test in the same process: reset it (and the variable)."""
    import sys

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


# Modules of whole runs (subprocesses, tf.distribute workers, MLflow): collected first, so that
# under pytest-xdist (one worker per core) the long tests start early and the short ones fill the
# end, instead of one worker finishing a 30 s run while the other waits.
_WHOLE_RUN_MODULES = ("test_distributed.py", "test_resume.py", "test_cli.py", "test_recipes.py", "test_collapse.py",
                      "test_training_schedule.py", "test_sweep.py", "test_keras3.py", "test_methods.py", "test_pipeline.py",
                      "test_readme.py", "test_tracking.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in _WHOLE_RUN_MODULES)  # stable: file order otherwise kept


# --------------------------------------------------------------------------- helpers shared by the test modules
def tiny_npz(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32")
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0.5).astype("int64") + (x[:, 4:, 4:, 0].mean(axis=(1, 2)) > 0.5)
    np.savez(path, x=x, y=y)
    return path


NO_TRAINING = {"epochs": 0, "batch_size": 32, "steps": 2, "step_size": 0.05}
"""A tiny recipe's ``train`` section for tests that check the search or the plumbing, not training."""


def own_settings(method, **settings):
    """Those of ``settings`` that ``method`` has (a shared one or one of its options): a test that runs
    every method with the same fast settings passes each only what it reads."""
    known = tf_awt.SearchConfig(1.0, method=method).flat()
    return {k: v for k, v in settings.items() if k in known}


def tiny_recipe(tmp_path, **changes):
    data = {
        "description": "tiny test recipe",
        "dataset": tiny_npz(str(tmp_path / "tiny.npz")),
        "model": "mlp",
        "method": "awt",
        "density": 0.2,
        "attack": {"norm": "linf", "eps": 0.1, "steps": 2, "step_size": 0.05},
        "search": {"epochs": 1, "update_every": 2, "batch_size": 32},
        "train": {"epochs": 1, "batch_size": 32, "steps": 2, "step_size": 0.05},
        "eval": {"steps": 3, "restarts": 1, "apgd_iterations": 5, "fab_iterations": 5, "square_queries": 50},
        # The TFLite file (0.6 s a run) and the plots (0.35 s) only where a test looks at them: export={}
        # gives the defaults (both written).
        "export": {"tflite": False, "plots": False},
    }
    data.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def digits_recipe(tmp, epochs=3, **changes):
    """A tiny recipe on 400 real digits (learnable, so equal results are not equal by collapse)."""
    split = tf_awt.data.load("mnist-5k")
    path = str(tmp / "digits.npz")
    np.savez(path, x=split.x_train[:400], y=split.y_train[:400], x_test=split.x_test[:100], y_test=split.y_test[:100])
    return tiny_recipe(tmp, dataset=path, train={"epochs": epochs, "batch_size": 32, "steps": 2, "step_size": 0.05}, **changes)


def tf_awt_cli(*args, env=None, timeout=600):
    """``python -m tf_awt.running.cli ARGS`` in a new process: for what needs one (the console module, logs
    on file descriptor 2, umask, signals, locks held by other processes)."""
    return subprocess.run([sys.executable, "-m", "tf_awt.running.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def tf_awt_main(capsys, *args, env=None, monkeypatch=None):
    """``tf_awt.running.cli.main(ARGS)`` in this process (what the ``tf-awt`` script calls, without paying
    a new process's TensorFlow import): a CompletedProcess with the exit code and what it printed."""
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


ATTACK = tf_awt.Attack(eps=0.1, steps=2, step_size=0.05)


def tiny_model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_awt.models.mlp(input_shape=(6, 6, 1), num_classes=3, hidden=(12, 8))


def tiny_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 6, 6, 1)).astype("float32")
    y = (x.reshape(n, -1)[:, :3].argmax(axis=1)).astype("int64")
    return x, y


def total_prunable(model):
    return sum(l.kernel.shape.num_elements() for l in model.layers if hasattr(l, "kernel"))


class _StopAfterSecondEpoch(tf_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def trained_model():
    """The tiny MLP trained naturally (ε = 0) for 3 epochs: a model worth attacking."""
    model = tiny_model()
    tf_awt.adversarial_fit(model, tiny_data(96), attack=evaluation_attack(0.1, steps=5).replace(eps=0.0), epochs=3, batch_size=16, learning_rate=1e-2)
    return model


def small_mlp(inputs=(8, 8, 1), classes=3, seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([L.Input(inputs), L.Flatten(), L.Dense(6, activation="relu", name="h"), L.Dense(classes, name="out")])


def good_data(n=16, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32"), rng.integers(0, classes, n)


def bad_data(kind):
    x, y = good_data()
    if kind == "label_high":  # the boundary (label = k, 1-indexed labels), and a later bad entry
        y[5] = 3
        y[9] = 23
    elif kind == "label_negative":
        y[2] = -1
    elif kind == "label_fraction":
        y = y.astype("float32")
        y[3] = 1.5
    elif kind == "nan":
        x[4, 1, 2, 0] = np.nan
        x[9, 0, 0, 0] = np.nan
    elif kind == "inf":
        x[0, 0, 0, 0] = np.inf
    elif kind == "range":  # just above clip_max, then a later far one
        x[7, 3, 3, 0] = np.nextafter(np.float32(1.0), np.float32(2.0))
        x[9, 3, 3, 0] = 255.0
    elif kind == "lengths":
        y = y[:-1]
    elif kind == "empty":
        x, y = x[:0], y[:0]
    elif kind == "shape":
        x = x[:, :5]
    elif kind == "strings":
        y = np.array(["a"] * len(y))
    return x, y


# (case, message expected from the API and from the CLI)
BAD_DATA = [
    ("label_high", r"y\[5\] = 3, labels must be in \[0, 3\)"),
    ("label_negative", r"y\[2\] = -1, labels must be in \[0, (3|k)\)"),
    ("label_fraction", r"y\[3\] = .*1.5.*labels must be integers"),
    ("nan", r"x\[4, 1, 2, 0\] = nan; inputs must be finite numbers \(2 non-finite values in all\)"),
    ("inf", r"x\[0, 0, 0, 0\] = inf; inputs must be finite"),
    ("range", r"x\[7, 3, 3, 0\] = 1.0000001 lies above the data range \[0.0, 1.0\]"),
    ("lengths", r"16 inputs and 15 labels"),
    ("empty", r"is empty"),
    ("shape", r"each input has shape \(5, 8, 1\), the model expects \(8, 8, 1\)"),
    ("strings", r"y must hold integer class labels"),
]
