"""ART's AutoAttack (Croce & Hein, 2020): the independent cross-check of the native one.

The default evaluation runs the native standard AutoAttack (:mod:`tf_awt.adversarial.apgd`,
:mod:`tf_awt.adversarial.square`). This suite (``attacks=["art-autoattack"]``) needs the
``adversarial-robustness-toolbox`` package (``pip install "tf_awt[autoattack]"``); tf_awt imports
it only when the suite is asked for. It is ART's ``AutoAttack`` with an explicit attack list: APGD with cross-entropy loss and APGD with the DLR loss
(``apgd_iterations`` iterations, default 100, and ``apgd_restarts`` random restarts, default 5,
each; DLR needs at least 3 classes) and the black-box Square attack (``square_queries`` queries,
default 1,000; image inputs only), each run on the examples that are still robust. A
gradient-free attack in the suite is what exposes gradient masking that fools every PGD variant.
ART's DeepFool (in ART's default list) is left out: it is not ε-bounded.

:func:`autoattack` returns the adversarial inputs; :func:`tf_awt.evaluate` checks them itself (inside the ε-ball and the data range) before counting them.

ART (an optional dependency) is imported inside the functions that use it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["autoattack", "art_classifier"]


def art_classifier(forward, input_shape, num_classes: int, attack):
    """``forward`` (inputs -> logits) as ART's ``TensorFlowV2Classifier`` on ``attack``'s data range."""
    try:
        from art.estimators.classification import TensorFlowV2Classifier
    except ImportError:
        raise ImportError("the ART cross-check needs the adversarial-robustness-toolbox package: "
                          "pip install \"tf_awt[autoattack]\" (or adversarial-robustness-toolbox)") from None
    import tensorflow as tf
    import tf_keras

    clip = None
    if attack.clip_min is not None and attack.clip_max is not None:
        clip = (float(attack.clip_min), float(attack.clip_max))

    def model(inputs, training=False):
        z = tf.convert_to_tensor(inputs, tf.float32)
        # a zero-weight path keeps the input connected: an input gradient of zero, never None
        return forward(z) + 0.0 * tf.reduce_sum(tf.reshape(z, [tf.shape(z)[0], -1]), axis=1, keepdims=True)

    return TensorFlowV2Classifier(model=model, nb_classes=int(num_classes), input_shape=tuple(input_shape),
                                  loss_object=tf_keras.losses.CategoricalCrossentropy(from_logits=True),
                                  clip_values=clip)


def autoattack(forward, x, y, attack, num_classes: int, batch_size: int = 256, square_queries: int = 1000,
               apgd_iterations: int = 100, apgd_restarts: int = 5) -> np.ndarray:
    """AutoAttack adversarial inputs for ``x`` (labels ``y``) against ``forward`` (inputs -> logits).

    Args:
      forward: callable inputs -> logits (a tf_keras model or a function of one).
      x, y: numpy inputs and integer labels.
      attack: a :class:`tf_awt.Attack` giving norm, ε and the data range.
      num_classes: number of logits.
      batch_size: attack batch size (default 256).
      square_queries: Square attack iterations (default 1000).
      apgd_iterations: iterations of each APGD attack (default 100).
      apgd_restarts: random restarts of each APGD attack (default 5).
    """
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    if attack.eps <= 0:
        return np.array(x, copy=True)
    norm = np.inf if attack.norm == "linf" else 2
    classifier = art_classifier(forward, x.shape[1:], num_classes, attack)
    step = 2 * attack.eps / 10  # APGD adapts its step; this is its initial value (2ε, halved as needed, per Croce & Hein)
    losses = ["cross_entropy"] + (["difference_logits_ratio"] if num_classes >= 3 else [])
    attacks = [AutoProjectedGradientDescent(estimator=classifier, norm=norm, eps=attack.eps, eps_step=step,
                                            max_iter=int(apgd_iterations), targeted=False,
                                            nb_random_init=int(apgd_restarts), batch_size=batch_size, loss_type=loss,
                                            verbose=False)
               for loss in losses]
    if np.ndim(x) == 4:  # ART's Square attack runs on images (N, H, W, C) only
        attacks.append(SquareAttack(estimator=classifier, norm=norm, eps=attack.eps, max_iter=int(square_queries),
                                    nb_restarts=1, batch_size=batch_size, verbose=False))
    suite = AutoAttack(estimator=classifier, norm=norm, eps=attack.eps, eps_step=step, attacks=attacks, batch_size=batch_size)
    return suite.generate(x=np.asarray(x, np.float32), y=np.eye(int(num_classes), dtype=np.float32)[np.asarray(y)])
