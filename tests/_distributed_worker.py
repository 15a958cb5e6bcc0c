"""Runs recipes through tf_awt.running.pipeline.Run in this process; used by test_distributed.py.

    python _distributed_worker.py SPEC.json

SPEC: {"recipe": PATH, "distribute": "mirrored" | "multi_worker", "cpus": N,
       "runs": [{"out": DIR, "overrides": ["KEY=VALUE", ...]}, ...]}

With cpus > 1 the process's CPU is split into that many logical devices first (what
MirroredStrategy then mirrors over). For multi_worker, TF_CONFIG comes from the environment.
The runs share one process (one TensorFlow import); one JSON line is printed per run.
"""
import json
import sys

import tensorflow as tf

with open(sys.argv[1], encoding="utf-8") as fh:
    spec = json.load(fh)
if spec.get("cpus", 1) > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["cpus"])

from tf_awt.running.pipeline import Run  # noqa: E402
from tf_awt.running.recipes import load_recipe  # noqa: E402

for item in spec["runs"]:
    recipe = load_recipe(spec["recipe"], [f"distribute={spec['distribute']}", *item.get("overrides", [])])
    run = Run(recipe, item["out"], log=lambda m: print(m, file=sys.stderr))
    summary = run.all()
    print(json.dumps({"out": item["out"], "replicas": run.inputs.strategy.num_replicas_in_sync,
                      "natural_accuracy": summary["natural_accuracy"], "robust_accuracy": summary["robust_accuracy"]}),
          flush=True)
