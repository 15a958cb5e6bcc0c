"""Screenshots of what a user sees in the MLflow UI after ``tf-awt run`` (issue 27).

    python tools/mlflow_screenshots.py [--out docs/screenshots] [--recipe quickstart]

Runs ``tf-awt run RECIPE`` (shortened: 1 search epoch, 2 training epochs, 200 evaluation digits)
into a fresh sqlite store in a temporary folder, starts ``mlflow ui`` on it, finds the experiment,
the run, the registered model version and the logged model through MLflow's REST API, and
photographs their pages with headless Chromium (``chromium`` or ``chromium-headless-shell`` from
the system packages): the experiment's runs table (in both of the UI's modes), the run page
(metrics, parameters, description), the model version page (description, tags) and the logged
model's page (its metrics: the final ones only). Prints what each page's REST record holds beside
the file it wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read().decode())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode())


def _wait(url: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except Exception:
            time.sleep(1)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def _shoot(browser: str, url: str, path: str) -> None:
    headless = [] if browser.endswith("headless-shell") else ["--headless=new"]  # the shell is headless only
    subprocess.run([browser, *headless, "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1440,1100", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=180)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "screenshots"))
    parser.add_argument("--recipe", default="quickstart")
    args = parser.parse_args(argv)
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        raise SystemExit(f"no Chromium found (looked for {', '.join(BROWSERS)}): install the system package "
                         "'chromium' or 'chromium-headless-shell'")
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="tf_awt_screens_")
    store = f"sqlite:///{os.path.join(work, 'mlflow.db')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "tf_awt.running.cli", "run", args.recipe, "--out", os.path.join(work, "run"), "--quiet",
                    "--set", "search.epochs=1", "--set", "train.epochs=2", "--set", "eval.max_examples=200"],
                   check=True, cwd=work, env=env)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base + "/health")
        experiment = _get(base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tf_awt")["experiment"]
        runs = _post(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        run = runs[0]
        name = f"tf_awt-{args.recipe}"
        version = _get(base + f"/api/2.0/mlflow/registered-models/get-latest-versions?name={name}")["model_versions"][0]
        logged = _post(base + "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"][0]
        pages = {
            # MLflow 3's UI opens in its GenAI mode unless told otherwise (the experiment's
            # mlflow.experimentKind tag does not change that): the links tf-awt prints carry the mode.
            "experiment_default_mode.png": f"{base}/#/experiments/{experiment['experiment_id']}",
            "experiment.png": f"{base}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning",
            "run.png": f"{base}/#/experiments/{experiment['experiment_id']}/runs/{run['info']['run_id']}?workflowType=machine_learning",
            "model_version.png": f"{base}/#/models/{name}/versions/{version['version']}",
            "logged_model.png": f"{base}/#/experiments/{experiment['experiment_id']}/models/{logged['info']['model_id']}",
        }
        for file, url in pages.items():
            _shoot(browser, url, os.path.join(args.out, file))
            print(f"{os.path.join(args.out, file)}  <- {url}")
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        print(f"experiment {experiment['name']} kind {dict((t['key'], t['value']) for t in experiment.get('tags', [])).get('mlflow.experimentKind')}")
        print(f"run {run['info']['run_id']}: natural {metrics.get('natural_accuracy')}, robust {metrics.get('robust_accuracy')}")
        print(f"model version {name}/{version['version']}: {version.get('description', '')[:200]}")
        print(f"  its tags ({len(version.get('tags', []))}; the page shows 5): "
              + ", ".join(f"{t['key']}={t['value']}" for t in version.get("tags", [])))
        print(f"logged model {logged['info']['model_id']}: metrics " + ", ".join(m["key"] for m in logged["data"].get("metrics", [])))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
