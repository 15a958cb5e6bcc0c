"""Bad input never crashes or silently corrupts (issue 11): one data contract at every entry point,
NumPy scalars, datasets, ticket/architecture checks, file modes, log silence, the output lock, the
mirrored CLI path, and property-based tests over recipes and --set overrides."""
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_awt
from tf_awt import cli
from tf_awt.recipes import from_dict, load_recipe

from conftest import NO_TRAINING, tf_awt_cli, tf_awt_main, tiny_npz, tiny_recipe

L = tf_keras.layers


def small_mlp(inputs=(8, 8, 1), classes=3, seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([L.Input(inputs), L.Flatten(), L.Dense(6, activation="relu", name="h"), L.Dense(classes, name="out")])


def good_data(n=16, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32"), rng.integers(0, classes, n)


def _bad(kind):
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


@pytest.mark.parametrize("case,message", BAD_DATA)
def test_every_api_entry_point_refuses_bad_data(case, message):
    model = small_mlp()
    data = _bad(case)
    attack = tf_awt.Attack(eps=0.1, steps=1, step_size=0.1)
    with pytest.raises(ValueError, match=message):
        tf_awt.find_ticket(model, data, density=0.5, method="magnitude", attack=attack)
    with pytest.raises(ValueError, match=message):
        tf_awt.find_ticket(model, data, density=0.5, method="awt", attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.adversarial_fit(model, data, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.adversarial_fit(model, good_data(), validation=data, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=message):
        tf_awt.evaluate(model, data, attack=attack, restarts=1)


@pytest.mark.parametrize("case", ["nan", "label_high", "range"])
def test_datasets_are_checked_as_they_are_read(case):
    model = small_mlp()
    x, y = _bad(case)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    attack = tf_awt.Attack(eps=0.1, steps=1, step_size=0.1)
    expected = {"nan": "non-finite", "label_high": r"label >= 3; labels must be in \[0, 3\)", "range": "above the data range"}[case]
    with pytest.raises(ValueError, match=expected):
        tf_awt.find_ticket(model, ds, density=0.5, method="awt", attack=attack, epochs=1)
    with pytest.raises(ValueError, match=expected):
        tf_awt.adversarial_fit(model, ds, attack=attack, epochs=1)
    with pytest.raises(ValueError, match=[m for c, m in BAD_DATA if c == case][0]):
        tf_awt.evaluate(model, ds, attack=attack, restarts=1)


def test_evaluate_accepts_a_dataset_like_the_other_entry_points():
    model = small_mlp()
    x, y = good_data(40)
    attack = tf_awt.Attack(eps=0.1, steps=2, step_size=0.05)
    arrays = tf_awt.evaluate(model, (x, y), attack=attack, restarts=1)
    batched = tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(7), attack=attack, restarts=1)
    unbatched = tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)), attack=attack, restarts=1)
    assert arrays.natural_accuracy == batched.natural_accuracy == unbatched.natural_accuracy
    assert arrays.num_examples == batched.num_examples == unbatched.num_examples == 40
    with pytest.raises(ValueError, match="infinite"):
        tf_awt.evaluate(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(), attack=attack)


def test_numpy_scalars_are_numbers():
    model = small_mlp()
    data = good_data(32)
    attack = tf_awt.Attack(eps=np.float32(0.1), steps=np.int64(1), step_size=np.float64(0.1))
    assert type(attack.eps) is float and type(attack.steps) is int
    ticket = tf_awt.find_ticket(model, data, density=np.float32(0.5), method="awt", attack=attack,
                                epochs=np.int64(1), batch_size=np.int32(16), seed=np.int64(3), update_every=np.int16(1))
    assert abs(ticket.density - 0.5) < 0.02
    json.dumps(ticket.config)  # stored as Python numbers
    trainer = tf_awt.AdversarialTrainer(model, attack, seed=np.int64(0))
    assert trainer.seed == 0 and type(trainer.seed) is int
    tf_awt.adversarial_fit(model, data, attack=attack, epochs=np.int64(1), learning_rate=np.float32(1e-3),
                           batch_size=np.int64(16), seed=np.int32(1))
    result = tf_awt.evaluate(model, data, attack=attack, restarts=np.int64(1))
    assert result.restarts == 1
    assert tf_awt.AWTSchedule(np.float64(0.2), np.int32(5)).get_config()["config"]["update_every"] == 5
    for bad, message in ((True, "density must be in"), (np.float32("nan"), "density must be in"), ("0.1", "density must be in")):
        with pytest.raises(ValueError, match=message):
            tf_awt.find_ticket(model, data, density=bad, method="random")
    with pytest.raises(ValueError, match=r"seed must be an integer. You passed: 1.5"):
        tf_awt.AdversarialTrainer(model, attack, seed=1.5)


