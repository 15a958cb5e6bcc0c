"""The package's structure, checked statically: no import cycle (function-level imports included),
and no method special-cased outside the method registry."""
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
    assert len(graph) > 30 and "tf_awt.search" in graph["tf_awt.pipeline"]  # the graph is read, not empty
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_method_is_special_cased_outside_the_registry():
    for name in ("pipeline.py", "sweep.py", "recipes.py", "cli.py", "search.py"):
        source = open(os.path.join(PACKAGE, name), encoding="utf-8").read()
        for literal in ('== "dense"', "== 'dense'", 'method == "', 'method in ("'):
            assert literal not in source, (name, literal)


def test_every_search_setting_is_a_recipe_key_with_the_same_default():
    """One configuration: the recipe's ``search`` section and :class:`tf_awt.SearchConfig` name the
    same settings (``lr`` is ``learning_rate``) with the same defaults, so a new key cannot land in
    one and not the other, and ``Recipe.search_config`` copies them by name."""
    import dataclasses

    from tf_awt.recipes import SEARCH_RECIPE_ONLY, SEARCH_RENAMED, Recipe, SearchSection
    from tf_awt.search_config import SearchConfig

    recipe_keys = {SEARCH_RENAMED.get(f.name, f.name): f.default for f in dataclasses.fields(SearchSection)
                   if f.name not in SEARCH_RECIPE_ONLY}
    library = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
    from_elsewhere = {"density", "method", "attack", "seed"}  # the recipe's top-level keys
    not_in_recipes = {"implementation"}  # the kernel engine's path: chosen automatically for a recipe
    assert set(recipe_keys) == set(library) - from_elsewhere - not_in_recipes
    assert {k: v for k, v in recipe_keys.items()} == {k: library[k] for k in recipe_keys}
    config = Recipe(search=SearchSection(probes=7, lr=0.002, kernel="sketch")).search_config()
    assert (config.probes, config.learning_rate, config.kernel) == (7, 0.002, "sketch")


def test_a_clone_named_tf_awt_imported_from_its_parent_folder_is_the_package(tmp_path):
    """``import tf_awt`` started above a clone named tf_awt finds the clone's folder first; it must
    still be the package (not an empty namespace package without ``tf_awt.recipes``)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.symlink(root, tmp_path / "tf_awt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import tf_awt, tf_awt.recipes; print(tf_awt.__version__, sorted(tf_awt.recipes.bundled_recipes())[0], tf_awt.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, first_recipe, path = proc.stdout.split()
    assert version == __import__("tf_awt").__version__ and first_recipe and path.endswith(os.path.join("tf_awt", "tf_awt", "__init__.py"))
