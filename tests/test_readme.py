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
    natural, robust = (float(v.strip(",")) for v in printed[2].split()[1:4:2])  # "natural 0.795, robust 0.630 []"
    assert printed[2].endswith("[]") and natural > 0.6 and 0.4 < robust <= natural  # what the README says it prints
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


def test_quiet_silences_tensorflow_for_the_python_api(tmp_path):
    """``tf_awt.quiet()`` then the API: no TensorFlow log line on stderr (without it there are some)."""
    import subprocess
    import sys

    script = ("import tf_awt{quiet}\n"
              "split = tf_awt.data.load('mnist-5k')\n"
              "ticket = tf_awt.find_ticket(tf_awt.models.mlp(), (split.x_train[:64], split.y_train[:64]), "
              "density=0.05, method='magnitude')\n"
              "print(round(ticket.density, 3))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    runs = {q: subprocess.run([sys.executable, "-c", script.format(quiet=q)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300) for q in ("; tf_awt.quiet()", "")}
    quiet, loud = runs["; tf_awt.quiet()"], runs[""]
    assert quiet.returncode == loud.returncode == 0 and quiet.stdout.strip() == "0.05"
    assert quiet.stderr == ""
    assert loud.stderr.strip()  # the control: TensorFlow does print here without quiet()