def test_ticket_on_another_architecture_says_what_differs(tmp_path):
    model = small_mlp()
    ticket = tf_awt.find_ticket(model, good_data(32), density=0.5, method="magnitude")
    wider = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(7, activation="relu", name="h"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"mask for layer 'h' has shape \(64, 6\), the model's kernel has shape \(64, 7\)"):
        ticket.to_model(wider)
    renamed = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(6, name="other"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"masks layers \['h'\] that model .* does not have"):
        ticket.to_model(renamed)
    deeper = tf_keras.Sequential([L.Input((8, 8, 1)), L.Flatten(), L.Dense(6, name="h"), L.Dense(6, name="mid"), L.Dense(3, name="out")])
    with pytest.raises(ValueError, match=r"holds 4 initial weight arrays, model .* has 6"):
        ticket.to_model(deeper)
    same = ticket.to_model(small_mlp(seed=1))  # same architecture: θ0 ⊙ m of the ticket, in tfmot wrappers
    from tf_awt._layers import iter_layers, unwrap

    wrapped = {unwrap(l)[0].name: l for l in iter_layers(same)}
    for name, mask in ticket.masks.items():
        np.testing.assert_array_equal(unwrap(wrapped[name])[1].numpy(), mask)
        np.testing.assert_array_equal(unwrap(wrapped[name])[0].kernel.numpy(), model.get_layer(name).kernel.numpy() * mask)
    for payload, name in ((b"PK\x03\x04 truncated", "trunc.npz"), (b"", "empty.npz")):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=f"{name} is not a tf_awt ticket file"):
            tf_awt.Ticket.load(str(tmp_path / name))
    with pytest.raises(ValueError, match="missing.npz does not exist"):
        tf_awt.Ticket.load(str(tmp_path / "missing.npz"))
    path = str(tmp_path / "t.npz")
    ticket.save(path)
    assert tf_awt.Ticket.load(path, model=small_mlp(seed=2)).masks.keys() == ticket.masks.keys()
    with pytest.raises(ValueError, match=r"t.npz: the ticket's mask for layer 'h' has shape \(64, 6\), the model's kernel"):
        tf_awt.Ticket.load(path, model=wider)
    arrays = dict(np.load(path))
    arrays["mask/h"] = arrays["mask/h"] * 0.5
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="mask of layer 'h' holds values other than 0 and 1"):
        tf_awt.Ticket.load(path)


def test_corrupt_data_file_is_named(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 a zip file cut short")
    with pytest.raises(ValueError, match=r"broken.npz is not a readable .npz file \(BadZipFile"):
        tf_awt.data.load(str(bad))
    (tmp_path / "text.npz").write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match=r"text.npz is not a readable .npz file"):
        tf_awt.data.load(str(tmp_path / "text.npz"))
    np.savez(str(tmp_path / "keys.npz"), images=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"keys.npz must hold arrays 'x'.*It holds: \['images'\]"):
        tf_awt.data.load(str(tmp_path / "keys.npz"))


def _write_bad_npz(tmp_path, case):
    x, y = _bad(case)
    path = str(tmp_path / f"{case}.npz")
    np.savez(path, x=x, y=y, x_test=x, y_test=y)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run's saved_model (3 classes, 8x8x1 inputs), made once through the CLI."""
    tmp = tmp_path_factory.mktemp("exported")
    out = str(tmp / "run")
    assert cli.main(["run", tiny_recipe(tmp), "--out", out, "--quiet", "--no-mlflow"]) == 0
    return out


