"""tf.distribute plumbing shared by the search, the trainer, evaluation and the pipeline."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from tf_awt._options import DISTRIBUTE as STRATEGIES  # noqa: E402  (the allowed names live in one place)

# TensorFlow's collective runtime is per process: a second MirroredStrategy over the same devices
# numbers its all-reduces from the same instance keys as the first and the two collide ("Shape
# mismatch in the collective instance"), and a second MultiWorkerMirroredStrategy is refused. So a
# process makes one strategy per (kind, devices) and every later run (a sweep's cells, a search
# then a training) reuses it.
_STRATEGIES_MADE: dict = {}


def strategy_for(name: str) -> tf.distribute.Strategy:
    """The strategy a recipe's ``distribute`` names.

    * ``none``: the default (one device).
    * ``mirrored``: ``MirroredStrategy`` over every local GPU, or, with no GPU, every logical CPU
      device (one replica unless the process split its CPU with
      ``tf.config.set_logical_device_configuration``).
    * ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.

    A process gets one strategy object per kind and device list, however many runs ask for it
    (TensorFlow's collectives are per process; see ``_STRATEGIES_MADE``).
    """
    if name not in STRATEGIES:
        raise ValueError(f"distribute must be one of {STRATEGIES}. You passed: {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [d.name for d in tf.config.list_logical_devices("CPU")]
        key = ("mirrored", tuple(devices))
        if key not in _STRATEGIES_MADE:
            _STRATEGIES_MADE[key] = tf.distribute.MirroredStrategy(devices)
        return _STRATEGIES_MADE[key]
    config = os.environ.get("TF_CONFIG")
    try:
        cluster = json.loads(config)["cluster"] if config else None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"distribute: multi_worker needs a valid TF_CONFIG (JSON with 'cluster' and 'task'). You passed: {config!r}") from None
    if not cluster:
        raise ValueError("distribute: multi_worker needs TF_CONFIG describing the cluster and this worker's task "
                         "(see docs/distributed.md).")
    key = ("multi_worker", json.dumps(cluster, sort_keys=True))
    if key not in _STRATEGIES_MADE:
        _STRATEGIES_MADE[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES_MADE[key]


def is_chief() -> bool:
    """False only when TF_CONFIG names this process a non-chief task (a worker other than 0 in a
    cluster without a "chief", or any other role); no or malformed TF_CONFIG counts as the chief."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task = config.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        return True
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def assign_in_replica(values_and_vars):
    """``var.assign(value)`` for each pair, from replica or cross-replica context (any strategy).

    In replica context the writes go through ``merge_call`` (as tfmot's wrappers do); every
    replica computes the same value, so the MEAN reduction keeps it (exact for integer counters).
    Do not call it inside ``tf.cond``/``tf.while_loop`` bodies (merge_call cannot cross them).
    """
    if not values_and_vars:
        return tf.no_op()
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.group([var.assign(value) for value, var in values_and_vars])

    def update(strategy, pairs):
        ops = []
        for value, var in pairs:
            reduced = strategy.extended.reduce_to(tf.distribute.ReduceOp.MEAN, value, var)
            ops.append(strategy.extended.update(var, lambda v, x: v.assign(tf.cast(x, v.dtype)), args=(reduced,)))
        return tf.group(ops)

    return context.merge_call(update, args=(values_and_vars,))


def replica_rows(local_rows):
    """(first row of this replica in the global batch, global batch size), from replica context.

    The global batch is the concatenation of the replicas' batches in replica order (how
    ``tf.distribute`` splits a batch); sizes may differ (a last, partial batch).
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    index = tf.cast(context.replica_id_in_sync_group, tf.int32)
    sizes = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.one_hot(index, replicas, dtype=tf.float32) * tf.cast(local_rows, tf.float32))
    sizes = tf.cast(tf.round(sizes), tf.int32)
    return tf.cumsum(sizes, exclusive=True)[index], tf.reduce_sum(sizes)


def all_gather_rows(tensor):
    """The global batch from each replica's rows, on every replica (exact: a sum with zeros).

    Implemented as a SUM all-reduce of zero-padded blocks, which every strategy supports
    (``ReplicaContext.all_gather`` fails under a multi-worker strategy on CPU-only workers).
    """
    tensor = tf.convert_to_tensor(tensor)
    rows = tf.shape(tensor)[0]
    first, total = replica_rows(rows)
    padded = tf.scatter_nd((first + tf.range(rows))[:, None], tensor, tf.concat([[total], tf.shape(tensor)[1:]], axis=0))
    gathered = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, padded)
    return tf.ensure_shape(gathered, [None, *tensor.shape[1:]])
