"""tf.distribute for real: MirroredStrategy over two logical CPUs, MultiWorkerMirroredStrategy over
two worker processes on localhost; each must reproduce the one-device run on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tf_awt._distribute import is_chief, strategy_for
from tf_awt.running.pipeline import Run
from tf_awt.running.recipes import load_recipe
from tf_awt.tickets.ticket import Ticket
from conftest import tf_awt_main, tiny_recipe

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_distributed_worker.py")


def _recipe(tmp_path):
    return tiny_recipe(tmp_path, search={"epochs": 2, "update_every": 2, "batch_size": 32},
                       train={"epochs": 2, "batch_size": 32, "steps": 2, "step_size": 0.05})


def _assert_same_run(one_dir, other_dir):
    a = Ticket.load(os.path.join(one_dir, "ticket.npz"))
    b = Ticket.load(os.path.join(other_dir, "ticket.npz"))
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    for key in ("loss", "target_distance", "kernel_distance"):
        np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-5, err_msg=key)
    for x, y in zip(a.learned_weights, b.learned_weights):
        np.testing.assert_allclose(y, x, atol=1e-6)
    ha = json.load(open(os.path.join(one_dir, "history.json")))
    hb = json.load(open(os.path.join(other_dir, "history.json")))
    assert ha.keys() == hb.keys()
    for key in ha:
        np.testing.assert_allclose(hb[key], ha[key], rtol=1e-5, atol=1e-6, err_msg=key)
    sa = json.load(open(os.path.join(one_dir, "summary.json")))
    sb = json.load(open(os.path.join(other_dir, "summary.json")))
    for key in ("natural_accuracy", "robust_accuracy", "density", "layer_density"):
        assert sa[key] == sb[key], key


def _worker(spec_path, recipe, distribute, runs, cpus=1, env=None):
    """One worker process running ``runs`` ([(out, overrides)]) of ``recipe`` under ``distribute``."""
    with open(spec_path, "w", encoding="utf-8") as fh:
        json.dump({"recipe": recipe, "distribute": distribute, "cpus": cpus,
                   "runs": [{"out": out, "overrides": list(overrides)} for out, overrides in runs]}, fh)
    return subprocess.Popen([sys.executable, WORKER, spec_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _finish(proc, timeout=600):
    """The worker's per-run results, by output directory."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    results = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    return {r["out"]: r for r in results}


VARIANTS = {"full-kernel": (),
            "diagonal-decay-per-entry": ("search.kernel=diagonal", "search.weight_decay=0.001", "search.normalization=per_entry"),
            # the score search with the sketched distance and the full student kernel: three paths in one run
            "scores-sketch-full-student": ("search.optimize=scores", "search.learning_rate=0.01", "search.kernel=sketch",
                                           "search.probes=2", "search.student_kernel=full")}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The tiny recipe, its one-device runs (made on first use) and one MirroredStrategy worker process
    (two logical CPUs) that runs every variant: one TensorFlow start instead of one per variant, and the case
    of a sweep (several runs in one process), whose second run died with "Shape mismatch in the
    collective instance" until ``strategy_for`` reused the process's strategy."""
    tmp = tmp_path_factory.mktemp("distributed")
    recipe = _recipe(tmp)
    runs = [(str(tmp / f"mirrored-{name}"), overrides) for name, overrides in VARIANTS.items()]
    mirrored = _worker(str(tmp / "mirrored.json"), recipe, "mirrored", runs, cpus=2)
    one_device = {}

    def one(variant):
        if variant not in one_device:
            one_device[variant] = str(tmp / f"one-{variant}")
            Run(load_recipe(recipe, list(VARIANTS[variant])), one_device[variant], log=lambda m: None).all()
        return one_device[variant]

    results = {}

    def mirrored_result(variant):
        if not results:
            results.update(_finish(mirrored))
        return results[str(tmp / f"mirrored-{variant}")]

    try:
        yield {"recipe": recipe, "tmp": tmp, "one": one, "mirrored": mirrored_result}
    finally:
        if mirrored.poll() is None:
            mirrored.kill()
            mirrored.wait()


@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mirrored_over_two_logical_cpus_equals_one_device(shared, variant):
    one = shared["one"](variant)
    result = shared["mirrored"](variant)
    assert result["replicas"] == 2
    _assert_same_run(one, result["out"])


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.xdist_group("distributed")
def test_multi_worker_over_two_processes_equals_one_device(shared):
    tmp = shared["tmp"]
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    procs = [_worker(str(tmp / f"worker{i}.json"), shared["recipe"], "multi_worker", [(str(tmp / f"worker{i}"), ())],
                     env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    try:
        one = shared["one"]("full-kernel")  # while the workers run
        results = [_finish(p)[str(tmp / f"worker{i}")] for i, p in enumerate(procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["replicas"] for r in results] == [2, 2]
    for i in range(2):
        _assert_same_run(one, str(tmp / f"worker{i}"))


def test_strategy_choice_and_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategy_for("none").num_replicas_in_sync == 1
    assert strategy_for("mirrored") is strategy_for("mirrored")  # one per process: collectives are per process
    with pytest.raises(ValueError, match=r"distribute must be one of .*You passed: 'tpu'"):
        strategy_for("tpu")
    with pytest.raises(ValueError, match=r"multi_worker needs TF_CONFIG"):
        strategy_for("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{nope")
    with pytest.raises(ValueError, match=r"valid TF_CONFIG"):
        strategy_for("multi_worker")
    assert is_chief()  # malformed TF_CONFIG: treated as the chief, no crash
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    assert is_chief()
    monkeypatch.delenv("TF_CONFIG")
    proc = tf_awt_main(capsys, "run", _recipe(tmp_path), "--set", "distribute=multi_worker", "--out", str(tmp_path / "o"),
                       "--no-mlflow", env={"TF_CONFIG": ""}, monkeypatch=monkeypatch)
    assert proc.returncode == 2 and "multi_worker needs TF_CONFIG" in proc.stderr and "Traceback" not in proc.stderr
