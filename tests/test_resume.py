"""Runs that survive being killed: epoch checkpoints, stateless randomness, exact resume."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tf_awt.running import cli
from tf_awt.adversarial.attacks import Attack, pgd
from tf_awt.adversarial.phase_config import TrainConfig
from tf_awt.checkpoint import PhaseCheckpoint, epoch_batches
from tf_awt.running.pipeline import Run
from tf_awt.running.recipes import load_recipe
from tf_awt.tickets.ticket import Ticket
from conftest import tf_awt_main, tiny_recipe, _StopAfterSecondEpoch


def _model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([tf_keras.layers.Input((8,)), tf_keras.layers.Dense(16, activation="relu"),
                                tf_keras.layers.Dense(3)])


# ---------------------------------------------------------------------------- stateless randomness
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_seeded_pgd_is_cleverhans_iteration_with_a_stateless_start(norm, eps):
    model = _model()
    x = tf.random.stateless_uniform((6, 8), [0, 1])
    y = tf.constant([0, 1, 2, 0, 1, 2])
    plain = Attack(norm=norm, eps=eps, steps=5, step_size=eps / 4, random_start=False)
    # Without a random start both paths are the same iteration: cleverhans' PGD and ours.
    np.testing.assert_allclose(pgd(model, x, y, plain).numpy(), pgd(model, x, y, plain, seed=[3, 4]).numpy(), atol=1e-7)
    attack = plain.replace(random_start=True)
    first = pgd(model, x, y, attack, seed=tf.constant([3, 4])).numpy()
    tf.random.set_seed(123)  # the global seed plays no part
    np.testing.assert_array_equal(first, pgd(model, x, y, attack, seed=[3, 4]).numpy())
    other = pgd(model, x, y, attack, seed=[3, 5]).numpy()
    assert np.abs(first - other).max() > 1e-3
    diff = (first - x.numpy()).reshape(6, -1)
    size = np.abs(diff).max(axis=1) if norm == "linf" else np.linalg.norm(diff, axis=1)
    assert size.max() <= eps + 1e-6 and first.min() >= 0 and first.max() <= 1


def test_epoch_batches_depend_only_on_seed_and_epoch():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)

    def epochs(first, last, seed=0):
        return [b[1].numpy().tolist() for b in epoch_batches(x, y, 4, seed, first, last)]

    whole = epochs(0, 3)
    assert len(whole) == 9  # 3 epochs x ceil(10/4) batches
    per_epoch = [sum(whole[i:i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(e) == list(range(10)) for e in per_epoch)  # each epoch is a permutation
    assert per_epoch[0] != per_epoch[1]
    tf.random.set_seed(99)
    assert epochs(1, 3) == whole[3:]  # a resumed run sees the same batches
    assert epochs(0, 1, seed=1) != whole[:3]


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_refuses_foreign_and_corrupt_state(tmp_path):
    variable = tf.Variable([1.0, 2.0])
    ckpt = PhaseCheckpoint(str(tmp_path / "c"), "run-a", v=variable)
    assert ckpt.restore() is None
    ckpt.save(1, {"note": "x"})
    variable.assign([5.0, 6.0])
    state = PhaseCheckpoint(str(tmp_path / "c"), "run-a", v=variable).restore()
    assert state["epoch"] == 1 and state["extra"] == {"note": "x"}
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"c/state.json belongs to another run"):
        PhaseCheckpoint(str(tmp_path / "c"), "run-b", v=variable).restore()
    with pytest.raises(ValueError, match=r"corrupt or does not fit"):
        PhaseCheckpoint(str(tmp_path / "c"), "run-a", v=tf.Variable([1.0, 2.0, 3.0])).restore()
    data = [f for f in os.listdir(tmp_path / "c") if ".data-" in f][0]
    with open(tmp_path / "c" / data, "r+b") as fh:
        fh.truncate(3)
    with pytest.raises(ValueError, match=r"checkpoint .*ckpt-1 is corrupt"):
        PhaseCheckpoint(str(tmp_path / "c"), "run-a", v=variable).restore()
    (tmp_path / "c" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"state.json is corrupt"):
        PhaseCheckpoint(str(tmp_path / "c"), "run-a", v=variable).restore()


# ---------------------------------------------------------------------------- whole runs
def _recipe(tmp_path, train_epochs=4, **changes):
    return load_recipe(tiny_recipe(tmp_path, search={"epochs": 3, "update_every": 2, "batch_size": 32},
                                   train={"epochs": train_epochs, "batch_size": 32, "steps": 2, "step_size": 0.05}, **changes))


# ---------------------------------------------------------------------------- the public API resumes
def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 8)).astype(np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("optimize,kernel", [("weights", "full"), ("scores", "full"), ("weights", "sketch")])
def test_find_ticket_with_a_checkpoint_dir_resumes_to_the_uninterrupted_ticket(tmp_path, optimize, kernel, monkeypatch):
    from tf_awt import find_ticket
    from tf_awt.tickets.search import TicketSearch

    finals = []  # what a ticket does not hold: the scores and every optimizer slot at the end of the search
    original = TicketSearch.ticket

    def recording(self, history=None):
        finals.append([v.numpy().copy() for v in [*self.scores, *self.optimizer.variables()]])
        return original(self, history)

    monkeypatch.setattr(TicketSearch, "ticket", recording)
    x, y = _data()
    settings = dict(density=0.3, epochs=3, batch_size=16, update_every=2, optimize=optimize, seed=5, kernel=kernel, probes=2,
                    attack=Attack(eps=0.1, steps=2, step_size=0.05))
    a = find_ticket(_model(), (x, y), **settings)
    directory = str(tmp_path / "search")
    with pytest.raises(KeyboardInterrupt):
        find_ticket(_model(), (x, y), checkpoint_dir=directory, callbacks=[_StopAfterSecondEpoch()], **settings)
    assert json.load(open(os.path.join(directory, "state.json")))["epoch"] == 2
    b = find_ticket(_model(), (x, y), checkpoint_dir=directory, **settings)
    same = lambda s, t: all(np.array_equal(m, n) for m, n in zip(s.masks.values(), t.masks.values()))  # noqa: E731
    assert same(a, b)  # (layer names differ between the models; the order does not)
    assert a.history == b.history and len(b.history["step"]) == 9
    assert len(finals) == 2 and len(finals[0]) == len(finals[1]) > (4 if optimize == "scores" else 0)  # scores, momenta, iterations
    for u, v in zip(*finals):
        np.testing.assert_array_equal(u, v)
    again = find_ticket(_model(), (x, y), checkpoint_dir=directory, **settings)  # finished: returns the same ticket at once
    assert same(a, again) and again.history == a.history
    with pytest.raises(ValueError, match="belongs to another run"):
        find_ticket(_model(), (x, y), checkpoint_dir=directory, **dict(settings, gamma=0.5))


def test_adversarial_fit_with_a_checkpoint_dir_resumes_to_the_uninterrupted_weights(tmp_path):
    from tf_awt import adversarial_fit
    from tf_awt.adversarial.collapse import CollapseMonitor
    x, y = _data()  # 3 steps an epoch: an ε warm-up over 5 steps, cosine decay over 12
    settings = dict(attack=Attack(eps=0.1, steps=2, step_size=0.05), seed=3,
                    config=TrainConfig(epochs=4, batch_size=16, eps_warmup_epochs=5 / 3, lr_schedule="cosine"))
    a_model = _model()
    a = adversarial_fit(a_model, (x, y), validation=(x[:16], y[:16]), **settings)
    directory = str(tmp_path / "train")
    with pytest.raises(KeyboardInterrupt):
        adversarial_fit(_model(), (x, y), validation=(x[:16], y[:16]), checkpoint_dir=directory,
                        callbacks=[_StopAfterSecondEpoch()], **settings)
    b_model = _model()
    monitor = CollapseMonitor(3)
    b = adversarial_fit(b_model, (x, y), validation=(x[:16], y[:16]), checkpoint_dir=directory, callbacks=[monitor], **settings)
    for wa, wb in zip(a_model.get_weights(), b_model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert set(a.history) == set(b.history) and len(b.history["loss"]) == 4 and b.epoch == [0, 1, 2, 3]
    for key in a.history:
        np.testing.assert_allclose(a.history[key], b.history[key], rtol=0, atol=0)


def test_collapse_monitor_continues_its_count_over_a_resume():
    from tf_awt.adversarial.collapse import CollapseMonitor

    stuck, fine = {"loss": float(np.log(10))}, {"loss": 0.5}
    monitor = CollapseMonitor(10, patience=3, log=lambda m: None)
    monitor.resume_from([fine, stuck, stuck])
    monitor.on_train_begin()
    assert monitor.stuck_epochs == 2
    monitor.on_epoch_end(2, stuck)
    assert monitor.warned  # the third epoch in a row at ln 10, counted across the resume
    monitor.on_train_begin()  # a fresh fit starts from zero
    assert monitor.stuck_epochs == 0 and not monitor.warned


def _same_run(a_dir, b_dir, a, b):
    for key in ("natural_accuracy", "robust_accuracy", "density", "layer_density", "sanity_warnings"):
        assert a[key] == b[key], key
    assert json.load(open(os.path.join(a_dir, "history.json"))) == json.load(open(os.path.join(b_dir, "history.json")))
    ta, tb = Ticket.load(os.path.join(a_dir, "ticket.npz")), Ticket.load(os.path.join(b_dir, "ticket.npz"))
    assert all(np.array_equal(ta.masks[k], tb.masks[k]) for k in ta.masks)
    assert ta.history == tb.history


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """optimize -> (recipe, the uninterrupted run's directory and summary), made on first use."""
    made = {}

    def get(optimize):
        if optimize not in made:
            tmp = tmp_path_factory.mktemp(f"uninterrupted-{optimize}")
            recipe = _recipe(tmp)
            if optimize == "scores":  # the scores and their optimizer's momentum are in the checkpoint
                recipe = dataclasses.replace(recipe, search=recipe.search.replace(optimize="scores", learning_rate=0.01))
            made[optimize] = (recipe, str(tmp / "a"), Run(recipe, str(tmp / "a"), log=lambda m: None).all())
        return made[optimize]

    return get


@pytest.mark.xdist_group("resume")  # the two "weights" cases share one uninterrupted run
@pytest.mark.parametrize("phase,optimize", [("search", "weights"), ("search", "scores"), ("train", "weights")])
def test_interrupted_phase_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, phase, optimize):
    recipe, a_dir, a = uninterrupted(optimize)
    b_dir = str(tmp_path / "b")

    def progress(name, steps):
        return _StopAfterSecondEpoch() if name == phase else cli._Progress(True)(name, steps)

    with pytest.raises(KeyboardInterrupt):
        Run(recipe, b_dir, progress=progress, log=lambda m: None).all()
    assert not os.path.exists(os.path.join(b_dir, "summary.json"))
    assert json.load(open(os.path.join(b_dir, "checkpoints", phase, "state.json")))["epoch"] == 2
    messages = []
    b = Run(recipe, b_dir, log=messages.append).all()
    assert f"{phase}: resuming after epoch 2 of {3 if phase == 'search' else 4}" in " ".join(messages)
    _same_run(a_dir, b_dir, a, b)
    assert not os.path.exists(os.path.join(b_dir, "checkpoints"))  # dropped once the phases completed


