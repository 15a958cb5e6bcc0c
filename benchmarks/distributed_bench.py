"""Search and training epochs on one device vs MirroredStrategy over N logical CPU devices.

    python benchmarks/distributed_bench.py [--replicas 2] [--steps 20]

The paper MLP on MNIST-5k batches (global batch 64): times ``--steps`` search steps (AWT, PGD-10,
full MTK, density 5%) and ``--steps`` adversarial-training steps (PGD-10) with ``fit``, after a
warm-up epoch that traces, on the default strategy and on ``MirroredStrategy`` over ``--replicas``
logical CPU devices carved out of this machine's CPU. Logical devices share the same cores, so
this measures the overhead of the distributed code path and what splitting work across replicas
buys on one host's cores; it says nothing about several GPUs or machines.
"""
from __future__ import annotations

import argparse
import os
import platform
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    import tf_keras

    import tf_awt
    from tf_awt.adversarial.training import AdversarialTrainer
    from tf_awt.checkpoint import epoch_batches

    split = tf_awt.data.load("mnist-5k")
    x, y = split.x_train[: 64 * args.steps], split.y_train[: 64 * args.steps]
    attack = tf_awt.Attack(eps=0.1, steps=10, step_size=0.025)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategies = {"one device": tf.distribute.get_strategy(), f"mirrored x{args.replicas}": tf.distribute.MirroredStrategy(devices)}
    rows = []
    for name, strategy in strategies.items():
        with strategy.scope():
            tf_keras.utils.set_random_seed(0)
            model = tf_awt.models.mlp()
            config = tf_awt.SearchConfig.from_settings(dict(density=0.05, attack=attack, update_every=20, epochs=2))
            search = tf_awt.TicketSearch(model, config, steps_per_epoch=args.steps)
            search.compile(optimizer=tf_keras.optimizers.Adam(5e-4))
        search.fit(epoch_batches(x, y, 64, 0, 0, 1), epochs=1, steps_per_epoch=args.steps, verbose=0)  # warm-up, traces
        t0 = time.perf_counter()
        search.fit(epoch_batches(x, y, 64, 0, 1, 2), initial_epoch=1, epochs=2, steps_per_epoch=args.steps, verbose=0)
        search_s = (time.perf_counter() - t0) / args.steps
        with strategy.scope():
            ticket = search.ticket()
            sparse = ticket.to_model(tf_awt.models.mlp())
            trainer = AdversarialTrainer(sparse, attack, seed=0)
            trainer.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
        trainer.fit(epoch_batches(x, y, 64, 0, 0, 1), epochs=1, steps_per_epoch=args.steps, verbose=0)
        t0 = time.perf_counter()
        trainer.fit(epoch_batches(x, y, 64, 0, 1, 2), initial_epoch=1, epochs=2, steps_per_epoch=args.steps, verbose=0)
        train_s = (time.perf_counter() - t0) / args.steps
        rows.append((name, search_s, train_s))
    base = rows[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; TensorFlow {tf.__version__}")
    print(f"{args.steps} steps each, global batch 64, MLP 784-300-100-10, PGD-10, density 5%\n")
    print("| strategy | search s/step | vs one device | training s/step | vs one device |")
    print("| --- | --- | --- | --- | --- |")
    for name, search_s, train_s in rows:
        print(f"| {name} | {search_s:.3f} | {base[1] / search_s:.2f}x | {train_s:.4f} | {base[2] / train_s:.2f}x |")


if __name__ == "__main__":
    main()