CLI_DATA = [case for case in BAD_DATA if case[0] not in ("lengths", "empty", "strings")]


@pytest.mark.parametrize("case,message", CLI_DATA)
def test_cli_evaluate_refuses_bad_data_in_one_line(exported, tmp_path, capsys, case, message):
    path = _write_bad_npz(tmp_path, case)
    code = cli.main(["evaluate", "--model", os.path.join(exported, "saved_model"), "--data", path, "--steps", "2", "--restarts", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tf-awt: error: "), err
    if case == "shape":
        message = r"each input has shape \(5, 8, 1\), the model expects \(8, 8, 1\)"
    import re

    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize("case", ["nan", "label_fraction", "lengths", "empty"])
def test_cli_run_on_bad_data_leaves_no_output_and_no_summary(tmp_path, capsys, case):
    recipe = tiny_recipe(tmp_path, dataset=_write_bad_npz(tmp_path, case))
    out = tmp_path / "never"
    assert cli.main(["run", recipe, "--out", str(out), "--no-mlflow", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tf-awt: error: ") and f"{case}.npz" in err[0], err
    assert not out.exists()


def test_cli_names_the_real_cause_not_in_user_code():
    class Broken(L.Layer):
        def call(self, x):
            raise TypeError("the real cause: a broken layer")

    model = tf_keras.Sequential([L.Input((3,)), L.Dense(2)])
    model.compile("adam", "mse")
    errors = []
    try:  # a layer failing inside fit: Keras' "Exception encountered ... in user code:" wrapper
        wrapped = tf_keras.Sequential([L.Input((3,)), L.Dense(2)])
        wrapped.compile("adam", "mse")
        broken = Broken()
        wrapped.train_step = lambda data: {"loss": broken(data[0])}
        wrapped.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    except Exception as err:  # noqa: BLE001
        errors.append((err, "TypeError: the real cause: a broken layer"))
    try:  # an op failing in a graph: "Graph execution error: Detected at node ..."
        classifier = tf_keras.Sequential([L.Input((3,)), L.Dense(2)])
        classifier.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        classifier.fit(np.zeros((4, 3)), np.array([0, 1, 5, 1]), verbose=0)
    except Exception as err:  # noqa: BLE001
        errors.append((err, "Received a label value of 5 which is outside the valid range of [0, 2)"))
    assert len(errors) == 2
    for err, cause in errors:
        assert str(err).strip().splitlines()[0] != cli.error_message(err)
        assert cause in cli.error_message(err), (cli.error_message(err), str(err)[-400:])


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_follow_the_umask_and_logs_are_quiet(tmp_path):
    umask = 0o027  # not the usual 0o022: files written 0o644 regardless of the umask would fail
    recipe = tiny_recipe(tmp_path)
    out = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a new store: MLflow would log its table creation at INFO
    proc = subprocess.run([sys.executable, "-m", "tf_awt.cli", "run", recipe, "--out", str(out), "--quiet", "--no-register"],
                          capture_output=True, text=True, preexec_fn=lambda: os.umask(umask), timeout=600, cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")},
                               "MLFLOW_TRACKING_URI": store})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("summary.json", "ticket.npz", "trained.weights.h5", "recipe.yaml", "evaluation.json", "distances.png"):
        assert _mode(out / name) == 0o666 & ~umask, name
    assert _mode(out / "saved_model") == 0o777 & ~umask
    assert _mode(out / "saved_model" / "saved_model.pb") == 0o666 & ~umask
    assert _mode(out / "saved_model" / "variables") == 0o777 & ~umask
    noise = [l for l in proc.stderr.splitlines() if l[:5] in ("I0000", "W0000", "E0000") or "oneDNN" in l
             or "cuInit" in l or "absl::InitializeLog" in l or l.startswith("WARNING:tensorflow") or " INFO mlflow" in l]
    assert not noise, noise
    assert not (out / ".tf-awt.lock").exists()
    # --verbose: TensorFlow's own lines are back (they come with its import, before the one-line error).
    loud = tf_awt_cli("--verbose", "evaluate", "--model", str(tmp_path / "missing"), "--dataset", "mnist-5k",
                      env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 2 and "is not a SavedModel directory" in loud.stderr, loud.stderr[-2000:]
    assert "oneDNN" in loud.stderr or "I0000" in loud.stderr


def test_mirrored_cli_run_on_one_device_matches_one_device(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, search={"epochs": 2, "update_every": 2, "batch_size": 32})
    results = {}
    for mode in ("none", "mirrored"):
        out = tmp_path / mode
        proc = tf_awt_main(capsys, "run", recipe, "--set", f"distribute={mode}", "--out", str(out), "--quiet", "--no-mlflow")
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = json.loads((out / "summary.json").read_text())
    assert abs(results["none"]["robust_accuracy"] - results["mirrored"]["robust_accuracy"]) <= 0.02
    assert abs(results["none"]["natural_accuracy"] - results["mirrored"]["natural_accuracy"]) <= 0.02
    a = tf_awt.Ticket.load(str(tmp_path / "none" / "ticket.npz"))
    b = tf_awt.Ticket.load(str(tmp_path / "mirrored" / "ticket.npz"))
    assert a.history["mask_updates"][-1] == b.history["mask_updates"][-1] > 1  # the masks were updated in the search
    for name in a.masks:
        np.testing.assert_array_equal(a.masks[name], b.masks[name])


def test_a_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / ".tf-awt.lock").write_text(f"{holder.pid}\n")
        proc = tf_awt_main(capsys, "run", recipe, "--out", str(out), "--quiet", "--no-mlflow")
        assert proc.returncode == 2
        assert f"is in use by another tf-awt process (pid {holder.pid}" in proc.stderr
        assert sorted(os.listdir(out)) == [".tf-awt.lock"]  # nothing written beside the owner's lock
        # ... and refused at once: before TensorFlow's import (≈ 12 s), in a fresh process
        code = ("import sys; from tf_awt import cli; "
                f"c = cli.main(['run', {recipe!r}, '--out', {str(out)!r}, '--quiet', '--no-mlflow']); "
                "print(c, 'tensorflow' in sys.modules)")
        fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert fresh.stdout.split() == ["2", "False"], (fresh.stdout, fresh.stderr[-2000:])
        assert "is in use by another tf-awt process" in fresh.stderr
    finally:
        holder.kill()
        holder.wait()
    proc = tf_awt_main(capsys, "run", recipe, "--out", str(out), "--quiet", "--no-mlflow")  # the owner is gone: stale
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"took over the lock of a process that no longer runs (pid {holder.pid})" in proc.stderr
    assert (out / "summary.json").exists() and not (out / ".tf-awt.lock").exists()


def test_run_ends_with_what_to_look_at_and_run_next(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, train=NO_TRAINING)
    out = tmp_path / "run"
    proc = tf_awt_main(capsys, "run", recipe, "--out", str(out), "--no-mlflow")
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    text = proc.stdout
    assert f"natural {summary['natural_accuracy']:.4f}, robust {summary['robust_accuracy']:.4f} at linf eps 0.1 (chance 0.333)" in text
    assert os.path.join(str(out), "density.png") in text
    assert f"tf-awt evaluate --model {os.path.join(str(out), 'saved_model')} --dataset {tmp_path / 'tiny.npz'} --attack autoattack" in text
    assert "mlflow ui" not in text  # no MLflow run: no MLflow commands
    quiet = tf_awt_main(capsys, "run", recipe, "--out", str(tmp_path / "quiet"), "--no-mlflow", "--quiet")
    assert "next:" not in quiet.stdout and len(quiet.stdout.strip().splitlines()) == 1


def test_two_runs_started_at_once_on_one_directory(tmp_path):
    recipe = tiny_recipe(tmp_path, train={"epochs": 3, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "run")
    args = [sys.executable, "-m", "tf_awt.cli", "run", recipe, "--out", out, "--quiet", "--no-mlflow"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "is in use by another tf-awt process" in outcomes[1][1]
    assert json.load(open(os.path.join(out, "summary.json")))["density"] > 0


# ---------------------------------------------------------------- property-based: recipes and --set

_KEYS = ["dataset", "model", "method", "density", "seed", "distribute", "description", "attack", "search", "train", "eval",
         "attack.norm", "attack.eps", "attack.steps", "attack.step_size", "search.epochs", "search.learning_rate", "search.gamma",
         "search.update_every", "search.kernel", "search.kernel_weight", "search.normalization", "search.scope",
         "search.batch_size", "train.epochs", "train.learning_rate", "train.batch_size", "train.steps", "train.step_size",
         "eval.steps", "eval.restarts", "eval.max_examples", "eval.autoattack", "densty", "attack.epz", "a.b.c", "", "."]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["awt", "mlp", "cnn", "linf", "l2", "full", "diagonal", "global", "layer", "none", "mirrored",
                     "per_entry", "mnist-5k", "nan", "[1, 2]", "{a: 1}", "'quoted", "1e-3", "0x10", "-"]),
    st.text(max_size=8), st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.sampled_from(["eps", "x"]), st.integers(0, 3), max_size=2),
)


def _value_text(value):
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() if not isinstance(value, str) else value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=1, max_size=4))
def test_any_override_gives_a_valid_recipe_or_a_one_line_error(pairs):
    overrides = [f"{key}={_value_text(value)}" for key, value in pairs]
    try:
        recipe = load_recipe("quickstart", overrides)
    except ValueError as err:
        assert str(err).strip() and "\n" not in str(err).strip(), err
        return
    # a valid recipe round-trips through its YAML and validates again
    again = from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe
    assert 0 < recipe.density <= 1 and recipe.train.epochs >= 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(
    st.dictionaries(st.sampled_from([k for k in _KEYS if "." not in k] + ["junk"]), _VALUES, max_size=5),
    _VALUES, st.text(max_size=30)))
