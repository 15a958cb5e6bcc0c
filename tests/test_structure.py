"""The package's structure: four layers that import only downward, no import cycle (function-level
imports included), a front door of at most 20 documented names, no compatibility shims, no function
over 60 lines, and no method special-cased outside the method registry."""
import ast
import os

import tf_awt

PACKAGE = os.path.dirname(tf_awt.__file__)


def _modules():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = "tf_awt." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
                found[dotted[:-9] if dotted.endswith(".__init__") else dotted] = path
    return found


def import_graph():
    """{module: modules of tf_awt it imports anywhere in its source (top level or in a function)}."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module:
                edges |= {node.module} & set(modules)
                edges |= {f"{node.module}.{a.name}" for a in node.names} & set(modules)
        graph[module] = edges - {"tf_awt", module}
    graph.pop("tf_awt")  # the package's lazy exports (PEP 562) are not a dependency of its modules
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 30 and "tf_awt.tickets.find" in graph["tf_awt.running.pipeline"]  # the graph is read, not empty
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = ("engine", "adversarial", "tickets", "running")
"""The sub-packages, bottom to top; the shared top-level modules are below all of them."""


def layer(module: str) -> int:
    """0 for a shared top-level module, else 1 + the index of its sub-package in LAYERS."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) + 1 if len(parts) > 2 and parts[1] in LAYERS else 0


def upward_imports(graph):
    """(module, what it imports) pairs where a module imports a higher layer."""
    return sorted((m, d) for m, deps in graph.items() for d in deps if layer(d) > layer(m))


def test_each_layer_imports_only_the_layers_below_it():
    graph = {m: deps for m, deps in import_graph().items() if m != "tf_awt.__main__"}
    assert {layer(m) for m in graph} == {0, 1, 2, 3, 4}  # every layer holds modules
    assert upward_imports(graph) == []
    # the checker itself: an engine module importing a ticket module is found
    assert upward_imports({"tf_awt.engine.kernel": {"tf_awt.tickets.search"}, "tf_awt.tickets.search": {"tf_awt.engine.kernel"}}) \
        == [("tf_awt.engine.kernel", "tf_awt.tickets.search")]


def test_the_public_api_is_the_documented_front_door_and_nothing_else():
    """``__all__`` is exactly the names the package docstring's front-door list gives (at most 20),
    each one resolves, and a name that is not public (a helper of a sub-package) is not an attribute."""
    import re

    front_door = tf_awt.__doc__.split("The front door")[1].split("\n\n")[1]
    documented = re.findall(r":(?:func|class):`(\w+)`", front_door)
    assert sorted(documented) == sorted(tf_awt.__all__) and len(documented) == len(set(documented))
    assert len(tf_awt.__all__) <= 20
    for name in tf_awt.__all__:
        assert getattr(tf_awt, name).__name__ == name, name
    for private in ("strategy_for", "evaluation_attack", "AWTSchedule", "METHODS"):
        assert not hasattr(tf_awt, private), private


