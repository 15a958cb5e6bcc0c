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
            assert (method, config.flat().get("optimize"), config.flat().get("reference")) in {
                ("awt", "scores", None), ("random_layerwise", None, "magnitude")}


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



# ------------------------------------------------------------------------- each method's own options
@pytest.fixture
def with_options():
    """A registered method with an options class of its own (a width, validated there)."""
    import dataclasses

    from tf_awt.tickets.method_options import MethodOptions

    @dataclasses.dataclass(frozen=True)
    class WidthOptions(MethodOptions):
        width: int = 2

        def __post_init__(self):
            if not isinstance(self.width, int) or self.width < 1:
                raise ValueError(f"width must be an integer >= 1. You passed: {self.width!r}")

    seen = {}

    def keep_blocks(model, data, config, options):
        seen["options"] = config.options
        return {layer.name: np.ones(layer.kernel.shape, np.float32) for layer in model.layers if hasattr(layer, "kernel")}

    tf_awt.register_method("blocks", keep_blocks, options=WidthOptions, prunes=False)
    yield WidthOptions, seen
    methods._REGISTRY.pop("blocks")


def test_a_methods_options_reach_it_from_find_ticket_and_the_cli_and_are_validated_there(tmp_path, with_options, capsys):
    from conftest import tiny_data, tiny_model

    WidthOptions, seen = with_options
    tf_awt.find_ticket(tiny_model(), tiny_data(), density=0.5, method="blocks", width=5)
    assert seen["options"] == WidthOptions(width=5)
    config = tf_awt.SearchConfig(density=0.5, method="blocks", options=WidthOptions(3))
    tf_awt.find_ticket(tiny_model(), tiny_data(), config=config)
    assert seen["options"].width == 3
    recipe = tiny_recipe(tmp_path, method="blocks", train=NO_TRAINING)
    assert cli.main(["run", recipe, "--set", "search.width=4", "--out", str(tmp_path / "r"), "--quiet", "--no-mlflow"]) == 0
    assert seen["options"].width == 4
    capsys.readouterr()
    assert cli.main(["run", recipe, "--set", "search.width=0", "--out", str(tmp_path / "bad"), "--quiet", "--no-mlflow"]) == 2
    assert "search.width must be an integer >= 1. You passed: 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_setting_the_method_does_not_have_is_an_error_naming_its_options():
    from conftest import tiny_data, tiny_model
    from tf_awt.tickets.method_options import AWTOptions, CosentinoOptions

    with pytest.raises(ValueError, match=r"gamma is not a setting of method 'magnitude'.*You passed: gamma=1.0"):
        tf_awt.find_ticket(tiny_model(), tiny_data(), density=0.3, method="magnitude", gamma=1.0)
    with pytest.raises(ValueError, match=r"rounds is not a setting of method 'awt'. Allowed: its options \['gamma'"):
        tf_awt.SearchConfig.from_settings({"density": 0.3, "rounds": 3})
    with pytest.raises(ValueError, match=r"options of method 'cosentino' must be a CosentinoOptions. You passed: AWTOptions"):
        tf_awt.SearchConfig(density=0.3, method="cosentino", options=AWTOptions())
    with pytest.raises(ValueError, match=r"options must be a dataclass subclassing .*MethodOptions"):
        tf_awt.register_method("x", lambda *a: {}, options=dict)
    # a new method keeps the shared settings and the options the two have in common
    config = tf_awt.SearchConfig.from_settings({"density": 0.3, "epochs": 3, "learning_rate": 0.01, "gamma": 0.5})
    moved = config.replace(method="cosentino", rounds=2)
    assert moved.epochs == 3 and moved.options == CosentinoOptions(rounds=2, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"gamma is not a setting of method 'cosentino'"):
        config.replace(method="cosentino", gamma=1.0)


def test_every_methods_config_round_trips_through_its_config():
    import json as _json

    from tf_awt.tickets.method_options import AWTOptions, RandomLayerwiseOptions

    for method in methods.method_names():
        config = tf_awt.SearchConfig(density=0.2, method=method, seed=4)
        assert tf_awt.SearchConfig.from_config(_json.loads(_json.dumps(config.get_config()))) == config, method
    nested = tf_awt.SearchConfig(density=0.2, method="random_layerwise",
                                 options=RandomLayerwiseOptions("ntt", AWTOptions(kernel="sketch", probes=2)))
    assert tf_awt.SearchConfig.from_config(_json.loads(_json.dumps(nested.get_config()))) == nested
    # a recipe's flat keys fill the reference search's options
    from tf_awt.running.recipes import load_recipe

    recipe = load_recipe("quickstart", ["method=random_layerwise", "search.reference=ntt", "search.probes=3"])
    assert recipe.search.options == RandomLayerwiseOptions("ntt", AWTOptions(update_every=20, probes=3))


def test_a_recipe_keeps_every_methods_settings_when_its_method_changes():
    """What a sweep and a comparison do: one recipe, copied with another method, gives each its own options."""
    import dataclasses

    from tf_awt.running.recipes import from_dict, load_recipe
    from tf_awt.tickets.method_options import CosentinoOptions

    recipe = load_recipe("quickstart", ["search.rounds=2", "search.hysteresis=0.3"])
    assert recipe.search.options.update_every == 20 and recipe.search.options.gamma == 1e-3
    cosentino = dataclasses.replace(recipe, method="cosentino")
    assert cosentino.search.options == CosentinoOptions(rounds=2, learning_rate=5e-4)
    dns = dataclasses.replace(cosentino, method="dns")
    assert (dns.search.options.hysteresis, dns.search.options.update_every) == (0.3, 20)
    assert from_dict(cosentino.to_dict()) == cosentino and cosentino.to_dict()["search"]["gamma"] == 1e-3
    with pytest.raises(ValueError, match=r"search.rounds must be an integer >= 1. You passed: 0"):
        load_recipe("quickstart", ["search.rounds=0"])  # another method's key is checked whatever the method
