"""tf-awt end to end: recipes, CLI phases, atomic outputs, MLflow server tracking, serving."""
import contextlib
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tf_keras
import yaml

import tf_awt
from tf_awt.running import cli
from tf_awt.running.recipes import bundled_recipes, load_recipe

from conftest import bad_data, BAD_DATA, digits_recipe, NO_TRAINING, tf_awt_cli, tf_awt_main, tiny_npz, tiny_recipe

L = tf_keras.layers
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_bundled_recipe_loads():
    names = bundled_recipes()
    assert set(names) >= {"quickstart", "mnist-mlp", "mnist-cnn", "cifar10-cnn", "cifar100-cnn", "cifar10-vgg16", "toy-gaussian"}
    for name in names:
        recipe = load_recipe(name)
        assert recipe.search.density == recipe.density
        assert all(names[name] for name in names)  # one line each
    vgg = load_recipe("cifar10-vgg16")
    assert vgg.search.options.kernel == "sketch" and vgg.search.options.probes == 4 and vgg.model == "vgg16"
    for name in ("mnist5k-cnn", "mnist-cnn", "cifar10-cnn", "cifar100-cnn"):  # docs/results.md section 8
        assert load_recipe(name).search.options.kernel == "sketch", name
    cnn = load_recipe("mnist5k-cnn").search  # section 12: K = 1 with the student's FGSM (one step of 1.25 eps)
    assert (cnn.options.probes, cnn.student_attack.steps, cnn.student_attack.effective_step_size) == (1, 1, 0.125)
    assert load_recipe("mnist5k-cnn").search.effective_attack.steps == 10  # the teacher keeps PGD-10
    before = load_recipe("mnist5k-cnn", ["search.probes=4", "search.student_steps=null"]).search  # the older tables
    assert (before.options.probes, before.student_attack) == (4, before.effective_attack)
    for name in ("mnist-cnn", "fashion-cnn", "cifar10-cnn"):  # no evidence on their data or eps yet: K = 4, PGD-10
        assert (load_recipe(name).search.options.probes, load_recipe(name).search.options.student_steps) == (4, None), name
    for name in ("mnist5k-cnn", "mnist-cnn", "cifar10-cnn", "cifar100-cnn", "cifar10-vgg16", "fashion-cnn"):
        # the cheaper preset: Square on a stated subset, every other attack on every example
        recipe = load_recipe(name)
        assert recipe.eval.square_examples in (200, 1000) and recipe.eval.max_examples is None, name
        assert recipe.eval.attacks == ("pgd", "autoattack"), name
    for name in ("quickstart", "mnist5k-mlp", "mnist-mlp", "fashion-mlp"):  # the MLPs: the full standard set
        assert load_recipe(name).eval.square_examples is None, name
    toy = load_recipe("toy-gaussian")
    assert toy.attack.norm == "l2" and toy.attack.eps == 2.0 and toy.density == 0.1


