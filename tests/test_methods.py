"""The method registry: a user's method through find_ticket and `tf-awt run`; dense is a method like any other."""
import json

import numpy as np
import pytest

import tf_awt
from tf_awt.running import cli
from tf_awt.tickets import methods
from tf_awt.tickets.ticket import Ticket

from conftest import NO_TRAINING, tiny_recipe
from tf_awt.tickets.methods import METHODS, get_method


@pytest.fixture
def mine():
    seen = {}

    def keep_first_inputs(model, data, config, options):
        """Keeps the first round(density·n) weights of every layer, in memory order."""
        seen.update(config=config, options=options)
        from tf_awt.engine.layer_rules import prunable_layers

        masks = {}
        for layer in prunable_layers(model):
            n = layer.kernel.shape.num_elements()
            flat = np.zeros(n, np.float32)
            flat[: max(1, round(config.density * n))] = 1
            masks[layer.name] = flat.reshape(layer.kernel.shape)
        return masks, {"note": [1.0]}

    tf_awt.register_method("first_inputs", keep_first_inputs, description="a test method")
    yield seen
    methods._REGISTRY.pop("first_inputs")


def test_a_registered_method_runs_through_find_ticket_and_the_cli(tmp_path, mine, capsys):
    from conftest import tiny_data, tiny_model

    ticket = tf_awt.find_ticket(tiny_model(), tiny_data(), density=0.25, method="first_inputs", batch_size=8)
    assert ticket.method == "first_inputs" and ticket.history == {"note": [1.0]}
    assert mine["options"].batch_size == 8 and mine["config"].density == 0.25
    assert all(m.ravel()[: int(m.sum())].all() for m in ticket.masks.values())
    out = tmp_path / "run"
    assert cli.main(["run", tiny_recipe(tmp_path, method="first_inputs", density=0.25, train=NO_TRAINING), "--out", str(out), "--quiet",
                     "--no-mlflow"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "first_inputs" and abs(summary["density"] - 0.25) < 0.01


def test_dense_is_a_method_that_keeps_every_weight(tmp_path, capsys):
    from conftest import tiny_data, tiny_model

    assert not get_method("dense").prunes and "dense" not in METHODS
    ticket = tf_awt.find_ticket(tiny_model(), tiny_data(), density=0.3, method="dense")
    assert ticket.density == 1.0 and all(m.all() for m in ticket.masks.values())
    out = tmp_path / "dense"
    assert cli.main(["run", tiny_recipe(tmp_path, method="dense", train=NO_TRAINING), "--out", str(out), "--quiet", "--no-mlflow"]) == 0
    assert json.loads((out / "summary.json").read_text())["density"] == 1.0


def test_unknown_and_bad_methods_are_refused():
    with pytest.raises(ValueError, match=r"method must be one of \('awt', .*'dense'\) .*You passed: 'grasp'"):
        tf_awt.SearchConfig(density=0.1, method="grasp")
    with pytest.raises(ValueError, match=r"a method name is letters, digits.*You passed: 'a b'"):
        tf_awt.register_method("a b", lambda *a: {})
    with pytest.raises(ValueError, match=r"find must be a callable"):
        tf_awt.register_method("ok", "not callable")


# ---------------------------------------------------------------------------- every method, through the CLI
def test_every_method_runs_from_the_cli_and_its_ticket_round_trips(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, search={"epochs": 1, "update_every": 2, "batch_size": 32}, train={"epochs": 0},
                         export={"saved_model": False, "tflite": False})  # the tickets are checked, not the models
    variants = [(m, ()) for m in METHODS] + [("awt", ("search.optimize=scores",)),
                                                      ("random_layerwise", ("search.reference=magnitude",))]
    for method, extra in variants:
        out = tmp_path / f"{method}-{len(extra)}"
        overrides = [a for key in (f"method={method}", *extra) for a in ("--set", key)]
        code = cli.main(["run", recipe, *overrides, "--out", str(out), "--quiet", "--no-mlflow"])
        assert code == 0, capsys.readouterr().err[-2000:]
        ticket = Ticket.load(str(out / "ticket.npz"))
        summary = json.loads((out / "summary.json").read_text())
        assert ticket.method == summary["method"] == method
        assert abs(ticket.density - 0.2) < 0.01 and summary["layer_density"] == pytest.approx(ticket.layer_density)
        config = tf_awt.SearchConfig.from_config(ticket.config)
        assert config.method == method and config.get_config() == ticket.config
        if extra:
            assert (config.optimize, config.reference) in {("scores", "awt"), ("weights", "magnitude")}


def test_dns_fine_tunes_its_trained_weights_with_train_rewind_learned(tmp_path, capsys):
    """train.rewind: learned starts training from the weights DNS trained (its fine-tuning), init from θ0;
    a method that trains nothing is refused before anything runs."""
    import numpy as np

    from tf_awt.running.pipeline import Run
    from tf_awt.running.recipes import load_recipe

    recipe = tiny_recipe(tmp_path, method="dns", search={"epochs": 1, "update_every": 2, "batch_size": 32},
                         train={"epochs": 0}, export={"saved_model": False, "tflite": False})
    starts = {}
    for rewind in ("learned", "init"):
        out = tmp_path / rewind
        assert cli.main(["run", recipe, "--set", f"train.rewind={rewind}", "--out", str(out), "--quiet", "--no-mlflow"]) == 0
        ticket = Ticket.load(str(out / "ticket.npz"))
        _, model = Run(load_recipe(str(out / "recipe.yaml")), str(out)).trained_model(distributed=False)
        starts[rewind] = sorted(float(np.abs(w.numpy()).sum()) for w in model.weights if w.name.endswith("kernel:0"))
        expected = ticket.learned_weights if rewind == "learned" else ticket.initial_weights
        masks = iter(ticket.masks.values())
        kept = sorted(float(np.abs(w * next(masks)).sum()) for w in expected if w.ndim == 2)
        np.testing.assert_allclose(starts[rewind], kept, rtol=1e-6)
    assert starts["learned"] != starts["init"]
    capsys.readouterr()
    code = cli.main(["run", recipe, "--set", "method=magnitude", "--set", "train.rewind=learned", "--out", str(tmp_path / "x"),
                     "--quiet", "--no-mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and "train.rewind: learned starts from the weights a search trained" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()

