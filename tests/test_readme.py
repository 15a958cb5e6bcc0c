"""The README's Python example runs as written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes exported/
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("(8, 8, 10, 10)")
    assert abs(float(printed[1].split()[0]) - 0.05) < 1e-3
    zeros = float(printed[-1].split()[0])
    assert abs(zeros - 0.95) < 1e-3 and os.path.exists(tmp_path / "exported" / "saved_model.pb")


def test_readme_keras3_example_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes ticket.keras
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "import keras" in b)
    exec(compile(block, "README.md", "exec"), {})
    module, density = capsys.readouterr().out.split()[-2:]
    assert module.startswith("keras.") and abs(float(density) - 0.05) < 1e-3
    import keras

    assert keras.models.load_model(str(tmp_path / "ticket.keras")).count_params() > 0


def test_readme_lists_every_bundled_recipe_and_where_mlflow_stores_runs():
    from tf_awt.recipes import bundled_recipes

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    listed = re.search(r"RECIPE is a bundled name \(`tf-awt recipes`: ([^)]*)\)", text).group(1)
    names = {name.strip() for name in listed.replace("\n", " ").split(",")}
    assert names == set(bundled_recipes())
    assert "`./mlflow.db` and `./mlruns/`" in text and "run.json" in text
