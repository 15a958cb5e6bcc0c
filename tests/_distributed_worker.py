"""Runs one recipe through tf_awt.pipeline.Run in this process; used by test_distributed.py.

    python _distributed_worker.py RECIPE.yaml OUT DISTRIBUTE [LOGICAL_CPUS [KEY=VALUE ...]]

With LOGICAL_CPUS > 1 the process's CPU is split into that many logical devices first (what
MirroredStrategy then mirrors over). For multi_worker, TF_CONFIG comes from the environment.
"""
import json
import sys

import tensorflow as tf

recipe_path, out, distribute = sys.argv[1:4]
cpus = int(sys.argv[4]) if len(sys.argv) > 4 else 1
if cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)

from tf_awt.pipeline import Run  # noqa: E402
from tf_awt.recipes import load_recipe  # noqa: E402

run = Run(load_recipe(recipe_path, [f"distribute={distribute}", *sys.argv[5:]]), out, log=lambda m: print(m, file=sys.stderr))
summary = run.all()
print(json.dumps({"replicas": run.strategy.num_replicas_in_sync, "natural_accuracy": summary["natural_accuracy"],
                  "robust_accuracy": summary["robust_accuracy"]}))
