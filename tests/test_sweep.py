"""tf-awt sweep: a resumable grid with MLflow child runs under one parent."""
import csv
import json
import os

import pytest

from conftest import tf_awt_cli, tiny_recipe
from tf_awt.recipes import load_recipe
from tf_awt.sweep import sweep


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
    assert os.path.getmtime(kept) == kept_mtime
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
