"""MLflow tracking (tf_awt.running.tracking) beyond the CLI's tracked runs: a fresh local store under concurrent first use."""
import subprocess
import sys


def test_concurrent_runs_can_create_the_same_local_mlflow_store(tmp_path):
    # Seen for real: two `tf-awt sweep`s started together on a fresh mlflow.db, one died in MLflow's schema
    # migration ("Online migration expected to match one row"). The store's first use is now serialized.
    script = ("import sys\nfrom tf_awt.running.tracking import Tracker\nfrom tf_awt.running.recipes import load_recipe\n"
              "t = Tracker(tracking_uri=sys.argv[1])\nt.start(load_recipe('quickstart'), 'quickstart')\nt.end()\nprint('ok')\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", script, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tf_awt")
    assert len(client.search_runs([experiment.experiment_id])) == 4
