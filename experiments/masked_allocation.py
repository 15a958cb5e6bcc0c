"""The fair run's masked 1.8% allocation at test size (docs/results.md section 9, issue 36).

    python experiments/masked_allocation.py 1000 30 0.3 200    # training digits, epochs, ε, test digits

For seeds 0 and 1: a magnitude ticket at section 7's AWT layer densities (0.13% / 13% / 51%),
adversarially trained on the first N mnist-5k training digits at ε (PGD-10, step ε/4, ε warm-up
over a tenth of the epochs), then evaluated on the first test digits twice: the default worst case
(PGD-20, APGD-CE-20, APGD-T-20, Square-300) and PGD-only. Prints each suite's figure and the warnings.
"""
import sys
import time
import warnings

import tf_awt
import tf_keras
from tf_awt.adversarial.evaluation import evaluation_attack

tf_awt.quiet()
warnings.simplefilter("ignore")
n_train, epochs, eps, n_test = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
split = tf_awt.data.load("mnist-5k")
x, y = split.x_train[:n_train], split.y_train[:n_train]
budget = dict(steps=20, restarts=1, apgd_iterations=20, fab_iterations=20, square_queries=300)
for seed in (0, 1):
    tf_keras.utils.set_random_seed(seed)
    model = tf_awt.models.mlp()
    t = time.time()
    ticket = tf_awt.find_ticket(model, (x[:64], y[:64]), density=0.018, method="magnitude",
                                layer_densities=[0.0013, 0.13, 0.51])
    sparse = ticket.to_model(model)
    tf_awt.adversarial_fit(sparse, (x, y), attack=tf_awt.Attack(eps=eps, steps=10, step_size=eps / 4), seed=seed,
                           config=tf_awt.TrainConfig(epochs=epochs, eps_warmup_epochs=max(1, epochs // 10)))
    data = (split.x_test[:n_test], split.y_test[:n_test])
    attack = evaluation_attack(eps=eps, steps=20)
    worst = tf_awt.evaluate(sparse, data, attack=attack, config=tf_awt.EvalConfig(**budget))
    print(seed, f"{time.time() - t:.0f} s", "natural", worst.natural_accuracy, "worst case", worst.robust_accuracy,
          worst.suites, worst.warnings, flush=True)
    pgd_only = tf_awt.evaluate(sparse, data, attack=attack, config=tf_awt.EvalConfig(attacks=("pgd",), **budget))
    print("  PGD-only", pgd_only.robust_accuracy, pgd_only.warnings, flush=True)