def test_recipe_overrides_and_errors():
    recipe = load_recipe("quickstart", ["attack.eps=0.2", "density=0.1", "search.kernel=diagonal"])
    assert recipe.attack.eps == 0.2 and recipe.density == 0.1 and recipe.search.options.kernel == "diagonal"
    with pytest.raises(ValueError, match=r"unknown key 'attack.epz' \(did you mean 'attack.eps'\?\).*Allowed keys under attack"):
        load_recipe("quickstart", ["attack.epz=0.1"])
    with pytest.raises(ValueError, match=r"unknown key 'densty' \(did you mean 'density'\?\)"):
        load_recipe("quickstart", ["densty=0.1"])
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]. You passed: 2"):
        load_recipe("quickstart", ["density=2"])
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'.*quickstart"):
        load_recipe("nope")
    with pytest.raises(ValueError, match=r"train.epochs must be a int. You passed: 'many'"):
        load_recipe("quickstart", ["train.epochs=many"])
    assert load_recipe("quickstart").eval.attacks == ("pgd", "autoattack")  # the worst case by default
    assert load_recipe("quickstart", ["eval.attacks=[pgd]"]).eval.attacks == ("pgd",)
    assert load_recipe("quickstart", ["eval.attacks=pgd,apgd-t"]).eval.attacks == ("pgd", "apgd-t")
    with pytest.raises(ValueError, match=r"attacks must name \['autoattack'\] or .*You passed: 'fgsm'"):
        load_recipe("quickstart", ["eval.attacks=[pgd, fgsm]"])
    with pytest.raises(ValueError, match=r"unknown key 'eval.autoattack' \(did you mean 'eval.attacks'\?\)"):
        load_recipe("quickstart", ["eval.autoattack=true"])


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    for args, needle in (
        (["run", "--set", "attack.epz=0.1", "--out", str(tmp_path / "o")], "unknown key 'attack.epz' (did you mean 'attack.eps'?)"),
        (["run", "nope", "--out", str(tmp_path / "o")], "unknown recipe 'nope'"),
        (["train", "--out", str(tmp_path / "empty")], "run the 'search' phase first"),
        (["evaluate", "--model", str(tmp_path / "missing"), "--dataset", "mnist-5k"], "is not a SavedModel directory"),
    ):
        proc = tf_awt_main(capsys, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [l for l in proc.stderr.splitlines() if l.startswith("tf-awt")]
        assert len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    debug = tf_awt_main(capsys, "--debug", "run", "nope", "--out", str(tmp_path / "o"))
    assert "Traceback" in debug.stderr
    # The console module itself (``python -m tf_awt.running.cli``): exit status 2, one line, no traceback.
    proc = tf_awt_cli("run", "nope", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("tf-awt")]
    assert len(lines) == 1 and "unknown recipe 'nope'" in lines[0], proc.stderr


def test_a_bad_recipe_is_refused_before_tensorflow_loads(tmp_path):
    # Recipes are checked by the library's own config classes (SearchConfig, Attack, TrainingSchedule),
    # which load without TensorFlow: a one-line error takes a tenth of a second, not a TensorFlow start.
    script = ("import sys\nfrom tf_awt.running.cli import main\nfrom tf_awt.running.recipes import load_recipe\n"
              "recipe = load_recipe('quickstart')\nrecipe.search; recipe.train.schedule(5); recipe.eval_attack()\n"
              "code = main(['run', '--set', 'attack.epz=1', '--out', sys.argv[1]])\n"
              "print(code, 'tensorflow' in sys.modules, 'tf_keras' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    assert "unknown key 'attack.epz'" in proc.stderr and not (tmp_path / "o").exists()


def test_evaluate_mistakes_are_answered_before_tensorflow_loads(tmp_path):
    """`tf-awt evaluate --model` checks its arguments, the model directory and the data (ε against its
    range) first: each mistake is one line, with TensorFlow never imported."""
    model = tmp_path / "saved_model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"")  # only its presence is checked before TensorFlow loads
    data = str(tmp_path / "tiny.npz")
    np.savez(data, x=np.zeros((4, 8, 8, 1), np.float32), y=np.arange(4))
    cases = [(["--model", str(model), "--data", data, "--eps", "3"], "--eps must be in [0, 1] for an L∞ attack"),
             (["--model", str(tmp_path), "--data", data], "is not a SavedModel directory (no saved_model.pb in it)"),
             (["--model", str(model)], "needs exactly one of --dataset NAME or --data FILE.npz"),
             (["--model", str(model), "--data", data, "--attacks", "pgd,nope"], "--attacks"),
             (["--model", str(model), "--data", str(tmp_path / "missing.npz")], "missing.npz")]
    script = ("import json, sys\nfrom tf_awt.running.cli import main\n"
              "code = main(['evaluate'] + json.loads(sys.argv[1]))\n"
              "print(code, 'tensorflow' in sys.modules, 'tf_keras' in sys.modules)\n")
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True, timeout=120)
        assert proc.stdout.split() == ["2", "False", "False"], (argv, proc.stdout + proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("tf-awt: error")]
        assert len(errors) == 1 and message in errors[0], (argv, proc.stderr)


def test_sweep_and_compare_refuse_what_every_cell_would_refuse_before_writing_anything(tmp_path):
    """compare's argument errors come before TensorFlow loads (its module does not import it), and an
    ε beyond the data's range is refused by sweep and compare at once, as `tf-awt run` refuses it,
    with no directory left (it used to fail cell by cell, after writing the grid's state)."""
    script = ("import sys\nfrom tf_awt.running.cli import main\n"
              "code = main(['compare', '--methods', 'awt,nope', '--out', sys.argv[1] + '/c'])\n"
              "print(code, 'tensorflow' in sys.modules, 'tf_keras' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    for command in (["sweep", "--densities", "0.05", "--methods", "awt"], ["compare", "--methods", "awt,dense", "--tries", "1"]):
        out = tmp_path / command[0]
        proc = tf_awt_cli(command[0], tiny_recipe(tmp_path), *command[1:], "--set", "attack.eps=3", "--out", str(out),
                          "--no-mlflow", "--quiet")
        assert proc.returncode == 2 and not out.exists(), proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == ("tf-awt: error: attack.eps must be in [0, 1] for an L∞ attack on "
                                                       "data in [0, 1] (tiny.npz). You passed: 3")


def test_recipes_command_lists_recipes():
    proc = tf_awt_cli("recipes")
    assert proc.returncode == 0
    assert "quickstart" in proc.stdout and "toy-gaussian" in proc.stdout


def test_phases_one_by_one_then_evaluate_any_saved_model(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    out = str(tmp_path / "run")
    done = []
    for phase in ("search", "train", "evaluate", "export"):
        proc = tf_awt_main(capsys, phase, recipe, "--out", out, "--quiet")
        assert proc.returncode == 0, proc.stderr[-2000:]
        done.append(phase)  # each phase's cost is kept beside the earlier ones' (a cost table reads run.json)
        state = json.load(open(os.path.join(out, "run.json")))
        assert set(state["phase_seconds"]) == set(state["phase_cpu_seconds"]) == set(state["phase_passes"]) == set(done), state
        assert all(v > 0 for v in state["phase_seconds"].values())
    # the passes each phase made, as worked out by hand: training with PGD-2 on the training split and
    # its per-epoch curves on the held-out split (PGD-2, then the adversarial and natural forwards)
    split = tf_awt.data.load(str(tmp_path / "tiny.npz"))
    n, held = len(split.y_train), len(split.y_test)
    assert state["phase_passes"]["train"] == {"forward": 4 * n + 4 * held, "backward": 3 * n + 2 * held, "jacobians": 0}
    assert state["phase_passes"]["search"]["jacobians"] == 4 * n  # the exact kernels of teacher and student
    assert state["phase_passes"]["export"] == {"forward": 0, "backward": 0, "jacobians": 0}
    assert {"ticket.npz", "trained.weights.h5", "history.json", "evaluation.json", "saved_model", "recipe.yaml"} <= set(os.listdir(out))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    ticket = tf_awt.Ticket.load(os.path.join(out, "ticket.npz"))
    assert abs(ticket.density - 0.2) < 1e-3
    result_json = str(tmp_path / "eval.json")
    proc = tf_awt_main(capsys, "evaluate", "--model", os.path.join(out, "saved_model"), "--data", str(tmp_path / "tiny.npz"),
                       "--eps", "0.1", "--steps", "3", "--restarts", "1", "--json", result_json)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    saved = json.load(open(result_json))
    assert 0 <= saved["robust_accuracy"] <= saved["natural_accuracy"] <= 1
    assert printed["natural_accuracy"] == saved["natural_accuracy"]


def test_interrupted_run_leaves_no_complete_looking_output(tmp_path):
    from tf_awt.running.pipeline import Run

    recipe = load_recipe(tiny_recipe(tmp_path))
    out = str(tmp_path / "run")

    def boom(phase, steps):
        if phase == "train":
            raise KeyboardInterrupt
        return cli._Progress(True)(phase, steps)

    with pytest.raises(KeyboardInterrupt):
        Run(recipe, out, progress=boom, log=lambda m: None).all()
    present = set(os.listdir(out))
    assert "ticket.npz" in present  # the finished phase is kept
    assert not present & {"summary.json", "saved_model", "trained.weights.h5"}
    assert not [f for f in present if f.startswith(".tmp")]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, proc, timeout=120):
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()[-2000:] if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(uri + "/health", proc)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def tracked_run(mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    # learnable digits (a collapsed run is never registered); the recipe's default export: SavedModel and model.tflite
    recipe = digits_recipe(tmp, epochs=3, export={})
    out = str(tmp / "run")
    with pytest.MonkeyPatch.context() as env:  # `MLFLOW_TRACKING_URI=... tf-awt run`, in this process
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        printed, said = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(said):  # not --quiet: the closing block
            assert cli.main(["run", recipe, "--out", out]) == 0
    (tmp / "printed.txt").write_text(printed.getvalue())
    (tmp / "said.txt").write_text(said.getvalue())
    return out, json.load(open(os.path.join(out, "summary.json"))), tmp


@pytest.mark.xdist_group("mlflow_server")
def test_run_ends_with_the_run_page_and_the_serve_command(mlflow_server, tracked_run):
    import mlflow

    _, summary, tmp = tracked_run
    printed = (tmp / "printed.txt").read_text()
    experiment = mlflow.tracking.MlflowClient(tracking_uri=mlflow_server).get_run(summary["mlflow_run_id"]).info.experiment_id
    page = f"#/experiments/{experiment}/runs/{summary['mlflow_run_id']}?workflowType=machine_learning"
    assert f"mlflow ui                      # from this directory, then open http://127.0.0.1:5000/{page}" in printed
    assert f"mlflow models serve -m {summary['registered_model']} --env-manager local" in printed
    assert summary["registered_model"].startswith("models:/tf_awt-tiny/")
    assert f"registered as {summary['registered_model']}" in printed  # said once, by tf-awt, not by MLflow on stderr
    said = (tmp / "said.txt").read_text()
    assert "Created version" not in said and "Successfully registered" not in said, said[-2000:]
    again = io.StringIO()  # a rerun on the finished directory keeps it, and still links the run's page
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(again):
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        assert cli.main(["run", str(tmp / "tiny.yaml"), "--out", os.path.join(str(tmp), "run")]) == 0
    assert f"then open http://127.0.0.1:5000/{page}" in again.getvalue(), again.getvalue()


@pytest.mark.xdist_group("mlflow_server")
def test_run_records_everything_in_mlflow_server(mlflow_server, tracked_run):
    import mlflow

    out, summary, _ = tracked_run
    for key in ("natural_accuracy", "robust_accuracy", "density", "layer_density", "method", "recipe", "seed",
                "phase_seconds", "mlflow_run_id", "model_uri", "model_size"):
        assert key in summary, key
    assert summary["model_size"]["sparse_gzip_bytes"] < summary["model_size"]["dense_gzip_bytes"]
    assert {"distances.png", "accuracy.png", "density.png"} <= set(os.listdir(out))
    client = mlflow.tracking.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.params["attack.eps"] == "0.1" and run.data.params["density"] == "0.2"
    assert np.isclose(run.data.metrics["robust_accuracy"], summary["robust_accuracy"])
    history = client.get_metric_history(run.info.run_id, "search_kernel_distance")
    assert len(history) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"ticket.npz", "summary.json", "recipe.yaml", "distances.png", "model.tflite"} <= artifacts
    assert summary["model_uri"].startswith("models:/")
    logged = client.get_logged_model(summary["model_uri"].rsplit("/", 1)[-1])
    path = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location + "/requirements.txt",
                                               tracking_uri=mlflow_server, dst_path=str(tracked_run[2] / "requirements"))
    requirements = open(path).read().split()
    import tensorflow as tf  # pinned by tf_awt (not inferred by MLflow in a subprocess)

    assert f"tensorflow=={tf.__version__}" in requirements and any(r.startswith("mlflow==") for r in requirements)
    # the model registry: a version of tf_awt-<recipe>, the run's description and its training data
    assert summary["registered_model"] == "models:/tf_awt-tiny/1"
    version = client.get_model_version("tf_awt-tiny", "1")
    assert version.run_id == run.info.run_id
    # the version says what it is, and the logged model carries the trained model's last-epoch metrics
    assert f"robust accuracy {summary['robust_accuracy']:.4f}" in version.description
    # every tag on the version page, which shows five (tracking._version_tags)
    assert version.tags == {"method": "awt", "density": f"{summary['density']:.4f}", "attack": "linf ε = 0.1",
                            "recipe": str(tracked_run[2] / "tiny.yaml"), "robust_accuracy": f"{summary['robust_accuracy']:.4f} ({summary['robust_accuracy_attacks']})"}
    model_metrics = {m.key: m for m in logged.metrics}
    final = client.get_metric_history(run.info.run_id, "train_adv_accuracy")[-1]
    assert model_metrics["train_adv_accuracy"].value == final.value and model_metrics["train_adv_accuracy"].step == final.step
    # final numbers only: no search step that shares the last epoch's number, the evaluation's accuracies
    assert not [k for k in model_metrics if k.startswith("search_")], sorted(model_metrics)
    assert np.isclose(model_metrics["robust_accuracy"].value, summary["robust_accuracy"])
    assert {k for k in model_metrics if k.startswith("train_")} == {f"train_{k}" for k in json.load(open(os.path.join(out, "history.json")))}
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("tiny test recipe") and f"robust accuracy {summary['robust_accuracy']:.4f}" in note
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].tags[0].value == "training"
    assert json.loads(inputs[0].dataset.profile)["features_shape"][0] == 400  # the training split


