"""The paper's settings in one place (plain numbers; importing this does not import TensorFlow).

Every default that reproduces the paper reads from here: the attacks of the search, of adversarial
training and of evaluation (:class:`tf_awt.Attack`, :class:`tf_awt.SearchConfig`,
:func:`tf_awt.adversarial.training.training_attack`, :func:`tf_awt.adversarial.evaluation.evaluation_attack`, the recipes' defaults), and the
names of the paper's search methods (every method is registered in :mod:`tf_awt.tickets.methods`).
"""

__all__ = ["SEARCH_METHODS", "OPTIMIZE", "ATTACKS"]

SEARCH_METHODS = ("awt", "ntt")
"""Methods that search the mask by training a student (:class:`tf_awt.TicketSearch`)."""
OPTIMIZE = ("weights", "scores")
"""What an AWT/NTT search optimizes: the weights w (Algorithm 1, the mask is top-k |w| every T_m
steps) or the scores s of a straight-through top-k mask, with w fixed at θ0."""

ATTACKS = {
    # phase -> data-set family -> (eps, steps, step size; None = 2.5·eps/steps)
    "search": {"mnist": (0.3, 10, 0.075), "cifar": (8 / 255, 10, 2 / 255)},
    "train": {"mnist": (0.3, 40, 0.01), "cifar": (8 / 255, 10, 2 / 255)},
    "eval": {"mnist": (0.3, 100, None), "cifar": (8 / 255, 100, None)},
}
"""L∞ PGD of the paper per phase: MNIST ε = 0.3 (search PGD-10 step 0.075, training PGD-40 step
0.01), CIFAR ε = 8/255 (PGD-10 step 2/255); evaluation PGD-100 with step 2.5ε/100 (Madry et al.)."""


def attack_numbers(phase: str, dataset: str = "mnist"):
    """(eps, steps, step_size) of the paper's ``phase`` attack for a data set name."""
    family = "cifar" if dataset.startswith("cifar") else "mnist"
    return ATTACKS[phase][family]
