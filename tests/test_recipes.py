"""Recipes (tf_awt.running.recipes), property-based: any --set override or recipe file gives a valid recipe or a
one-line error, through the library and through the CLI (exit 2, no directory left)."""
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_awt.running import cli
from tf_awt.running.recipes import from_dict, load_recipe
from tf_awt.adversarial.phase_config import ExportConfig


_KEYS = ["dataset", "model", "method", "density", "seed", "distribute", "description", "attack", "search", "train", "eval",
         "attack.norm", "attack.eps", "attack.steps", "attack.step_size", "search.epochs", "search.learning_rate", "search.gamma",
         "search.update_every", "search.kernel", "search.kernel_weight", "search.normalization", "search.scope",
         "search.batch_size", "train.epochs", "train.learning_rate", "train.batch_size", "train.steps", "train.step_size",
         "eval.steps", "eval.restarts", "eval.max_examples", "eval.attacks", "eval.square_examples", "densty", "attack.epz", "a.b.c", "", "."]


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


def test_yaml_1_2_numbers_in_an_override_and_in_a_recipe_file(tmp_path, capsys):
    """``1e-4`` is a float as in YAML 1.2 (PyYAML's YAML 1.1 reads it as a string), ``2:4`` stays a
    string (YAML 1.1 reads the base-60 integer 124), ``10`` stays an integer."""
    recipe = load_recipe("quickstart", ["train.learning_rate=1e-4", "search.learning_rate=2E+3", "search.pattern=2:4", "density=0.5",
                                        "train.epochs=10"])
    assert (recipe.train.learning_rate, recipe.search.options.learning_rate, recipe.search.pattern, recipe.train.epochs) \
        == (1e-4, 2000.0, "2:4", 10)
    assert isinstance(recipe.train.epochs, int)
    path = tmp_path / "r.yaml"
    path.write_text("dataset: toy-gaussian\nmodel: mlp\ntrain: {learning_rate: 5e-4}\n")
    assert load_recipe(str(path)).train.learning_rate == 5e-4
    # through the CLI: 1e-4 is accepted, the next bad value is the one named
    assert cli.main(["run", "--set", "train.learning_rate=1e-4", "--set", "attack.eps=-1", "--out", str(tmp_path / "o")]) == 2
    assert "eps must be a number >= 0. You passed: -1.0" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_every_recipe_section_class_round_trips_through_its_config():
    """``from_config(get_config())`` gives the same object for each configuration a recipe is made of,
    with non-default values (JSON-able in between: what a ticket file and MLflow store)."""
    import json as _json

    import tf_awt

    for obj in (tf_awt.Attack(norm="l2", eps=0.5, steps=7, step_size=None, random_start=False, clip_min=None),
                tf_awt.SearchConfig.from_settings(dict(density=0.1, method="ntt", learning_rate=0.01, batch_size=16, kernel="sketch", probes=2,
                                    layer_densities=[0.2, 0.05, 0.5], scope="layer")),
                tf_awt.TrainConfig(epochs=3, learning_rate=0.002, lr_schedule="cosine", lr_warmup_epochs=0.5, clip_norm=1.0,
                                   rescale="fan_in", fail_on_collapse=True),
                tf_awt.EvalConfig(attacks=("pgd", "apgd-t"), steps=20, restarts=2, square_examples=50, max_examples=100, split="validation"),
                ExportConfig(tflite=False, keras3=True, plots=False)):
        config = _json.loads(_json.dumps(obj.get_config()))
        assert type(obj).from_config(config) == obj, type(obj).__name__
