"""The README's Python examples run as written, from a clean shell, and print what it says."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a python example"
    return blocks


def _run_as_a_user(block, cwd):
    """The block in a fresh ``python -`` from a clean shell (TensorFlow's log-level variables unset):
    what it prints on stdout; its stderr must be empty (no TensorFlow log line, no warning)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-"], input=block, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    return done.stdout


def test_readme_python_example_prints_what_the_readme_says(tmp_path):
    printed = _run_as_a_user(_readme_blocks()[0], tmp_path).splitlines()  # the example writes exported/
    assert printed[0].startswith("(8, 8, 10, 10)")
    assert abs(float(printed[1].split()[0]) - 0.05) < 1e-3
    natural, robust = (float(v.strip(",")) for v in printed[2].split()[1:4:2])  # "natural 0.795, robust 0.630 []"
    assert printed[2].endswith("[]") and natural > 0.6 and 0.4 < robust <= natural  # what the README says it prints
    zeros = float(printed[-1].split()[0])
    assert abs(zeros - 0.95) < 1e-3 and os.path.exists(tmp_path / "exported" / "saved_model.pb")


def test_readme_keras3_example_prints_what_the_readme_says(tmp_path):
    block = next(b for b in _readme_blocks() if "import keras" in b)
    module, density = _run_as_a_user(block, tmp_path).split()[-2:]  # the example writes ticket.keras
    assert module.startswith("keras.") and abs(float(density) - 0.05) < 1e-3
    import keras

    assert keras.models.load_model(str(tmp_path / "ticket.keras")).count_params() > 0


def test_readme_lists_every_bundled_recipe_and_where_mlflow_stores_runs():
    from tf_awt.running.recipes import bundled_recipes

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    listed = re.search(r"RECIPE is a bundled name \(`tf-awt recipes`: ([^)]*)\)", text).group(1)
    names = {name.strip() for name in listed.replace("\n", " ").split(",")}
    assert names == set(bundled_recipes())
    assert "`./mlflow.db` and `./mlruns/`" in text and "run.json" in text


def test_the_readme_is_a_front_door():
    """The quick start within the first 30 lines, and every document it links to exists."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert text.splitlines().index("## Quick start") < 30
    for link in set(re.findall(r"\]\(((?:docs|serving)/[^)#]+)", text)):
        assert os.path.exists(os.path.join(ROOT, link)), link


def test_every_relative_link_in_the_readme_and_docs_resolves():
    """A link from README.md or docs/*.md to a file of the repository (relative to the linking file)
    names a file that exists; an anchor names a heading of it (GitHub's slugs)."""
    pages = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")]
    broken = []
    for page in pages:
        text = open(os.path.join(ROOT, page), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path))
            if not os.path.exists(full):
                broken.append(f"{page}: {target}")
            elif anchor and full.endswith(".md"):
                slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                         for h in re.findall(r"^#+ (.*)$", open(full, encoding="utf-8").read(), flags=re.M)}
                if anchor not in slugs:
                    broken.append(f"{page}: {target} (no such heading)")
    assert not broken, broken


def test_the_readmes_own_data_layout_is_what_a_run_reads(tmp_path):
    """README "Your own data": x in [0, 1] and integer y; x_test/y_test is the test split, else 20%
    of the file is held out; `--set dataset=FILE.npz` runs on it (the CLI, checked before training)."""
    import numpy as np

    import tf_awt
    from tf_awt.running import cli

    text = " ".join(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().split())
    assert "an optional `x_test`/`y_test` pair is the test split, else 20% of the file is held out" in text
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (50, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 50)
    np.savez(tmp_path / "only.npz", x=x, y=y)
    np.savez(tmp_path / "both.npz", x=x[:40], y=y[:40], x_test=x[40:], y_test=y[40:])
    only, both = tf_awt.data.load(str(tmp_path / "only.npz")), tf_awt.data.load(str(tmp_path / "both.npz"))
    assert (len(only.y_train), len(only.y_test)) == (40, 10)
    assert (len(both.y_train), len(both.y_test)) == (40, 10) and np.array_equal(both.x_test, x[40:])
    np.savez(tmp_path / "bad.npz", x=x * 255, y=y)  # pixels in [0, 255]: refused in one line, nothing written
    assert cli.main(["run", "--set", f"dataset={tmp_path / 'bad.npz'}", "--out", str(tmp_path / "run"), "--no-mlflow"]) == 2
    assert not (tmp_path / "run").exists()


def test_without_quiet_the_same_shell_shows_tensorflow_log_lines(tmp_path):
    """The control of the README tests' empty stderr: the first example's imports without
    ``tf_awt.quiet()`` print TensorFlow's log lines in the same clean shell, so the silence there is
    ``quiet()``'s doing (the README examples call it, then the whole API)."""
    block = _readme_blocks()[0]
    imports = block[:block.index("tf_keras.utils.set_random_seed")].replace("tf_awt.quiet()", "pass")
    assert "import tf_keras" in imports
    with pytest.raises(AssertionError, match="oneDNN|I0000|absl|cuInit"):
        _run_as_a_user(imports, tmp_path)
