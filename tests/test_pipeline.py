"""Every recipe key reaches the library call it names, with one meaning per key."""
import json

import pytest

from tf_awt.adversarial import evaluation, training
from tf_awt.running import cli
from tf_awt.tickets import baselines, export, find, search, ticket

from conftest import NO_TRAINING, tiny_recipe

SEARCH = {"epochs": 2, "learning_rate": 1e-3, "gamma": 2e-3, "update_every": 3, "weight_decay": 1e-4, "kernel": "diagonal",
          "kernel_weight": 0.5, "normalization": "per_entry", "scope": "layer", "batch_size": 16, "optimize": "scores",
          "reference": "snip", "precision": "bfloat16",
          "eps_warmup_epochs": 1.5}
TRAIN = {"epochs": 2, "learning_rate": 5e-4, "batch_size": 16, "steps": 3, "step_size": 0.02, "eps_warmup_epochs": 1,
         "lr_schedule": "cosine", "lr_warmup_epochs": 0.5, "clip_norm": 2.0, "rescale": "fan_in", "fail_on_collapse": True}


@pytest.fixture
def spies(monkeypatch):
    seen = {}

    def spy(owner, name, record):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            record(*args, **kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    spy(search.TicketSearch, "__init__", lambda self, model, config, steps_per_epoch=None, **k: seen.update(search=config, steps=steps_per_epoch))
    spy(baselines, "one_shot_masks", lambda model, dataset, config: seen.update(one_shot=config, batch=int(next(iter(dataset))[0].shape[0])))
    spy(training.AdversarialTrainer, "__init__", lambda self, model, attack=None, seed=None, schedule=None, **k: seen.update(attack=attack, seed=seed, schedule=schedule))
    spy(training.AdversarialTrainer, "compile", lambda self, optimizer=None, **k: seen.update(optimizer=optimizer))
    spy(ticket.Ticket, "to_model", lambda self, model, rewind="init", rescale="none": seen.update(rescale=rescale))
    calls = seen.setdefault("calls", [])  # one driver per phase: the CLI calls the library's public functions
    spy(find, "find_ticket", lambda model, data, **k: calls.append(("find_ticket", k.get("checkpoint_dir"))))
    spy(training, "adversarial_fit", lambda model, train, **k: calls.append(("adversarial_fit", k.get("checkpoint_dir"))))
    spy(evaluation, "evaluate", lambda model, data, **k: calls.append(("evaluate", None)))
    spy(export, "export_saved_model", lambda model, path, *a, **k: calls.append(("export_saved_model", path)))
    return seen


def _run(tmp_path, method, capsys):
    recipe = tiny_recipe(tmp_path, method=method, density=0.3, seed=7, search=SEARCH, train=TRAIN)
    out = tmp_path / method
    code = cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == (3 if summary["collapsed"] else 0), capsys.readouterr().err[-2000:]  # train.fail_on_collapse
    return summary, json.loads((out / "history.json").read_text())


def test_every_search_and_train_key_reaches_the_library(tmp_path, spies, capsys):
    summary, history = _run(tmp_path, "awt", capsys)
    config = spies["search"]
    flat = config.flat()  # the shared settings and AWT's options; other methods' keys are theirs
    assert [flat[k] for k in ("epochs", "learning_rate", "gamma", "update_every", "weight_decay", "kernel", "kernel_weight",
                              "normalization", "scope", "seed", "optimize", "precision")] == \
        [2, 1e-3, 2e-3, 3, 1e-4, "diagonal", 0.5, "per_entry", "layer", 7, "scores", "bfloat16"]
    assert "reference" not in flat and "eps_warmup_epochs" not in flat
    assert spies["steps"] == 6  # 96 training examples in batches of search.batch_size = 16
    assert (config.attack.eps, config.attack.steps, config.attack.step_size) == (0.1, 2, 0.05)
    attack, schedule = spies["attack"], spies["schedule"]
    assert (attack.eps, attack.steps, attack.step_size, spies["seed"]) == (0.1, 3, 0.02, 7)
    steps = 6  # train.batch_size = 16
    assert (schedule.eps_warmup_steps, schedule.lr_schedule, schedule.lr_warmup_steps, schedule.total_steps, schedule.clip_norm) == \
        (steps, "cosine", 3, 2 * steps, 2.0)
    lr = spies["optimizer"].get_config()["learning_rate"]["config"]
    assert lr["learning_rate"] == 5e-4 and lr["decay"] == "cosine" and lr["warmup_steps"] == 3
    assert spies["rescale"] == "fan_in"
    assert len(history["loss"]) == 2  # train.epochs
    out = tmp_path / "awt"
    assert spies["calls"] == [("find_ticket", str(out / "checkpoints" / "search")),
                              ("adversarial_fit", str(out / "checkpoints" / "train")),
                              ("evaluate", None), ("export_saved_model", str(out / "saved_model"))]
    spies["calls"].clear()

    summary, _ = _run(tmp_path, "magnitude", capsys)
    config = spies["one_shot"]
    assert config.scope == "layer" and config.seed == 7 and spies["batch"] == 16
    assert all(abs(d - 0.3) < 0.02 for d in summary["layer_density"].values())  # layer scope: every layer at 30%


def test_the_papers_conventions_reach_the_library_from_the_cli(tmp_path, spies, monkeypatch, capsys):
    """The paper's conventions through ``tf-awt run --set``: student kernel, decay form, allocation, init."""
    from tf_awt import models

    built = {}
    original = models.build_model

    def build(*args, **kwargs):
        built["model"] = original(*args, **kwargs)
        return built["model"]

    monkeypatch.setattr(models, "build_model", build)
    recipe = tiny_recipe(tmp_path, density=0.3, train=NO_TRAINING)  # what is checked is the search
    out = tmp_path / "conventions"
    code = cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow", "--set", "search.student_kernel=full",
                     "--set", "search.weight_decay=1.0e-4", "--set", "search.weight_decay_form=l2_per_density",
                     "--set", "search.layer_densities={dense_0: 0.2911, dense_1: 0.4, logits: 0.5}", "--set", "density=0.3584",
                     "--set", "init=glorot_normal"])
    assert code == 0, capsys.readouterr().err[-2000:]
    config = spies["search"]
    assert (config.options.student_kernel, config.options.weight_decay, config.options.weight_decay_form) == \
        ("full", 1e-4, "l2_per_density")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer_density"]["dense_1"] == pytest.approx(0.4, abs=0.01)
    assert summary["layer_density"]["logits"] == pytest.approx(0.5, abs=0.02)
    assert 0.005 < built["model"].get_layer("dense_0").get_weights()[1].std() < 0.02  # N(0, 0.01²) biases
    out = tmp_path / "fc"
    assert cli.main(["run", recipe, "--out", str(out), "--quiet", "--no-mlflow", "--set", "method=magnitude",
                     "--set", "search.scope=frankle_carbin"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    hidden = summary["layer_density"]["dense_0"]
    assert summary["layer_density"]["logits"] > hidden and summary["layer_density"]["dense_1"] == pytest.approx(hidden, abs=0.01)
    assert cli.main(["run", recipe, "--out", str(tmp_path / "bad"), "--quiet", "--no-mlflow",
                     "--set", "search.student_kernel=ntk"]) == 2
    assert "student_kernel must be one of ['masked', 'full']. You passed: 'ntk'" in capsys.readouterr().err