def test_any_recipe_file_gives_a_valid_recipe_or_a_one_line_error(tmp_path, document):
    path = tmp_path / "r.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    try:
        recipe = load_recipe(str(path))
    except ValueError as err:
        assert str(err).strip() and "\n" not in str(err).strip(), err
        return
    # it loaded: every key it gave is what the recipe holds, the rest are defaults, and it round-trips
    given = document if isinstance(document, dict) else {}
    for key, value in given.items():
        if key in ("dataset", "model", "method", "density", "seed", "distribute", "description", "init"):
            assert getattr(recipe, key) == (float(value) if key == "density" else value), key
    assert from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=1, max_size=3))
def test_invalid_overrides_through_the_cli_exit_2_and_leave_no_directory(tmp_path, capsys, pairs):
    overrides = [f"{key}={_value_text(value)}" for key, value in pairs]
    try:
        load_recipe("quickstart", overrides)
        return  # valid: running it is the end-to-end tests' business
    except ValueError:
        pass
    out = tmp_path / f"out-{time.monotonic_ns()}"
    argv = ["run"] + [a for o in overrides for a in ("--set", o)] + ["--out", str(out), "--no-mlflow"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tf-awt: error: "), err
    assert not out.exists()


def test_concurrent_runs_can_create_the_same_local_mlflow_store(tmp_path):
    # Seen for real: two `tf-awt sweep`s started together on a fresh mlflow.db, one died in MLflow's schema
    # migration ("Online migration expected to match one row"). The store's first use is now serialized.
    script = ("import sys\nfrom tf_awt.tracking import Tracker\nfrom tf_awt.recipes import load_recipe\n"
              "t = Tracker(tracking_uri=sys.argv[1])\nt.start(load_recipe('quickstart'), 'quickstart')\nt.end()\nprint('ok')\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", script, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tf_awt")
    assert len(client.search_runs([experiment.experiment_id])) == 4
