"""tf-awt sweep: a resumable grid with MLflow child runs under one parent."""
import csv
import json
import os

import pytest

from conftest import digits_recipe, tf_awt_cli, tf_awt_main, tiny_recipe
from tf_awt.running.recipes import load_recipe
from tf_awt.running.sweep import sweep


def test_half_done_grid_resumes_without_redoing_finished_cells(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    recipe = load_recipe(tiny_recipe(tmp_path))
    out = str(tmp_path / "sweep")
    quiet = lambda m: None  # noqa: E731
    rows = sweep(recipe, out, ["random", "dense"], [0.2, 0.5], seeds=1, log=quiet)
    assert [(r["method"], r["density"]) for r in rows] == [("random", 0.2), ("random", 0.5), ("dense", 1.0)]
    cells = os.path.join(out, "cells")
    kept = os.path.join(cells, "random-d0.2-s0", "summary.json")
    kept_mtime = os.path.getmtime(kept)
    os.remove(os.path.join(cells, "random-d0.5-s0", "summary.json"))  # as if killed in that cell
    resumed_run = json.load(open(os.path.join(cells, "random-d0.5-s0", "run.json")))["mlflow_run_id"]
    messages = []
    rows2 = sweep(recipe, out, ["random", "dense"], [0.2, 0.5], seeds=1, log=messages.append)
    assert len(rows2) == 3 and os.path.getmtime(kept) == kept_mtime
    assert any("random-d0.2-s0 already finished" in m for m in messages)
    assert any("running random-d0.5-s0" in m for m in messages)
    assert not any("running random-d0.2-s0" in m for m in messages)
    with open(os.path.join(out, "sweep.csv")) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 and {t["cell"] for t in table} == {"random-d0.2-s0", "random-d0.5-s0", "dense-d1-s0"}
    assert abs(float(table[0]["achieved_density"]) - 0.2) < 1e-3
    assert "| random | 0.2 | 1 |" in open(os.path.join(out, "sweep.md")).read()
    assert os.path.exists(os.path.join(out, "accuracy_vs_density.png"))
    parent_id = json.load(open(os.path.join(out, "sweep.json")))["parent_run_id"]
    client = mlflow.tracking.MlflowClient(uri)
    children = client.search_runs(client.get_run(parent_id).info.experiment_id,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 3  # the interrupted cell continued its own MLflow run
    assert resumed_run in {c.info.run_id for c in children}
    assert all(c.info.status == "FINISHED" for c in children)


def test_sweep_rejects_bad_grids(tmp_path):
    recipe = load_recipe(tiny_recipe(tmp_path))
    with pytest.raises(ValueError, match=r"methods must be .*'grasp'"):
        sweep(recipe, str(tmp_path / "s"), ["grasp"], [0.1], track=False)
    with pytest.raises(ValueError, match=r"densities must be numbers in \(0, 1\]. You passed: \[0.0\]"):
        sweep(recipe, str(tmp_path / "s"), ["random"], [0.0], track=False)


@pytest.mark.slow
def test_two_density_two_method_sweep_end_to_end(tmp_path):
    proc = tf_awt_cli("sweep", tiny_recipe(tmp_path), "--densities", "0.1,0.3", "--methods", "awt,random", "--seeds", "1",
                      "--out", str(tmp_path / "sw"), "--quiet", "--no-mlflow")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"sweep.csv", "sweep.md", "accuracy_vs_density.png", "search_distances.png"} <= set(os.listdir(tmp_path / "sw"))
    assert "| awt | 0.3 | 1 |" in proc.stdout


# ---------------------------------------------------------------- cells on Ray (tf_awt.running.cells)

def _cell_results(out):
    """Per cell: the evaluation and the training history, as the run wrote them."""
    cells = os.path.join(out, "cells")
    return {name: (json.load(open(os.path.join(cells, name, "evaluation.json")))["robust_accuracy"],
                   json.load(open(os.path.join(cells, name, "evaluation.json")))["natural_accuracy"],
                   json.load(open(os.path.join(cells, name, "history.json"))))
            for name in sorted(os.listdir(cells))}


@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory):
    """The reference: the grid run one cell after another (no Ray), in a process whose TensorFlow has
    the one thread a Ray cell gets: float sums over one thread and over two may differ in their last
    bits on some CPUs (this 2-vCPU AMD EPYC VM's oneDNN kernels), and the property under test is that
    Ray's retries and resumes change nothing, not that the thread count does not."""
    tmp = tmp_path_factory.mktemp("sequential")
    recipe = digits_recipe(tmp, epochs=4)
    out = str(tmp / "sweep")
    one_thread = {name: "1" for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")}
    proc = tf_awt_cli("sweep", recipe, "--densities", "0.3", "--methods", "magnitude,awt", "--out", out, "--quiet",
                      "--no-mlflow", env=one_thread)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return recipe, _cell_results(out)


@pytest.mark.xdist_group("ray")
def test_cells_on_two_ray_workers_survive_a_killed_worker_and_equal_the_sequential_sweep(sequential_sweep, tmp_path):
    """``tf-awt sweep --workers 2``: every cell a Ray task (one TensorFlow thread each). SIGKILL every
    running cell's worker after its first training epoch: Ray retries the cells, each resumes from its
    checkpoint and its own MLflow child run, and the sweep ends with the sequential sweep's results,
    bit for bit (evaluation and per-epoch history), each cell a FINISHED child of the sweep's parent."""
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    recipe, reference = sequential_sweep
    out, uri = str(tmp_path / "sweep"), f"sqlite:///{tmp_path}/mlflow.db"
    sweep_proc = subprocess.Popen([sys.executable, "-m", "tf_awt.running.cli", "sweep", recipe, "--densities", "0.3", "--methods",
                                   "magnitude,awt", "--out", out, "--quiet", "--workers", "2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    checkpoint = os.path.join(out, "cells", "magnitude-d0.3-s0", "checkpoints", "train")
    deadline = time.time() + 400
    while not (os.path.isdir(checkpoint) and os.listdir(checkpoint)) and time.time() < deadline and sweep_proc.poll() is None:
        time.sleep(0.05)
    assert sweep_proc.poll() is None, "the sweep ended before a cell could be killed"
    workers = subprocess.run(["pgrep", "-f", "ray::run_cell"], capture_output=True, text=True).stdout.split()
    assert workers, "no Ray worker runs a cell"
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    stdout, stderr = sweep_proc.communicate(timeout=900)
    assert sweep_proc.returncode == 0, stderr[-3000:]
    assert _cell_results(out) == reference
    assert "cells on Ray (2 local workers)" in stderr and "(2 done, 0 running, 0 failed, 0 left of 2;" in stderr
    assert "| awt | 0.3 | 1 |" in stdout
    parent_id = json.load(open(os.path.join(out, "sweep.json")))["parent_run_id"]
    client = mlflow.tracking.MlflowClient(uri)
    children = client.search_runs(client.get_run(parent_id).info.experiment_id,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.data.params["method"] for c in children) == ["awt", "magnitude"]
    assert all(c.info.status == "FINISHED" for c in children)


def test_a_parallel_sweep_without_ray_says_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    proc = tf_awt_main(capsys, "sweep", tiny_recipe(tmp_path), "--densities", "0.3", "--methods", "random",
                       "--out", str(tmp_path / "s"), "--quiet", "--no-mlflow", "--workers", "2")
    assert proc.returncode == 2
    assert "needs Ray: pip install" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = tf_awt_main(capsys, "compare", tiny_recipe(tmp_path), "--methods", "random", "--out", str(tmp_path / "s"),
                       "--quiet", "--no-mlflow", "--workers", "2")
    assert proc.returncode == 2 and "needs Ray: pip install" in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing written
    for command in (["sweep", "--densities", "0.3"], ["compare"]):
        proc = tf_awt_main(capsys, command[0], tiny_recipe(tmp_path), *command[1:], "--methods", "random",
                           "--out", str(tmp_path / "s"), "--quiet", "--no-mlflow", "--workers", "0")
        assert proc.returncode == 2 and "workers must be an integer >= 1. You passed: 0" in proc.stderr


@pytest.mark.slow
def test_a_two_node_ray_cluster_runs_cells_on_both_nodes_and_equals_the_sequential_sweep(sequential_sweep, tmp_path):
    """``--address``: a head and a second node (one CPU each, ``ray.cluster_utils.Cluster`` on this
    machine); the two cells land on different nodes and end with the sequential sweep's results."""
    import re
    import subprocess
    import sys

    from ray.cluster_utils import Cluster

    recipe, reference = sequential_sweep
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = str(tmp_path / "sweep")
        proc = subprocess.run([sys.executable, "-m", "tf_awt.running.cli", "sweep", recipe, "--densities", "0.3", "--methods",
                               "magnitude,awt", "--out", out, "--quiet", "--no-mlflow", "--address", cluster.address],
                              capture_output=True, text=True, timeout=900)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _cell_results(out) == reference
    nodes = set(re.findall(r"finished on \S+ \(node (\w+)\)", proc.stderr))
    assert len(nodes) == 2, proc.stderr


@pytest.mark.slow
def test_a_ray_sweep_killed_whole_resumes_to_the_sequential_results(sequential_sweep, tmp_path):
    """SIGKILL the ``tf-awt sweep --workers 2`` process itself mid-cell: its Ray workers do not outlive
    it, and the same command run again continues (finished cells kept, interrupted ones resumed) to
    the sequential sweep's results. (Its fast variant without Ray: the half-done grid test.)"""
    import signal
    import subprocess
    import sys
    import time

    recipe, reference = sequential_sweep
    out = str(tmp_path / "sweep")
    command = [sys.executable, "-m", "tf_awt.running.cli", "sweep", recipe, "--densities", "0.3", "--methods", "magnitude,awt",
               "--out", out, "--quiet", "--no-mlflow", "--workers", "2"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = os.path.join(out, "cells", "magnitude-d0.3-s0", "checkpoints", "train")
    deadline = time.time() + 400
    while not (os.path.isdir(checkpoint) and os.listdir(checkpoint)) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the sweep ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    deadline = time.time() + 60
    while subprocess.run(["pgrep", "-f", "ray::run_cell"], capture_output=True).returncode == 0 and time.time() < deadline:
        time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", "ray::run_cell"], capture_output=True).returncode == 1, "cells outlived the sweep"
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _cell_results(out) == reference
