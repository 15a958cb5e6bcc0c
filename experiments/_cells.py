"""One experiment cell: ``tf-awt run RECIPE --set ...`` into a directory, skipped when it finished."""
import json
import os
import subprocess
import sys


def tf_awt_run(recipe: str, out: str, overrides) -> dict:
    """Runs (or resumes) ``tf-awt run recipe --out out --set ...`` unless ``out/summary.json`` exists;
    returns the summary. A collapsed training (exit code 3) is a result, any other failure stops."""
    summary = os.path.join(out, "summary.json")
    if not os.path.exists(summary):
        args = [sys.executable, "-m", "tf_awt.running.cli", "run", recipe, "--out", out, "--quiet", "--no-mlflow"]
        for item in overrides:
            args += ["--set", item]
        print(" ".join(args), flush=True)
        code = subprocess.call(args)
        if code not in (0, 3):
            raise SystemExit(f"{out}: tf-awt exited with {code}")
    return json.load(open(summary))