def _callers():
    """Every Python file outside the package that a user or CI runs: tests, benchmarks, experiments."""
    root = os.path.dirname(PACKAGE)
    for top in ("tests", "benchmarks", "experiments"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            yield from (os.path.join(folder, n) for n in files if n.endswith(".py"))


def test_every_caller_uses_names_the_package_has():
    """A name imported from ``tf_awt`` (or read as ``tf_awt.name``) by a test, a benchmark or an
    experiment exists: a name dropped from the front door fails here, not in a slow CLI test."""
    import importlib

    missing = []
    for path in _callers():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tf_awt" and node.level == 0:
                module = importlib.import_module(node.module)
                missing += [(path, f"{node.module}.{a.name}") for a in node.names
                            if not hasattr(module, a.name) and f"{node.module}.{a.name}" not in _modules()]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tf_awt" \
                    and not hasattr(tf_awt, node.attr):
                missing.append((path, f"tf_awt.{node.attr}"))
    assert missing == []


def test_no_old_module_path_and_no_compatibility_shim():
    """The modules live in their layer only: ``tf_awt.search`` (an earlier path) is an ordinary
    ModuleNotFoundError, and no module keeps a finder or re-exports "for compatibility"."""
    import importlib

    import pytest

    for old in ("tf_awt.search", "tf_awt.kernel", "tf_awt.cli", "tf_awt._moved"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)
    for module, path in _modules().items():
        source = open(path, encoding="utf-8").read()
        assert "meta_path" not in source and "for compatibility" not in source, module


def _function_lengths():
    """(lines of code, module, function) for every function of the package, its docstring not counted."""
    rows = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
                rows.append((node.end_lineno - node.lineno + 1 - ((first.end_lineno - first.lineno + 1) if doc else 0),
                             module, node.name))
    return rows


def test_no_function_is_longer_than_60_lines():
    rows = _function_lengths()
    assert len(rows) > 400  # the functions are read, not an empty walk
    assert sorted(r for r in rows if r[0] > 60) == []


def test_no_method_is_special_cased_outside_the_registry():
    for name in ("running/pipeline.py", "running/sweep.py", "running/recipes.py", "running/cli.py", "tickets/search.py"):
        source = open(os.path.join(PACKAGE, name), encoding="utf-8").read()
        for literal in ('== "dense"', "== 'dense'", 'method == "', 'method in ("'):
            assert literal not in source, (name, literal)


def test_every_recipe_key_is_a_field_of_a_library_config_declared_once():
    """One configuration: a recipe's sections are the library's config classes (no second
    declaration: the recipes module defines no dataclass but ``Recipe``), every section key is a
    field of its class by the same name, every field is a key unless set outside the section, and a
    default recipe's values are the classes' own defaults."""
    import dataclasses
    import inspect

    import tf_awt
    from tf_awt.running import recipes
    from tf_awt.running.recipes import NOT_KEYS, SECTIONS, Recipe, section_keys

    declared = [name for name, obj in vars(recipes).items()
                if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == recipes.__name__]
    assert declared == ["Recipe"]
    assert {name: cls.__name__ for name, cls in SECTIONS.items()} == {
        "attack": "Attack", "search": "SearchConfig", "train": "TrainConfig", "eval": "EvalConfig", "export": "ExportConfig"}
    # the library's classes themselves
    from tf_awt.adversarial.phase_config import ExportConfig

    assert [SECTIONS[k] for k in ("attack", "search", "train", "eval", "export")] == [
        tf_awt.Attack, tf_awt.SearchConfig, tf_awt.TrainConfig, tf_awt.EvalConfig, ExportConfig]
    recipe = Recipe()
    from tf_awt.tickets.methods import get_method, method_names

    option_classes = {get_method(m).options for m in method_names()}
    for name, cls in SECTIONS.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        if name == "search":  # the shared fields, and every method's options, flat
            fields += [k for c in option_classes for k in c.keys()]
        assert set(section_keys(name)) | set(NOT_KEYS.get(name, ())) == set(fields), name
        assert isinstance(getattr(recipe, name), cls)
    defaults = recipe.to_dict()
    for name in ("train", "eval", "export"):
        assert defaults[name] == SECTIONS[name]().get_config(), name
    for method in method_names():  # each method's config holds exactly the recipe's defaults for its keys
        search = tf_awt.SearchConfig(density=recipe.density, method=method)
        assert {k: v for k, v in search.flat().items() if k in section_keys("search")} == \
            {k: defaults["search"][k] for k in search.flat() if k in section_keys("search")}, method
    assert recipe.attack == search.attack  # the recipe's attack is the search's, by default the paper's search PGD


def test_a_setting_two_methods_share_has_one_meaning_and_one_default():
    """A flat ``search.<key>`` sets every method's option of that name: their defaults must agree."""
    import dataclasses

    from tf_awt.tickets.methods import get_method, method_names

    seen = {}
    for cls in {get_method(m).options for m in method_names()}:
        for field in dataclasses.fields(cls):
            if field.name in cls.keys():
                seen.setdefault(field.name, set()).add((field.default, str(field.type)))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}


def test_a_recipe_section_is_the_object_the_api_takes():
    """``load_recipe`` gives the very SearchConfig / TrainConfig / EvalConfig the library calls take;
    the top-level density, method, attack and seed are the search's; the old key names still read."""
    import warnings

    import pytest

    import tf_awt
    from tf_awt.running.recipes import load_recipe

    recipe = load_recipe("quickstart", ["search.probes=7", "search.kernel=sketch", "search.learning_rate=0.002",
                                        "train.learning_rate=0.003", "density=0.1", "attack.eps=0.2", "seed=3"])
    config = recipe.search
    assert isinstance(config, tf_awt.SearchConfig) and isinstance(recipe.train, tf_awt.TrainConfig)
    assert (config.options.probes, config.options.kernel, config.options.learning_rate, config.density, config.seed) == \
        (7, "sketch", 0.002, 0.1, 3)
    assert config.attack is recipe.attack and config.attack.eps == 0.2 and recipe.train.learning_rate == 0.003
    with pytest.raises(ValueError, match=r"unknown key 'search.lr'. Allowed keys under search: .*'learning_rate'"):
        load_recipe("quickstart", ["search.lr=0.002"])  # a key of an earlier version is an ordinary unknown key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"unknown key 'search.density'.*Allowed keys under search"):
            load_recipe("quickstart", ["search.density=0.2"])  # a top-level key, not a section key


def test_a_clone_named_tf_awt_imported_from_its_parent_folder_is_the_package(tmp_path):
    """``import tf_awt`` started above a clone named tf_awt finds the clone's folder first; it must
    still be the package (not an empty namespace package without ``tf_awt.running.recipes``)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.symlink(root, tmp_path / "tf_awt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import tf_awt, tf_awt.running.recipes; print(tf_awt.__version__, sorted(tf_awt.running.recipes.bundled_recipes())[0], tf_awt.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, first_recipe, path = proc.stdout.split()
    assert version == __import__("tf_awt").__version__ and first_recipe and path.endswith(os.path.join("tf_awt", "tf_awt", "__init__.py"))
