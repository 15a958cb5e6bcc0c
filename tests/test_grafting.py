"""Network grafting (tf_awt.adversarial.grafting): the grafted network's layers by hand, and the two controls:
a network grafted onto itself gives zero increase, onto an unrelated network a large one."""
import numpy as np
import pytest

import tf_awt
from tf_awt.adversarial.grafting import boundaries, graft_errors, grafted

from conftest import ATTACK, tiny_data, tiny_model, trained_model


def test_a_graft_takes_the_front_layers_of_one_network_and_the_back_layers_of_the_other():
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    assert boundaries(a) == [l.name for l in a.layers if hasattr(l, "kernel")][:-1]
    g = grafted(a, b, 1)
    kernels = lambda m: [l.get_weights() for l in m.layers if l.get_weights()]  # noqa: E731
    ka, kb, kg = kernels(a), kernels(b), kernels(g)
    for got, expected in zip(kg, [ka[0], kb[1], kb[2]]):
        for u, v in zip(got, expected):
            np.testing.assert_array_equal(u, v)
    x = tiny_data(4)[0]
    h = a.layers[1](a.layers[0](x))  # flatten, first Dense of a ...
    np.testing.assert_allclose(g(x).numpy(), b.layers[3](b.layers[2](h)).numpy(), rtol=1e-5)  # ... then b's
    with pytest.raises(ValueError, match=r"boundary must be in \[1, 2\].*You passed: 3"):
        grafted(a, b, 3)


def test_self_graft_gives_zero_increase_and_an_unrelated_graft_a_large_one():
    model, data = trained_model(), tiny_data(96, seed=1)
    same = graft_errors(model, model, data, ATTACK)
    assert all(v == 0.0 for d in same.increase.values() for kind in d.values() for v in kind)
    assert same.originals["a"][0] < 0.45  # a trained network (3 classes; chance 0.67)
    other = tiny_model(seed=7)
    unrelated = graft_errors(model, other, data, ATTACK)
    assert unrelated.mean_increase("natural") > 0.15
    assert min(unrelated.increase["a_to_b"]["natural"]) > 0.05  # a trained front on a random back
    # above the worse original, checked by brute force: each grafted network's error minus the worse one's
    import tensorflow as tf

    from tf_awt.adversarial.grafting import _errors

    x, y = tf.constant(data[0]), np.asarray(data[1])
    worst = [max(e[k] for e in unrelated.originals.values()) for k in (0, 1)]
    grafts = [grafted(f, b, i) for f, b in ((model, other), (other, model))
              for i in range(1, len(unrelated.boundaries) + 1)]
    errors = [_errors(g, x, y, ATTACK, 0) for g in grafts]
    for k, kind in enumerate(("natural", "adversarial")):
        assert unrelated.mean_above_worse(kind) == pytest.approx(np.mean([e[k] for e in errors]) - worst[k], abs=1e-12)
    assert same.mean_above_worse("natural") == 0.0


def test_a_pruned_network_is_grafted_through_its_masked_weights():
    model, data = trained_model(), tiny_data(48, seed=1)
    ticket = tf_awt.find_ticket(model, data, density=0.5, method="magnitude")
    sparse = tf_awt.Ticket(masks=ticket.masks, initial_weights=model.get_weights(), method="magnitude").to_model(model)
    same = graft_errors(sparse, sparse, data, ATTACK)
    assert same.mean_increase("adversarial") == 0.0 and same.boundaries == boundaries(model)