@pytest.mark.xdist_group("mlflow_server")
def test_the_worst_case_its_attacks_and_each_suite_reach_mlflow_over_rest(mlflow_server, tracked_run):
    """What a client of the tracking server reads (the REST API, not the Python client): the run's
    metrics and tags and the model version's description and tags name the worst case and its
    attacks, and give each suite's figure, equal to summary.json and the console."""
    import urllib.parse
    import urllib.request

    _, summary, tmp = tracked_run

    def get(path, **query):
        with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}") as reply:
            return json.load(reply)

    label = "worst case of PGD-3 ×1, APGD-CE-5, APGD-T-5 ×9 targets, FAB-T-5 ×9 targets, Square-50"
    order = ["pgd", "apgd-ce", "apgd-t", "fab-t", "square"]  # as they ran (summary.json's keys are sorted)
    assert summary["robust_accuracy_attacks"] == label and set(summary["suites"]) == set(order)
    assert summary["robust_accuracy"] == summary["suites"]["square"] <= summary["suites"]["pgd"]
    assert set(summary["evaluation_seconds"]) == {"pgd", "apgd-ce", "apgd-t", "fab-t", "square", "checks"}
    run = get("runs/get", run_id=summary["mlflow_run_id"])["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    for name, value in summary["suites"].items():
        assert np.isclose(metrics[f"robust_accuracy_after_{name.replace('-', '_')}"], value), name
    assert np.isclose(metrics["robust_accuracy"], summary["robust_accuracy"])
    assert tags["robust_accuracy_attacks"] == label
    assert tags["sanity_warnings"] == (" | ".join(summary["sanity_warnings"]) or "none")
    version = get("model-versions/get", name="tf_awt-tiny", version="1")["model_version"]
    version_tags = {t["key"]: t["value"] for t in version["tags"]}
    assert version_tags["robust_accuracy"] == f"{summary['robust_accuracy']:.4f} ({label})" and len(version_tags) <= 5
    assert f"robust accuracy {summary['robust_accuracy']:.4f} ({label}, test split)" in version["description"]
    assert "robust accuracy after each attack: " + ", ".join(f"{k} {summary['suites'][k]:.4f}" for k in order) \
        in version["description"]
    printed = (tmp / "printed.txt").read_text()  # the console's closing block
    assert f"robust accuracy = {label}" in printed and f"after square {summary['suites']['square']:.4f}" in printed


def test_unreachable_tracking_server_is_a_clear_error(tmp_path, capsys, monkeypatch):
    start = time.time()
    proc = tf_awt_main(capsys, "run", tiny_recipe(tmp_path), "--out", str(tmp_path / "o"),
                       env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}"}, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert "unreachable" in proc.stderr and time.time() - start < 90


@pytest.mark.xdist_group("mlflow_server")
def test_served_model_answers_like_the_in_process_model(mlflow_server, tracked_run):
    import tensorflow as tf

    out, summary, tmp = tracked_run
    cli_path = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli_path, "show", "--dir", os.path.join(out, "saved_model"), "--tag_set", "serve",
                            "--signature_def", "serving_default"], capture_output=True, text=True)
    assert "inputs['images']" in shown.stdout and "outputs['logits']" in shown.stdout
    x = np.load(str(tmp / "digits.npz"))["x"][:4]
    np.save(str(tmp / "x.npy"), x)
    expected = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    from tf_awt.tickets.export import tflite_predict  # the sparse TFLite file answers like the SavedModel, at any batch size

    for batch in (1, 4):
        np.testing.assert_allclose(tflite_predict(os.path.join(out, "model.tflite"), x[:batch]), expected[:batch], atol=1e-5)
    assert summary["model_size"]["tflite_bytes"] == os.path.getsize(os.path.join(out, "model.tflite"))
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tf_awt-tiny/latest", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        client = [sys.executable, os.path.join(ROOT, "serving", "client.py"), "--url", f"http://127.0.0.1:{port}/invocations",
                  "--npy", str(tmp / "x.npy")]
        labels = subprocess.run(client, capture_output=True, text=True, timeout=60)  # what a person reads
        assert labels.returncode == 0, labels.stderr
        assert [line.split()[2] for line in labels.stdout.splitlines()] == [str(int(c)) for c in expected.argmax(axis=1)]
        proc = subprocess.run(client + ["--json"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = np.asarray(json.loads(proc.stdout)["predictions"])
        if got.ndim == 1 or isinstance(json.loads(proc.stdout)["predictions"][0], dict):
            got = np.asarray([list(p.values())[0] for p in json.loads(proc.stdout)["predictions"]])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_tfds_without_network_names_where_it_looked_and_the_offline_choices(tmp_path, monkeypatch):
    from tf_awt import data

    with pytest.raises(ValueError, match=r"mnist-5k.*--data-dir|--data-dir.*mnist-5k"):
        data.load("mnist", data_dir=str(tmp_path / "tfds"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env-dir"))  # tfds' own variable: named in the message
    monkeypatch.setattr(data, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(ValueError, match=r"not prepared in .*env-dir.*`tfds build mnist --data_dir DIR`"):
        data.load("mnist")


def test_tfds_data_is_read_through_tensorflow_datasets(monkeypatch):
    import tensorflow_datasets as tfds

    from tf_awt import data

    with tfds.testing.mock_data(num_examples=12):  # tfds' mock data: no files, no network
        split = data.load("mnist")
    assert split.x_train.shape == (12, 28, 28, 1) and split.x_test.shape == (12, 28, 28, 1)
    assert split.x_train.dtype == np.float32 and 0 <= split.x_train.min() and split.x_train.max() <= 1
    assert split.num_classes == 10 and split.y_train.dtype == np.int64


@pytest.mark.parametrize("error,message", [
    # Seen for real: tfds' download code imports importlib_resources, which tfds does not declare;
    # the error used to be reported as a network problem.
    (ModuleNotFoundError("No module named 'importlib_resources'"),
     r"cannot prepare 'mnist': No module named 'importlib_resources'\. Install"),
    (RuntimeError("checksum mismatch"), r"could not download and prepare 'mnist' .*RuntimeError: checksum mismatch\)$"),
])
def test_tfds_failures_keep_their_own_cause(monkeypatch, error, message):
    import tensorflow_datasets as tfds

    from tf_awt import data

    def load(*args, download=True, **kwargs):
        if not download:
            raise AssertionError("Dataset mnist: could not find data in /nowhere.")
        raise error

    monkeypatch.setattr(tfds, "load", load)
    monkeypatch.setattr(data, "_reachable", lambda host, timeout=3.0: True)  # the network answers
    with pytest.raises(ValueError, match=message) as info:
        data.load("mnist")
    assert "network" not in str(info.value)


def test_mnist_5k_split_is_fixed_and_real():
    from tf_awt import data

    a, b = data.load("mnist-5k"), data.load("mnist-5k")
    assert a.x_train.shape == (4000, 28, 28, 1) and a.x_test.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert np.bincount(a.y_test).tolist() == [100] * 10
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_toy_gaussian_recipe_attacks_without_clipping(tmp_path, capsys):
    out = str(tmp_path / "toy")
    proc = tf_awt_main(capsys, "run", "toy-gaussian", "--set", "search.epochs=1", "--set", "train.epochs=2", "--set", "eval.steps=10",
                      "--set", "eval.restarts=1", "--out", out, "--quiet", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["sanity_warnings"] == []
    assert abs(summary["density"] - 0.1) < 1e-9
    assert 0 <= summary["robust_accuracy"] <= summary["natural_accuracy"]
    evaluation = json.load(open(os.path.join(out, "evaluation.json")))
    assert evaluation["attack"]["clip_min"] is None and evaluation["attack"]["clip_max"] is None
    # The recipe optimizes the mask itself: its ticket keeps the one informative coordinate (x_0).
    ticket = tf_awt.Ticket.load(os.path.join(out, "ticket.npz"))
    assert ticket.config["options"]["optimize"] == "scores" and ticket.masks["logits"][0].sum() >= 1


def test_unbounded_attack_leaves_the_unit_box():
    import tensorflow as tf

    x = np.zeros((4, 3), np.float32) - 5.0
    model = lambda z: tf.concat([z[:, :1], -z[:, :1]], axis=1)  # noqa: E731
    attack = tf_awt.Attack(norm="l2", eps=1.0, steps=3, step_size=0.5, clip_min=None, clip_max=None)
    adv = tf_awt.pgd(model, x, np.zeros(4, np.int64), attack).numpy()
    assert adv.min() < -5.0 + 1e-3 and np.all(np.linalg.norm(adv - x, axis=1) <= 1.0 + 1e-5)


# --------------------------------------------------------------------------- flags through the entry point
def test_run_register_as_no_register_and_force(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    recipe = digits_recipe(tmp_path, epochs=3, method="magnitude")  # learnable: a collapsed run is never registered
    out = str(tmp_path / "run")
    capsys.readouterr()
    assert cli.main(["run", recipe, "--out", out, "--register-as", "my-ticket"]) == 0  # no --quiet: stderr is no terminal
    err = capsys.readouterr().err
    assert "train epoch 1: loss" in err and "\r" not in err  # log lines, not a redrawn bar, in a file
    train_line = next(line for line in err.splitlines() if line.startswith("train: "))
    assert "{" not in train_line and "adv_accuracy" in train_line
    first = json.load(open(os.path.join(out, "summary.json")))
    client = mlflow.tracking.MlflowClient(uri)
    assert client.get_run(first["mlflow_run_id"]).info.run_name == "{}-magnitude-d0.2-s0-run".format(recipe)
    assert first["registered_model"] == "models:/my-ticket/1"
    assert client.get_model_version("my-ticket", "1").run_id == first["mlflow_run_id"]
    metrics = client.get_run(first["mlflow_run_id"]).data.metrics  # each phase's cost, in seconds and in passes
    assert metrics["train_forward_passes"] == first["phase_passes"]["train"]["forward"] > 0
    assert metrics["search_seconds"] == first["phase_seconds"]["search"]
    # an existing finished run is kept unless --force; --force starts over (a new MLflow run)
    assert cli.main(["run", recipe, "--out", out, "--quiet", "--no-register"]) == 0
    assert json.load(open(os.path.join(out, "summary.json")))["mlflow_run_id"] == first["mlflow_run_id"]
    assert cli.main(["run", recipe, "--out", out, "--quiet", "--no-register", "--force"]) == 0
    forced = json.load(open(os.path.join(out, "summary.json")))
    assert forced["mlflow_run_id"] != first["mlflow_run_id"] and forced["registered_model"] is None
    assert [str(v.version) for v in client.search_model_versions("name='my-ticket'")] == ["1"]  # --no-register added none
    assert not client.search_registered_models(filter_string="name='tf_awt-tiny'")


def test_sweep_command_runs_a_tiny_grid(tmp_path, capsys):
    out = tmp_path / "sw"
    assert cli.main(["sweep", tiny_recipe(tmp_path, train=NO_TRAINING), "--densities", "0.3", "--methods", "random,dense", "--seeds", "1",
                     "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    assert {"sweep.csv", "sweep.md", "accuracy_vs_density.png"} <= set(os.listdir(out))
    table = (out / "sweep.md").read_text()
    assert "| random | 0.3 | 1 |" in table and "| dense | 1 | 1 |" in table
    assert "| search + training (s, mean) |" in table
    assert "| random | 0.3 | 1 |" in capsys.readouterr().out
    import csv

    rows = list(csv.DictReader(open(out / "sweep.csv")))
    summary = json.load(open(out / "cells" / "random-d0.3-s0" / "summary.json"))
    assert set(summary["phase_cpu_seconds"]) == {"search", "train", "evaluate", "export"}  # each phase's CPU time
    row = next(r for r in rows if r["cell"] == "random-d0.3-s0")
    assert float(row["cpu_seconds"]) == round(sum(summary["phase_cpu_seconds"].values()), 1) > 0
    assert float(row["evaluate_seconds"]) == round(summary["phase_seconds"]["evaluate"], 1)
    assert set(summary["phase_passes"]) == {"search", "train", "evaluate", "export"}
    assert int(row["passes"]) == sum(p["forward"] + p["backward"] for p in (summary["phase_passes"][k] for k in ("search", "train")))
    assert summary["phase_passes"]["evaluate"]["forward"] > 0 and "search + training (passes, mean) |" in table
    assert cli.main(["sweep", tiny_recipe(tmp_path), "--densities", "0.3", "--methods", "grasp", "--out", str(out),
                     "--quiet", "--no-mlflow"]) == 2


def test_evaluate_reports_the_worst_case_of_pgd_and_the_standard_autoattack_through_the_cli(tmp_path, capsys):
    import tf_awt

    from conftest import tiny_data, trained_model

    x, y = tiny_data(40, seed=4)
    np.savez(tmp_path / "d.npz", x=x[:20], y=y[:20], x_test=x[20:], y_test=y[20:])
    tf_awt.export_saved_model(trained_model(), str(tmp_path / "m"))
    target = tmp_path / "aa.json"
    assert cli.main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d.npz"), "--square-queries", "50",
                     "--eps", "0.1", "--steps", "5", "--restarts", "1", "--max-examples", "8", "--json", str(target),
                     "--quiet"]) == 0
    result = json.loads(target.read_text())
    # the JSON file's keys are sorted; the order the suites ran in is the label's
    assert set(result["suites"]) == {"pgd", "apgd-ce", "apgd-t", "fab-t", "square"} and result["num_examples"] == 8
    assert result["robust_accuracy"] == result["suites"]["square"] == min(result["suites"].values())
    err = capsys.readouterr().err
    assert "worst case of PGD-5 ×1, APGD-CE-100, APGD-T-100 ×2 targets, FAB-T-100 ×2 targets, Square-50" in err  # three classes
    assert cli.main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d.npz"), "--attacks", "pgd",
                     "--eps", "0.1", "--steps", "5", "--restarts", "1", "--max-examples", "8", "--quiet"]) == 0
    assert "PGD-only (PGD-5 ×1)" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d.npz"), "--attacks", "pgd,fgsm",
                     "--quiet"]) == 2
    assert "You passed: 'fgsm'" in capsys.readouterr().err


def test_evaluate_defaults_to_the_runs_own_attack_and_says_which(tmp_path, capsys):
    """`tf-awt evaluate --model <run>/saved_model` attacks at the run's recipe ε and norm (not 0.3),
    says so in a human line and in the JSON; an ε beyond the data range is refused."""
    recipe = tiny_recipe(tmp_path, method="magnitude", train=NO_TRAINING)
    out = tmp_path / "run"
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    data = yaml.safe_load(open(recipe))["dataset"]
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(out / "saved_model"), "--data", data, "--steps", "3", "--restarts", "1",
                     "--max-examples", "16", "--attacks", "pgd", "--quiet"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["attack"] == {"norm": "linf", "eps": 0.1, "steps": 3, "restarts": 1, "attacks": ["pgd"],
                                "robust_accuracy_attacks": "PGD-only (PGD-3 ×1)"}
    assert "linf ε = 0.1" in captured.err and str(out / "recipe.yaml") in captured.err
    assert cli.main(["evaluate", "--model", str(out / "saved_model"), "--data", data, "--eps", "3", "--quiet"]) == 2
    assert "--eps must be in [0, 1] for an L∞ attack on data in [0, 1]. You passed: 3" in capsys.readouterr().err


def _write_bad_npz(tmp_path, case):
    x, y = bad_data(case)
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
    recipe = tiny_recipe(tmp_path, export={"tflite": False})  # the plots too
    out = tmp_path / "run"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a new store: MLflow would log its table creation at INFO
    proc = subprocess.run([sys.executable, "-m", "tf_awt.running.cli", "run", recipe, "--out", str(out), "--quiet", "--no-register"],
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
    # --verbose: TensorFlow's own lines are back (they come with its import, before the one-line error
    # about a SavedModel that TensorFlow cannot read: an empty saved_model.pb).
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"")
    loud = tf_awt_cli("--verbose", "evaluate", "--model", str(tmp_path / "broken"), "--dataset", "mnist-5k",
                      env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 2 and "is not a readable SavedModel" in loud.stderr, loud.stderr[-2000:]
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
        assert proc.stderr.strip().endswith("Wait for it to finish, or use another --out directory.")
        assert sorted(os.listdir(out)) == [".tf-awt.lock"]  # nothing written beside the owner's lock
        # ... and refused at once: before TensorFlow's import (≈ 12 s), in a fresh process
        code = ("import sys; from tf_awt.running import cli; "
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
    recipe = tiny_recipe(tmp_path, train=NO_TRAINING, export={"tflite": False})  # plots on (the default)
    out = tmp_path / "run"
    proc = tf_awt_main(capsys, "run", recipe, "--out", str(out), "--no-mlflow")
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    text = proc.stdout
    assert f"natural {summary['natural_accuracy']:.4f}, robust {summary['robust_accuracy']:.4f} at linf eps 0.1 (chance 0.333)" in text
    assert os.path.join(str(out), "density.png") in text
    assert f"tf-awt evaluate --model {os.path.join(str(out), 'saved_model')} --dataset {tmp_path / 'tiny.npz'}" in text
    assert "mlflow ui" not in text  # no MLflow run: no MLflow commands
    quiet = tf_awt_main(capsys, "run", tiny_recipe(tmp_path, train=NO_TRAINING), "--out", str(tmp_path / "quiet"),
                        "--no-mlflow", "--quiet")  # export.plots: false
    assert "next:" not in quiet.stdout and len(quiet.stdout.strip().splitlines()) == 1
    assert not [f for f in os.listdir(tmp_path / "quiet") if f.endswith(".png")]


def test_the_printed_evaluate_command_repeats_the_runs_evaluation_and_says_how_long_it_took(tmp_path, capsys):
    """The next: block's `tf-awt evaluate` carries the recipe's own suites and budgets: run as printed,
    it gives the run's numbers, and the block says how long the run's evaluation took."""
    import shlex

    recipe = tiny_recipe(tmp_path, eval={"steps": 3, "restarts": 1, "square_queries": 50}, export={"tflite": False, "plots": False})
    out = tmp_path / "run"
    proc = tf_awt_main(capsys, "run", recipe, "--out", str(out), "--no-mlflow")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("tf-awt evaluate"))
    command, _, comment = line.strip().partition("  # ")
    assert comment == f"the run's evaluation again: {summary['phase_seconds']['evaluate']:.0f} s here", line
    again = tf_awt_main(capsys, *shlex.split(command)[1:], "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    printed = json.loads(again.stdout.strip().splitlines()[-1])
    assert (printed["natural_accuracy"], printed["robust_accuracy"], printed["suites"]) == \
        (summary["natural_accuracy"], summary["robust_accuracy"], summary["suites"])
    lighter = tf_awt_main(capsys, "run", tiny_recipe(tmp_path, train=NO_TRAINING), "--out", str(tmp_path / "light"), "--no-mlflow")
    line = next(l for l in lighter.stdout.splitlines() if l.strip().startswith("tf-awt evaluate"))
    assert "# the run's evaluation again" not in line  # apgd_iterations 5 has no flag: another evaluation, no claim


def test_two_runs_started_at_once_on_one_directory(tmp_path):
    recipe = tiny_recipe(tmp_path, train={"epochs": 3, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "run")
    args = [sys.executable, "-m", "tf_awt.running.cli", "run", recipe, "--out", out, "--quiet", "--no-mlflow"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "is in use by another tf-awt process" in outcomes[1][1]
    assert json.load(open(os.path.join(out, "summary.json")))["density"] > 0


def test_a_ticket_with_the_fair_runs_masked_allocation_prints_its_worst_case_and_pgd_only_warns(tmp_path, capsys):
    """The fair run's failure (docs/results.md section 7), at test size: the 1.8% allocation with
    the first layer at the collapse guard's floor (0.13% / 13% / 51%), trained at ε = 0.3 with an ε
    warm-up, on 1,000 real digits. PGD overestimates it; `tf-awt run` prints the worst case, which
    agrees with ART's AutoAttack on the same digits within noise, and warns; a PGD-only
    `tf-awt evaluate` of the same model warns that it overestimates."""
    split = tf_awt.data.load("mnist-5k")
    path = str(tmp_path / "digits.npz")
    np.savez(path, x=split.x_train[:1000], y=split.y_train[:1000], x_test=split.x_test[:200], y_test=split.y_test[:200])
    recipe = tiny_recipe(tmp_path, dataset=path, method="magnitude", density=0.018,
                         search={"layer_densities": [0.0013, 0.13, 0.51]},
                         attack={"norm": "linf", "eps": 0.3, "steps": 10, "step_size": 0.075},
                         train={"epochs": 30, "batch_size": 64, "steps": 10, "step_size": 0.075, "eps_warmup_epochs": 3},
                         eval={"steps": 20, "restarts": 1, "apgd_iterations": 20, "fab_iterations": 20, "square_queries": 300})
    out = tmp_path / "run"
    proc = tf_awt_main(capsys, "run", recipe, "--out", out, "--no-mlflow")  # not --quiet: the closing block
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    label = "worst case of PGD-20 ×1, APGD-CE-20, APGD-T-20 ×9 targets, FAB-T-20 ×9 targets, Square-300"
    assert summary["robust_accuracy_attacks"] == label and summary["layer_density"]["dense_0"] < 0.002
    n, pgd_only, worst = 200, summary["suites"]["pgd"], summary["robust_accuracy"]
    noise = 2 * np.sqrt(max(worst * (1 - worst), 1 / n) / n)
    assert pgd_only - worst > noise, summary["suites"]  # the masking is there: PGD alone overestimates
    assert any("gradient masking" in w or "overestimates" in w for w in summary["sanity_warnings"]), summary["sanity_warnings"]
    text = proc.stdout + proc.stderr
    assert f"robust accuracy = {label}" in text and "warning: " in text
    art = tmp_path / "art.json"  # ART's AutoAttack, the independent implementation, on the same 200 digits
    test_digits = str(tmp_path / "test.npz")  # evaluate --data attacks every example of the file
    np.savez(test_digits, x=split.x_test[:200], y=split.y_test[:200])
    # in a process of its own: ART's AutoAttack leaves pytest's captured streams closed
    done = tf_awt_cli("evaluate", "--model", str(out / "saved_model"), "--data", test_digits, "--attacks", "art-autoattack",
                      "--json", str(art), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    art_result = json.loads(art.read_text())
    art_robust = art_result["robust_accuracy"]
    assert art_result["num_examples"] == n
    assert abs(worst - art_robust) <= 2 * np.sqrt(max(art_robust * (1 - art_robust), 1 / n) / n) + noise, (worst, art_robust)
    assert cli.main(["evaluate", "--model", str(out / "saved_model"), "--data", test_digits, "--attacks", "pgd", "--steps", "20",
                     "--restarts", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "PGD-only (PGD-20 ×1)" in err and "the reported robust accuracy (PGD only) overestimates robustness" in err


def test_run_refuses_an_eps_beyond_the_data_range_before_writing_anything(tmp_path, capsys):
    """What `tf-awt evaluate` refuses, `tf-awt run` refuses too: no training, no registered model."""
    out = tmp_path / "never"
    proc = tf_awt_main(capsys, "run", tiny_recipe(tmp_path), "--out", out, "--no-mlflow", "--set", "attack.eps=3")
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip() == ("tf-awt: error: attack.eps must be in [0, 1] for an L∞ attack on data in [0, 1] "
                                   "(tiny.npz). You passed: 3")


@pytest.mark.xdist_group("mlflow_server")
def test_a_collapsed_run_is_logged_but_never_registered(mlflow_server, tmp_path):
    """Labels independent of the inputs: training is at chance. The REST API shows the run (tagged
    collapsed, its model logged) and no model version, so ``models:/NAME/latest`` cannot serve it."""
    import urllib.error
    import urllib.parse
    import urllib.request

    rng = np.random.default_rng(1)
    data = str(tmp_path / "noise.npz")
    np.savez(data, x=rng.uniform(0, 1, (160, 8, 8, 1)).astype("float32"), y=rng.integers(0, 4, 160))
    recipe = tiny_recipe(tmp_path, dataset=data, train={"epochs": 4, "batch_size": 32, "steps": 2, "step_size": 0.05,
                                                        "learning_rate": 1e-4}, export={})
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # not --quiet: the closing block is printed
        code = cli.main(["run", recipe, "--out", str(tmp_path / "run"), "--register-as", "tf_awt-collapsed"])
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert code == 0 and summary["collapsed"] is True, printed.getvalue()[-2000:]
    assert summary["registered_model"] is None and summary["model_uri"].startswith("models:/")
    assert "its model is logged on the run but not registered" in printed.getvalue()

    def get(path, **query):
        with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}") as reply:
            return json.load(reply)

    run = get("runs/get", run_id=summary["mlflow_run_id"])["run"]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["collapsed"] == "true"
    with pytest.raises(urllib.error.HTTPError) as missing:
        get("registered-models/get", name="tf_awt-collapsed")
    assert missing.value.code == 404
    versions = get("model-versions/search", filter="name='tf_awt-collapsed'")
    assert not versions.get("model_versions")


def test_training_curves_are_named_by_the_split_they_are_computed_on(tmp_path, capsys):
    """A run's per-epoch held-out curves come from the test split: history.json, the log lines and
    MLflow call them test_*, never val_* (nothing may read them as a validation split); with
    eval.split: validation they are validation_*."""
    for split, prefix in (("test", "test_"), ("validation", "validation_")):
        recipe = tiny_recipe(tmp_path, eval={"steps": 3, "restarts": 1, "attacks": "pgd", "split": split})
        out = tmp_path / split
        assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"]) == 0
        history = json.load(open(out / "history.json"))
        held_out = {k for k in history if k.startswith(prefix)}
        assert held_out == {prefix + k for k in ("loss", "adv_accuracy", "nat_loss", "nat_accuracy")}, history.keys()
        assert not [k for k in history if k.startswith("val_")]
        epoch_lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("train epoch 1:")]
        assert len(epoch_lines) == 1 and f"{prefix}nat_accuracy" in epoch_lines[0] and "val_" not in epoch_lines[0]


def test_sigterm_stops_a_run_in_one_line_releases_the_lock_and_says_how_to_resume(tmp_path):
    """A scheduler's kill during training: exit 143, one line naming what was kept and the command
    that resumes, no lock left behind, no summary; that command then resumes after the kept epochs."""
    import signal

    recipe = tiny_recipe(tmp_path, train={"epochs": 40, "batch_size": 32, "steps": 2, "step_size": 0.05})
    out = str(tmp_path / "run")
    argv = ["run", recipe, "--out", out, "--quiet", "--no-mlflow"]
    proc = subprocess.Popen([sys.executable, "-m", "tf_awt.running.cli", *argv], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the log lines, as they come
        seen.append(line)
        if line.startswith("train epoch 2:"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(120) == 143, "".join(seen) + rest
    lines = rest.strip().splitlines()
    assert lines and lines[-1].startswith(f"tf-awt: stopped (SIGTERM); kept in {out}: ticket.npz (search), "
                                          "the train checkpoint after epoch "), rest
    assert lines[-1].endswith(f"; resume with: tf-awt {' '.join(argv)}")
    assert "Traceback" not in rest and len([l for l in lines if l.startswith("tf-awt:")]) == 1
    assert not os.path.exists(os.path.join(out, ".tf-awt.lock")) and not os.path.exists(os.path.join(out, "summary.json"))
    epochs = int(lines[-1].split("after epoch ")[1].split(";")[0])
    resumed = tf_awt_cli(*argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "search: ticket.npz exists, kept" in resumed.stderr
    assert f"train: resuming after epoch {epochs} of 40" in resumed.stderr


def _on_a_terminal(argv, timeout=300):
    """``python -m tf_awt.running.cli ARGV`` with stderr on a pseudo-terminal: (exit code, what it drew)."""
    import pty
    import select

    import fcntl
    import struct
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "tf_awt.running.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=secondary, stdin=subprocess.DEVNULL)
    os.close(secondary)
    drawn, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([primary], [], [], 1)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    return proc.wait(30), drawn.decode("utf-8", "replace")


def test_every_evaluation_suite_shows_progress_a_bar_with_an_eta_on_a_terminal_lines_in_a_log(exported, tmp_path):
    """The standard AutoAttack can run for many minutes: each suite says what it attacks, as a bar with
    an ETA on a terminal, and as one line when it starts and one when it ends (no carriage returns)
    in a redirected log. Nothing of Python's warnings machinery (a source line) reaches either."""
    argv = ["evaluate", "--model", os.path.join(exported, "saved_model"), "--data", tiny_npz(str(tmp_path / "tiny.npz")),
            "--steps", "3", "--restarts", "2", "--square-queries", "20"]
    logged = tf_awt_cli(*argv)
    assert logged.returncode == 0, logged.stderr[-2000:]
    assert "\r" not in logged.stderr and "UserWarning" not in logged.stderr and "warnings.warn" not in logged.stderr
    for label in ("PGD-3 ×2", "APGD-CE-100", "APGD-T-100 ×2 targets", "Square-20"):  # three classes: two targets
        started = [l for l in logged.stderr.splitlines() if l.startswith(f"evaluate: {label} on ") and l.endswith(" ...")]
        ended = [l for l in logged.stderr.splitlines() if l.startswith(f"evaluate: {label} on ") and l.endswith(" s)")]
        assert len(started) == len(ended) == 1, (label, logged.stderr)
    code, drawn = _on_a_terminal(argv)
    assert code == 0, drawn[-2000:]
    bars = [part for part in drawn.split("\r") if part.startswith("evaluate APGD-T-100 ×2 targets on ")]
    assert bars and re.search(r"\[\d\d:\d\d<\d\d:\d\d", bars[-1]) and "example/s" in bars[-1], drawn[-2000:]


def test_a_runs_evaluation_shows_each_suite_and_its_warnings_as_one_clean_line(tmp_path, capsys, monkeypatch):
    """`tf-awt run` in a log: each attack suite's start and end, and each sanity warning as one
    `warning: evaluate sanity check: ...` line; no Python warning (with its source line) escapes.
    A registered suite that changes nothing makes the masking probe's standard attacks warn."""
    import warnings

    from tf_awt.adversarial import attack_suites

    monkeypatch.setattr(attack_suites, "_BY_NAME", dict(attack_suites._BY_NAME))  # the registration is undone

    class Nothing(attack_suites.AttackSuite):
        name, label = "nothing", "Nothing"

        def adversarial_sets(self, context):
            context.tick(len(context.x))
            yield context.x.copy()

    attack_suites.register_attack_suite("nothing", lambda config: Nothing())
    recipe = tiny_recipe(tmp_path, attack={"norm": "linf", "eps": 0.5, "steps": 2, "step_size": 0.25},
                         eval={"steps": 3, "restarts": 1, "attacks": "nothing", "apgd_iterations": 10})
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        assert cli.main(["run", recipe, "--out", str(tmp_path / "run"), "--quiet", "--no-mlflow"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [l for l in lines if l.startswith("evaluate: Nothing on ") and l.endswith(" s)")], lines
    # the masking probe (the standard suites that were not asked for) runs on the check subset: it says so too
    for label in ("APGD-CE-10", "APGD-T-10 ×2 targets", "Square-5000"):
        assert [l for l in lines if l.startswith(f"evaluate: check: {label} on ") and l.endswith(" s)")], (label, lines)
    warned = [l for l in lines if "sanity check" in l]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["sanity_warnings"] and len(warned) == len(summary["sanity_warnings"]), lines
    assert all(l.startswith("warning: evaluate sanity check: ") for l in warned), warned
    assert not [w for w in escaped if "sanity check" in str(w.message)]
