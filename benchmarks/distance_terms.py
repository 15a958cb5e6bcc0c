"""Magnitudes of the two AWT loss terms under each weighting, measured on real data.

    python benchmarks/distance_terms.py [--density 0.05] [--steps 63]

Runs the AWT search on the MNIST-5k training split (paper MLP, B=64, PGD-10 with ε = 0.3) under
(a) eq. (13) as written: per-example normalization, kernel weight γ² = 1e-6, and (b) NTT's code:
per-entry means, kernel weight 1e-3. Prints the target distance and the *weighted* kernel
distance at the first and last steps, and the kernel term's share of the loss.
"""
import argparse
import os


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=63)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import tf_keras

    import tf_awt
    from tf_awt.tickets.search import TicketSearch
    from tf_awt.tickets.search_callback import TicketSearchCallback

    split = tf_awt.data.load("mnist-5k")
    ds = tf.data.Dataset.from_tensor_slices((split.x_train, split.y_train)).batch(64).take(args.steps)
    attack = tf_awt.Attack(eps=0.3, steps=10, step_size=0.075)
    settings = {
        "eq. 13 (per_example, gamma^2 = 1e-6)": dict(normalization="per_example", kernel_weight=None),
        "NTT code (per_entry, weight 1e-3)": dict(normalization="per_entry", kernel_weight=1e-3),
    }
    print(f"# distance_terms: MNIST-5k, MLP 784-300-100-10, density {args.density}, {args.steps} steps of 64, PGD-10 eps 0.3")
    print("| weighting | step | target distance | weighted kernel distance | kernel share of loss |")
    print("| --- | --- | --- | --- | --- |")
    for label, kw in settings.items():
        tf_keras.utils.set_random_seed(0)
        config = tf_awt.SearchConfig.from_settings(dict(density=args.density, attack=attack, epochs=1, update_every=20, **kw))
        search = TicketSearch(tf_awt.models.mlp(), config, steps_per_epoch=args.steps)
        search.compile(optimizer=tf_keras.optimizers.Adam(config.options.learning_rate))
        cb = TicketSearchCallback()
        search.fit(ds, epochs=1, verbose=0, callbacks=[cb])
        h = cb.history
        for i in (0, len(h["step"]) - 1):
            td, wk = h["target_distance"][i], h["weighted_kernel_distance"][i]
            print(f"| {label} | {h['step'][i]} | {td:.4g} | {wk:.4g} | {wk / (td + wk):.1%} |")


if __name__ == "__main__":
    main()
