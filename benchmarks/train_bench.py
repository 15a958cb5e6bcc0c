"""Adversarial training throughput: ``AdversarialTrainer`` via ``model.fit`` against a plain
hand-written ``tf.function`` PGD training step, same model, data, attack and optimizer.

    python benchmarks/train_bench.py [--epochs 2] [--steps 40] [--model mlp]

Both run on the 4,000 MNIST-5k training digits, batch 64, PGD (ε = 0.3, ``--steps`` of 0.01,
random start). One warm-up epoch (tracing) is excluded; samples/s is the median over ``--epochs`` (default 5)
individually timed epochs, and the baseline is timed again at the end to show drift.
Target: tf_awt ≥ 0.9× the hand-written step's throughput.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.adversarial.training import AdversarialTrainer
    import tf_awt.tickets.search

    split = tf_awt.data.load("mnist-5k")
    ds = tf.data.Dataset.from_tensor_slices((split.x_train, split.y_train)).batch(64).cache()
    n = len(split.x_train)
    attack = tf_awt.Attack(eps=0.3, steps=args.steps, step_size=0.01)
    build = tf_awt.models.mlp if args.model == "mlp" else tf_awt.models.paper_cnn

    # --- hand-written baseline
    tf_keras.utils.set_random_seed(0)
    model = build()
    opt = tf_keras.optimizers.Adam(1e-3)
    ce = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def hand_step(x, y):
        adv = x + tf.random.uniform(tf.shape(x), -attack.eps, attack.eps)
        adv = tf.clip_by_value(adv, 0.0, 1.0)
        for _ in range(attack.steps):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                loss = ce(y, model(adv, training=False))
            adv = adv + attack.step_size * tf.sign(tape.gradient(loss, adv))
            adv = tf.clip_by_value(tf.clip_by_value(adv, x - attack.eps, x + attack.eps), 0.0, 1.0)
        with tf.GradientTape() as tape:
            loss = ce(y, model(adv, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def hand_epoch():
        for x, y in ds:
            loss = hand_step(x, y)
        float(loss)

    def timed(epoch_fn):
        t0 = time.perf_counter()
        epoch_fn()
        return n / (time.perf_counter() - t0)

    # --- tf_awt: dense model with cleverhans' PGD (seed=None), with the stateless seeded PGD the
    # pipeline uses (seed=0), and a 5%-density ticket in tfmot wrappers (seed=0)
    def make_trainer(seed, ticket_density=None):
        tf_keras.utils.set_random_seed(0)
        model = build()
        if ticket_density is not None:
            names = tf_awt.tickets.search.prunable_layer_names(model)
            rng = np.random.default_rng(0)
            masks = {layer.name: (rng.random(layer.kernel.shape) < ticket_density).astype("float32")
                     for layer in model.layers if layer.name in names}
            model = tf_awt.Ticket(masks=masks, initial_weights=model.get_weights(), method="random").to_model(model)
        trainer = AdversarialTrainer(model, attack, seed=seed)
        trainer.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
        trainer.fit(ds, epochs=1, verbose=0)  # warm-up: traces
        return lambda: trainer.fit(ds, epochs=1, verbose=0)

    hand_epoch()  # warm-up: traces
    contenders = {
        "tf_awt AdversarialTrainer.fit (dense, cleverhans PGD)": make_trainer(None),
        "tf_awt AdversarialTrainer.fit (dense, seeded stateless PGD, as the pipeline)": make_trainer(0),
        "tf_awt AdversarialTrainer.fit (5% ticket in tfmot wrappers, seeded PGD)": make_trainer(0, 0.05),
    }
    # Interleaved rounds (baseline epoch, then one epoch of each contender): this VM's speed drifts
    # by up to ~20% within a minute, so each ratio is taken within a round, then the median.
    hand_rates, rates, ratios = [], {k: [] for k in contenders}, {k: [] for k in contenders}
    for _ in range(args.epochs):
        hand_rate = timed(hand_epoch)
        hand_rates.append(hand_rate)
        for name, epoch in contenders.items():
            rate = timed(epoch)
            rates[name].append(rate)
            ratios[name].append(rate / hand_rate)

    print(f"# train_bench: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, model {args.model}, "
          f"B=64, PGD-{args.steps}, median of {args.epochs} timed epochs of {n}")
    print("| trainer | median samples/s | median ratio to the baseline epoch of the same round |")
    print("| --- | --- | --- |")
    print(f"| hand-written tf.function PGD step | {statistics.median(hand_rates):.0f} | 1.00 "
          f"(its own spread: {min(hand_rates):.0f}-{max(hand_rates):.0f}) |")
    for name in contenders:
        print(f"| {name} | {statistics.median(rates[name]):.0f} | {statistics.median(ratios[name]):.2f} "
              f"(range {min(ratios[name]):.2f}-{max(ratios[name]):.2f}) |")


if __name__ == "__main__":
    main()