def test_finished_dir_is_kept_unless_forced_and_another_recipe_is_refused(tmp_path):
    recipe = _recipe(tmp_path, train_epochs=1)
    out = str(tmp_path / "run")
    first = Run(recipe, out, log=lambda m: None).all()
    stamp = os.path.getmtime(os.path.join(out, "summary.json"))
    messages = []
    again = Run(recipe, out, log=messages.append).all()
    assert again == json.loads(json.dumps(first)) and "finished run" in messages[0]
    assert os.path.getmtime(os.path.join(out, "summary.json")) == stamp
    os.remove(os.path.join(out, "summary.json"))  # an unfinished run of this recipe ...
    other = _recipe(tmp_path, train_epochs=1, density=0.5)
    with pytest.raises(ValueError, match=r"holds a run of another recipe .*--force"):
        Run(other, out, log=lambda m: None).all()  # ... is not continued with another recipe
    forced = Run(other, out, log=lambda m: None, force=True).all()
    assert forced["density"] == pytest.approx(0.5, abs=0.01)


def _wait_for(path, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def test_sigkill_mid_training_then_rerun_continues_the_same_mlflow_run(tmp_path, capsys, monkeypatch):
    import mlflow

    recipe_path = tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32},
                              train={"epochs": 40, "batch_size": 32, "steps": 2, "step_size": 0.05})  # killed after epoch 1
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "tf_awt.running.cli", "run", recipe_path, "--quiet"]
    # Only the run that is killed needs a process of its own; the others call the CLI's main here.
    # The uninterrupted reference is compared on its files only: it needs no MLflow run.
    whole = tf_awt_main(capsys, "run", recipe_path, "--quiet", "--no-mlflow", "--out", tmp_path / "a")
    assert whole.returncode == 0, whole.stderr[-2000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])

    out = tmp_path / "b"
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(str(out / "checkpoints" / "train" / "state.json"), proc), "training never checkpointed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    run_id = json.load(open(out / "run.json"))["mlflow_run_id"]
    killed_at = json.load(open(out / "checkpoints" / "train" / "state.json"))["epoch"]
    assert 1 <= killed_at < 40

    resumed = tf_awt_main(capsys, "run", recipe_path, "--quiet", "--out", out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "search: ticket.npz exists, kept" in resumed.stderr
    assert "train: resuming after epoch" in resumed.stderr
    a = json.load(open(tmp_path / "a" / "summary.json"))
    b = json.load(open(out / "summary.json"))
    _same_run(str(tmp_path / "a"), str(out), a, b)
    assert b["mlflow_run_id"] == run_id
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["robust_accuracy"] == pytest.approx(b["robust_accuracy"])

    again = tf_awt_main(capsys, "run", recipe_path, "--quiet", "--out", out)
    assert again.returncode == 0 and "finished run" in again.stderr


def test_a_corrupt_checkpoint_is_one_cli_line_that_names_the_directory_and_force(tmp_path, capsys):
    """The library's CheckpointError names the directory to delete; the command line adds its own way out."""
    recipe, out = tiny_recipe(tmp_path), tmp_path / "run"
    (out / "checkpoints" / "search").mkdir(parents=True)
    (out / "checkpoints" / "search" / "state.json").write_text("{not json")
    proc = tf_awt_main(capsys, "search", recipe, "--out", str(out), "--quiet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("tf-awt: error: checkpoint state ") and "is corrupt" in line
    assert line.endswith(f"Delete {out / 'checkpoints' / 'search'} to start this phase over, or rerun with --force.")
    assert tf_awt_main(capsys, "search", recipe, "--out", str(out), "--quiet", "--force").returncode == 0