def test_tf_awt_graft_writes_the_table_and_heat_map_of_a_run_with_a_dense_reference(tmp_path, capsys):
    import csv
    import json
    import os

    from tf_awt.running import cli

    from conftest import digits_recipe

    recipe = digits_recipe(tmp_path, epochs=2, method="magnitude", export={"saved_model": False, "tflite": False, "plots": False})
    out = tmp_path / "run"
    assert cli.main(["run", recipe, "--set", "train.dense_reference=true", "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    assert sorted(os.listdir(out / "epochs")) == ["dense-e1.npz", "dense-e2.npz", "ticket-e1.npz", "ticket-e2.npz"]
    capsys.readouterr()
    assert cli.main(["graft", str(out), "--examples", "60"]) == 0
    printed = capsys.readouterr().out
    assert "mean error increase of a graft: natural" in printed and "above the worse network: natural" in printed
    rows = list(csv.DictReader(open(out / "graft.csv")))
    assert len(rows) == 2 * 2 * 2  # epochs x directions x boundaries (the MLP's two hidden layers)
    summary = json.loads((out / "graft.json").read_text())
    assert summary["epochs"] == [1, 2] and summary["examples"] == 60
    gaps = [abs(o["ticket"][0] - o["dense"][0]) for o in summary["originals"].values()]
    assert summary["mean_natural_above_worse"] == pytest.approx(summary["mean_natural_increase"] - np.mean(gaps))
    assert (out / "graft.png").stat().st_size > 1000
    # the last epoch's ticket is the trained model the run kept
    from tf_awt.running.pipeline import Run
    from tf_awt.running.recipes import load_recipe

    _, trained = Run(load_recipe(str(out / "recipe.yaml")), str(out)).trained_model(distributed=False)
    kept = np.load(out / "epochs" / "ticket-e2.npz")
    stripped = tf_awt._internals.strip_pruning(trained).get_weights()
    for i, w in enumerate(stripped):
        np.testing.assert_array_equal(kept[f"arr_{i}"], w)


def test_tf_awt_graft_on_a_run_without_a_dense_reference_is_one_line(tmp_path, capsys):
    from tf_awt.running import cli

    from conftest import tiny_recipe

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(open(tiny_recipe(tmp_path)).read())
    assert cli.main(["graft", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "make the run with --set train.dense_reference=true" in err and "Traceback" not in err
    assert cli.main(["graft", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory (no recipe.yaml)" in capsys.readouterr().err


def test_tf_awt_graft_logs_to_the_runs_own_mlflow_run(tmp_path, capsys, monkeypatch):
    import os

    import mlflow

    from tf_awt.running import cli

    from conftest import digits_recipe

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    recipe = digits_recipe(tmp_path, epochs=2, method="magnitude", export={"saved_model": False, "tflite": False, "plots": False})
    out = tmp_path / "run"
    assert cli.main(["run", recipe, "--set", "train.dense_reference=true", "--out", str(out), "--quiet", "--no-register"]) == 0
    run_id = __import__("json").loads((out / "run.json").read_text())["mlflow_run_id"]
    # a store that does not know the run: one line before any grafting, nothing written
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    capsys.readouterr()
    assert cli.main(["graft", str(out), "--examples", "40"]) == 2
    err = capsys.readouterr().err
    assert f"cannot continue MLflow run {run_id}" in err and "or --no-mlflow to write the files only" in err
    ours = [line for line in err.strip().splitlines() if " INFO mlflow." not in line]  # MLflow creating the other store
    assert "Traceback" not in err and len(ours) == 1 and not (out / "graft.json").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert cli.main(["graft", str(out), "--examples", "40"]) == 0
    assert f"logged to MLflow run {run_id}" in capsys.readouterr().out
    summary = __import__("json").loads((out / "graft.json").read_text())
    client = mlflow.tracking.MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["graft_mean_natural_increase"] == summary["mean_natural_increase"]
    assert run.data.metrics["graft_mean_adversarial_increase"] == summary["mean_adversarial_increase"]
    assert run.data.metrics["graft_mean_adversarial_above_worse"] == summary["mean_adversarial_above_worse"]
    assert [m.step for m in client.get_metric_history(run_id, "graft_adversarial_increase")] == [1, 2]
    assert {"graft.csv", "graft.json", "graft.png"} <= {a.path for a in client.list_artifacts(run_id)}
    # --no-mlflow: the files only
    assert cli.main(["graft", str(out), "--examples", "40", "--no-mlflow"]) == 0
    assert "logged to MLflow" not in capsys.readouterr().out
    assert len(client.get_metric_history(run_id, "graft_adversarial_increase")) == 2


def test_a_run_that_copies_another_runs_dense_reference_is_the_run_that_trains_its_own(tmp_path, capsys):
    """`tf-awt run --dense-from RUN_DIR`: the dense reference depends on no method or density, so a run of another
    method copies it (checked) and grafts exactly as the same run training its own (Figure 9's cells share it)."""
    import json

    from tf_awt.running import cli

    from conftest import digits_recipe

    recipe = digits_recipe(tmp_path, epochs=2, method="magnitude", export={"saved_model": False, "tflite": False, "plots": False})
    common = ["--set", "train.dense_reference=true", "--quiet", "--no-mlflow"]
    assert cli.main(["run", recipe, "--out", str(tmp_path / "a"), *common]) == 0
    capsys.readouterr()
    assert cli.main(["run", recipe, "--set", "method=random", "--out", str(tmp_path / "copied"),
                     "--dense-from", str(tmp_path / "a"), *common]) == 0
    assert f"the dense reference copied from {tmp_path / 'a'} (2 epochs" in capsys.readouterr().err
    assert cli.main(["run", recipe, "--set", "method=random", "--out", str(tmp_path / "own"), *common]) == 0
    for name in ("dense-e1.npz", "dense-e2.npz", "ticket-e1.npz", "ticket-e2.npz"):
        copied, own = np.load(tmp_path / "copied" / "epochs" / name), np.load(tmp_path / "own" / "epochs" / name)
        assert copied.files == own.files and all(np.array_equal(copied[k], own[k]) for k in own.files), name
    for run in ("copied", "own"):
        assert cli.main(["graft", str(tmp_path / run), "--examples", "30", "--no-mlflow"]) == 0
    graft = {run: json.loads((tmp_path / run / "graft.json").read_text()) for run in ("copied", "own")}
    assert graft["copied"] == graft["own"]


def test_dense_from_refuses_a_run_of_other_settings_in_one_line_before_writing_anything(tmp_path, capsys):
    import os

    from tf_awt.running import cli

    from conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, train={"epochs": 1, "batch_size": 32, "steps": 2, "step_size": 0.05, "dense_reference": True})
    source = tmp_path / "a"
    assert cli.main(["run", recipe, "--out", str(source), "--quiet", "--no-mlflow"]) == 0
    capsys.readouterr()
    for extra, message in ((["--set", "seed=1"], "its dense reference was trained with other settings: seed 0 (this run: 1)"),
                           (["--set", "train.dense_reference=false"], "it needs train.dense_reference: true"),
                           (["--set", "train.epochs=2"], "train.epochs 1 (this run: 2)"),
                           (["--set", "method=random", "--set", "density=0.5"], None)):  # method and density may differ
        out = tmp_path / f"b{len(os.listdir(tmp_path))}"
        code = cli.main(["run", recipe, "--out", str(out), "--dense-from", str(source), "--quiet", "--no-mlflow", *extra])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0, err
            continue
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not out.exists()
    assert cli.main(["run", recipe, "--out", str(tmp_path / "c"), "--dense-from", str(tmp_path / "nowhere"), "--quiet", "--no-mlflow"]) == 2
    assert "--dense-from takes a run directory (with recipe.yaml). You passed:" in capsys.readouterr().err
    ticket = tf_awt.Ticket.load(str(source / "ticket.npz"))  # a source whose θ0 is not this run's: refused before training
    tf_awt.Ticket(masks=ticket.masks, initial_weights=[w + 1.0 for w in ticket.initial_weights], method=ticket.method).save(str(source / "ticket.npz"))
    out = tmp_path / "d"
    assert cli.main(["run", recipe, "--out", str(out), "--dense-from", str(source), "--quiet", "--no-mlflow"]) == 2
    assert "its θ0" in capsys.readouterr().err and not (out / "epochs").exists()
