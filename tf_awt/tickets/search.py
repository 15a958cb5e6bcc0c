r"""Ticket search at initialization: AWT (Algorithm 1, eq. 13) as a Keras model trained by ``fit``.

:class:`TicketSearch` holds the frozen dense teacher :math:`f_{\theta_0}` and the sparse student
:math:`f_{m \odot w}` (a tfmot-pruned copy: the masks live in its ``PruneLowMagnitude`` wrappers).
Each ``train_step`` on a batch :math:`(X, Y)`:

1. :math:`\tilde X_0 = \mathrm{PGD}(X)` against the teacher, :math:`\tilde X^s_0 = \mathrm{PGD}(X)`
   against the current student (ε = 0: both are X, Neural Tangent Transfer);
2. loss = target_distance(:math:`f_{\theta_0}(\tilde X_0), f_{m\odot w}(\tilde X^s_0)`)
   + kernel_weight · kernel_distance(:math:`\Theta_0(X, \tilde X_0), \Theta^s(X, \tilde X^s_0)`)
   + weight_decay · :math:`\lVert m \odot w \rVert^2`, with kernel_weight = γ² by default (eq. 13);
3. one optimizer step on w;
   under a ``tf.distribute`` strategy each replica attacks its rows X_r of the global batch,
   the adversarial batches are all-gathered, and each replica computes its row block of the
   *global* kernels, Θ(X_r, X̃_all), and its share of both distances (scaled to the global N);
   the optimizer's all-reduce sums the shares' gradients into the exact global gradient. Not a
   per-replica estimate: the kernel distance couples all pairs of examples, and a block-diagonal
   estimate would change the objective with the number of replicas;
4. if the :class:`~tf_awt.tickets.pruning_schedule.AWTSchedule` says so (every ``update_every`` = T_m steps until the
   last search step), m = top-k magnitudes of w (global over all prunable kernels by default,
   every layer first keeping as many of its top weights as it has output units; ``scope="layer"``: the density in
   every layer; ``scope="erk"``: at Erdős–Rényi-Kernel layer densities).

**Optimizing the mask itself** (``optimize="scores"``). Algorithm 1 learns w and reads the mask
off |w|; for a linear model :math:`f(x) = (m \odot w)^\top x` the masked kernel
:math:`\Theta^s(x, x') = \sum_p m_p x_p x'_p` does not depend on w at all, so the kernel term
cannot steer the choice of m. The paper's objective (appendix eq. A.5) is a minimization over
m; with ``optimize="scores"`` every prunable weight gets a real score :math:`s_p` (initialized to
:math:`|\theta_{0,p}|`, so :math:`m_0` is Algorithm 1's), the student is
:math:`f(m(s) \odot \theta_0)` with

.. math::

    m(s) = \mathrm{topk}(s) + s - \mathrm{sg}(s)

(the exact 0/1 top-k mask of the same ``scope`` forward, the identity backward: a
straight-through estimator as in edge-popup, Ramanujan et al. 2020, and HYDRA, Sehwag et al.
2020), and the same loss, target + kernel distance, is minimized over s. The student kernel is the
masked MTK :math:`\Theta^s = \sum_p m_p\,\partial_p f(X)\,\partial_p f(\tilde X^s)^\top` evaluated at
:math:`m \odot \theta_0`; it depends on m both through the factor :math:`m_p` and through the
evaluation point, so the kernel distance's gradient reaches every score, kept or pruned. The mask
is re-derived from s at every step (``update_every`` applies to ``optimize="weights"``); w stays
at θ0. The scores' gradient is divided by its root mean square over all scores before the
optimizer step, and :func:`search_optimizer` gives scores SGD with momentum 0.9 (edge-popup's and
HYDRA's choice): Adam would move every score by about the learning rate whatever its gradient,
which keeps the ranking of |θ0| and cannot bring in a weight that starts far behind; SGD on the
normalized gradient keeps the gradients' relative sizes, and the learning rate is the root mean
square of one step's change in the scores whatever the loss's scale.

:class:`~tf_awt.tickets.search_callback.TicketSearchCallback` records both distances per step and,
at the end, rewinds the student to θ0 keeping the masks, so the student *is* the ticket.
:func:`~tf_awt.tickets.find.find_ticket` is the functional entry point for every method.

Weighting: eq. (13) writes γ²/N² with γ = 1e-3 (``normalization="per_example"``,
``kernel_weight=None`` → γ² = 1e-6). NTT's public code weighs the kernel distance by 1e-3
unsquared and averages both distances over their entries (``normalization="per_entry"``,
``kernel_weight=1e-3``). Both are options; the per-step logs carry both terms' magnitudes.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tf_awt import _internals
from tf_awt.engine import _layers, layer_rules
from tf_awt.tickets import _selection
from tf_awt._distribute import all_gather_rows, assign_in_replica, replica_rows
from tf_awt.engine._masks import resolve_masks, sparse_forward
from tf_awt.engine.passes import count_forward
from tf_awt.adversarial.attacks import pgd
from tf_awt.engine.distances import kernel_distance, target_distance
from tf_awt.engine.kernel import mixed_tangent_kernel_fn
from tf_awt.engine.kernel_sketch import draw_probes, sketch_distance, tangent_products_fn
from tf_awt.tickets.pruning_schedule import AWTSchedule
from tf_awt.tickets.ticket import Ticket
from tf_awt.paper import SEARCH_METHODS
from tf_awt.tickets.search_config import SearchConfig  # its own module: validated without TensorFlow
from tf_awt.keras3 import as_tf_keras

__all__ = ["TicketSearch", "search_optimizer", "prunable_layer_names", "check_model", "REWINDS"]

REWINDS = ("init", "learned")


def prunable_layer_names(model) -> List[str]:
    """Names of the layers whose weights a ticket masks: every layer whose rule in
    :mod:`tf_awt.engine.layer_rules` prunes a weight (Dense and Conv2D, and any registered rule)."""
    names = [layer.name for layer in layer_rules.prunable_layers(model)]
    if not names:
        raise ValueError(
            f"model {model.name!r} has no prunable layers (no trainable layer with a tf_awt layer rule that prunes, "
            f"e.g. Dense or Conv2D). Its layers: {[layer.name for layer in _layers.iter_layers(model)]}"
        )
    return names


def check_model(model):
    """``model`` as a built tf_keras model (a Keras 3 model is converted: :mod:`tf_awt.keras3`)."""

    model = as_tf_keras(model)
    if not isinstance(model, tf_keras.Model):
        raise ValueError("model must be a tf_keras.Model (Keras 2, as tfmot needs) or a Keras 3 model of convertible layers. "
                         f"You passed: {type(model).__module__}.{type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} must be built (give it an Input). You passed an unbuilt model.")
    return model


def _student_from(model, schedule: AWTSchedule, names: Sequence[str]):
    plain = tf_keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    return layer_rules.clone_wrapping(plain, names, schedule)


def search_optimizer(config: SearchConfig):
    """The search's optimizer: Adam(``learning_rate``) for the weights (Algorithm 1), SGD with
    momentum 0.9 for the scores (``optimize="scores"``; see the module docstring)."""
    if config.options.optimize == "scores":
        return tf_keras.optimizers.SGD(config.options.learning_rate, momentum=0.9)
    return tf_keras.optimizers.Adam(config.options.learning_rate)


class TicketSearch(tf_keras.Model):
    """Finds an adversarial winning ticket of ``model`` with ``fit`` (see the module docstring).

    Args:
      model: a built tf_keras model at its initialization θ0 (logit outputs). It is not modified.
      config: a :class:`SearchConfig` (method "awt" or "ntt").
      steps_per_epoch: batches per epoch; with ``config.epochs`` it fixes the last step at which
        the mask may change (default None: the mask never freezes by itself).

    After ``fit`` with a :class:`TicketSearchCallback`, ``student`` is the ticket (θ0 ⊙ m) and
    :meth:`ticket` returns it as a :class:`~tf_awt.Ticket`.
    """

    def __init__(self, model, config: SearchConfig, steps_per_epoch: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        model = check_model(model)
        if config.method not in SEARCH_METHODS:
            raise ValueError(f"TicketSearch runs methods 'awt' and 'ntt'. You passed: {config.method!r}")
        self.config = config
        self.names = prunable_layer_names(model)
        self.initial_weights = [np.array(w, copy=True) for w in model.get_weights()]
        end_step = -1 if steps_per_epoch is None else int(steps_per_epoch) * config.epochs
        self.schedule = AWTSchedule(config.density, config.options.update_every, end_step=end_step)
        self.teacher = tf_keras.models.clone_model(model)
        self.teacher.set_weights(self.initial_weights)
        self.student = _student_from(model, self.schedule, self.names)
        self._wrappers = [l for l in _layers.iter_layers(self.student) if _layers.is_prune_wrapper(l)]
        self.layer_densities = _selection.layer_allocation(config, [w.layer.kernel.shape for w in self._wrappers], self.names)
        # optimize="scores": one real score per prunable weight, s = |θ0| (so m_0 is Algorithm 1's)
        self.scores = [] if config.options.optimize == "weights" else [
            tf.Variable(tf.abs(w.layer.kernel), trainable=True, name=f"{w.layer.name}_score") for w in self._wrappers]
        if config.options.kernel == "sketch":  # Θ·v products only: no kernel matrix, no layer rule
            self._teacher_kernel = tangent_products_fn(self.teacher)
            self._student_kernel = tangent_products_fn(self.student, config.options.student_kernel)
        else:
            self._teacher_kernel = mixed_tangent_kernel_fn(self.teacher, config.implementation, precision=config.options.precision)
            self._student_kernel = mixed_tangent_kernel_fn(self.student, config.implementation, precision=config.options.precision)
        self.step_values = {
            name: tf.Variable(0.0, trainable=False, name=f"last_{name}")
            for name in ("loss", "target_distance", "kernel_distance", "weighted_kernel_distance")
        }
        self.mask_updates = tf.Variable(0, trainable=False, dtype=tf.int64, name="mask_updates")
        self.teacher_cache = None  # a TeacherCache (search.teacher_cache): run_search builds it before fit
        self._trackers = {name: tf_keras.metrics.Mean(name=name) for name in self.step_values}
        self.update_masks()  # m_0 = top-k magnitudes of θ0
        self.mask_updates.assign(0)

    # ------------------------------------------------------------------ masks
    @property
    def mask_variables(self) -> Dict[str, tf.Variable]:
        return {w.layer.name: _layers.unwrap(w)[1] for w in self._wrappers}

    @property
    def optimized_variables(self) -> List[tf.Variable]:
        """What the optimizer updates: the student's weights or the scores (``config.options.optimize``)."""
        weights = list(self.student.trainable_variables)
        return list(self.scores) if self.scores else weights

    def _mask_scores(self) -> List[tf.Tensor]:
        """What the mask is the top-k of: |w| (Algorithm 1) or the scores."""
        if self.scores:
            return [tf.convert_to_tensor(s) for s in self.scores]
        return [tf.abs(w.layer.kernel) for w in self._wrappers]

    def straight_through_masks(self) -> Dict[str, tf.Tensor]:
        """m(s) by wrapper name: the current top-k of the scores, with the identity gradient to s."""
        c = self.config
        masks = _selection.straight_through_masks(self._mask_scores(), c.density, c.scope, c.pattern, self.layer_densities)
        return {w.name: m for w, m in zip(self._wrappers, masks)}

    def _top_k(self):
        c = self.config
        return _selection.top_k_masks(self._mask_scores(), c.density, c.scope, c.pattern, self.layer_densities)

    def update_masks(self):
        """m = top-k of the current scores: |w| (Algorithm 1) or s (``optimize="scores"``), by ``config.scope``."""
        new = self._top_k()
        for (_, mask, _), value in zip((_internals.pruning_vars(w)[0] for w in self._wrappers), new):
            mask.assign(tf.cast(value, mask.dtype))
        self.mask_updates.assign_add(1)
        return tf.constant(True)

    def _select_masks(self, should_update):
        """:meth:`update_masks` when ``should_update``, from replica context (no control flow)."""
        new = self._top_k()
        pairs = []
        for (_, mask, _), value in zip((_internals.pruning_vars(w)[0] for w in self._wrappers), new):
            pairs.append((tf.where(should_update, tf.cast(value, mask.dtype), mask), mask))
        pairs.append((self.mask_updates + tf.cast(should_update, tf.int64), self.mask_updates))
        assign_in_replica(pairs)

    # ------------------------------------------------------------------ forward / step
    def _student_fn(self, x):
        return sparse_forward(self.student, x)

    def call(self, inputs, training=False):
        return self._student_fn(inputs)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _adversarial_inputs(self, x, y, index=None):
        """(X̃0, f_θ0(X̃0), X̃ˢ0): the PGD inputs of teacher and student, random starts stateless in
        (seed, step); the teacher's from ``teacher_cache`` when the batch carries its ``index``."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        seed = 2 * int(self.config.seed)
        if self.teacher_cache is not None and index is not None:
            x_adv_t, f_t = self.teacher_cache.lookup(index)
        else:
            x_adv_t = pgd(self._teacher_fn, x, y, self.config.effective_attack, seed=tf.stack([tf.constant(seed, tf.int64), step]))
            f_t = self._teacher_fn(x_adv_t)
        x_adv_s = pgd(self._student_fn, x, y, self.config.student_attack, seed=tf.stack([tf.constant(seed + 1, tf.int64), step]))
        return x_adv_t, tf.stop_gradient(f_t), x_adv_s

    def _teacher_fn(self, z):
        return count_forward(self.teacher(z, training=False), z)

    def _replica_share(self, x, x_adv_t, x_adv_s):
        """(target scale, kernel scale, kernel columns X̃ of teacher and student) for this replica.

        With several replicas each computes its rows of the global batch's kernels, Θ(X_r, X̃_all)
        (or the diagonal Θ(X_r, X̃_r)); the distances are sums over rows, so partial sums scaled to
        the global N add up (in the optimizer's gradient all-reduce) to the exact global loss.
        """
        one = tf.constant(1.0, x.dtype)
        if self._replicas() == 1:
            return one, one, x_adv_t, x_adv_s
        _, total = replica_rows(tf.shape(x)[0])
        fraction = tf.cast(tf.shape(x)[0], x.dtype) / tf.cast(total, x.dtype)
        kernel_scale = fraction * fraction if self.config.normalization == "per_example" else fraction
        if self.config.options.kernel == "diagonal":
            return fraction, kernel_scale, x_adv_t, x_adv_s
        return fraction, kernel_scale, all_gather_rows(x_adv_t), all_gather_rows(x_adv_s)

    @staticmethod
    def _replicas() -> int:
        context = tf.distribute.get_replica_context()
        return context.num_replicas_in_sync if context is not None else 1

    def _probes(self, columns, k, dtype):
        """The sketch's Rademacher probes of this step, stateless in [−1 − seed, step] (a stream the
        PGD starts [2·seed, step], [2·seed + 1, step] do not use): a resumed search repeats them."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(-1 - int(self.config.seed), tf.int64), step])
        return draw_probes(seed, self.config.options.probes, columns, k, dtype)

    def _teacher_ntk(self, x, x_cols_t, probes):
        """The teacher's kernel Θ0(X, X̃0), or its products Θ0·v with the probes: a constant."""
        if probes is not None:
            return tf.stop_gradient(self._teacher_kernel(x, x_cols_t, probes))
        return tf.stop_gradient(self._teacher_kernel(x, x_cols_t, diagonal=self.config.options.kernel == "diagonal"))

    def _student_terms(self, x, x_adv_s, x_cols_s, probes=None):
        """The student's logits and kernel (or its products Θˢ·v): f(m ⊙ w) or, optimizing scores, f(m(s) ⊙ θ0)."""
        masks = self.straight_through_masks() if self.scores else None  # they carry the gradient to s
        if masks is not None:
            f_s = count_forward(_layers.masked_forward(self.student, x_adv_s, resolve_masks(self.student, masks)), x_adv_s)
        else:
            f_s = self._student_fn(x_adv_s)
        if probes is not None:
            return f_s, self._student_kernel(x, x_cols_s, probes, masks=masks)
        diagonal = self.config.options.kernel == "diagonal"
        return f_s, self._student_kernel(x, x_cols_s, masks=masks, diagonal=diagonal, student_kernel=self.config.options.student_kernel)

    def _kernel_distance(self, theta_t, theta_s, columns):
        if self.config.options.kernel == "sketch":
            return sketch_distance(theta_t, theta_s, columns, self.config.normalization)[0]
        return kernel_distance(theta_t, theta_s, self.config.normalization)

    def _weight_decay(self, dtype):
        """The decay term of the loss: β·‖m⊙w‖² ("l2") or (λ/density)·‖m⊙w‖² ("l2_per_density")."""
        c = self.config
        if not c.options.weight_decay or c.options.weight_decay_form == "decoupled":
            return tf.constant(0.0, dtype)
        scale = c.options.weight_decay / c.density if c.options.weight_decay_form == "l2_per_density" else c.options.weight_decay
        return scale * tf.add_n(
            [tf.reduce_sum(tf.square(w.layer.kernel * _internals.pruning_vars(w)[0][1])) for w in self._wrappers])

    def _decoupled_decay(self):
        """Algorithm 1 line 5's −β·m⊙w, applied after the optimizer step (``weight_decay_form="decoupled"``)."""
        c = self.config
        if not c.options.weight_decay or c.options.weight_decay_form != "decoupled" or self.scores:
            return
        pairs = [(w.layer.kernel - c.options.weight_decay * w.layer.kernel * _internals.pruning_vars(w)[0][1], w.layer.kernel)
                 for w in self._wrappers]
        assign_in_replica(pairs)

    def _apply(self, grads, variables):
        """One optimizer step; scores' gradient is the global one divided by its RMS (module docstring)."""
        aggregated = False
        if self.scores:
            if tf.distribute.has_strategy():
                grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
                aggregated = True
            size = sum(int(np.prod(g.shape)) for g in grads)
            rms = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]) / size)
            grads = [g / (rms + 1e-12) for g in grads]
        self.optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=aggregated)

    def _after_step(self):
        """Re-derives the masks when the schedule says so (every step when optimizing scores)."""
        should_update, _ = self.schedule(self.optimizer.iterations)
        if self.scores:
            should_update = tf.constant(True)
        if tf.distribute.has_strategy():
            # any strategy, even with one replica, writes mirrored variables through merge_call,
            # which cannot run inside tf.cond: compute the new masks and select
            self._select_masks(should_update)
        else:
            tf.cond(should_update, self.update_masks, lambda: tf.constant(False))

    def train_step(self, data):
        x, y = data[0], data[1]
        norm = self.config.normalization
        x = tf.cast(x, self.student.trainable_variables[0].dtype)
        x_adv_t, f_t, x_adv_s = self._adversarial_inputs(x, y, data[2] if len(data) > 2 else None)
        target_scale, kernel_scale, x_cols_t, x_cols_s = self._replica_share(x, x_adv_t, x_adv_s)
        columns = tf.shape(x_cols_t)[0]
        probes = self._probes(columns, f_t.shape[-1], x.dtype) if self.config.options.kernel == "sketch" else None
        theta_t = self._teacher_ntk(x, x_cols_t, probes)
        variables = self.optimized_variables
        replicas = self._replicas()
        with tf.GradientTape() as tape:
            f_s, theta_s = self._student_terms(x, x_adv_s, x_cols_s, probes)
            td = target_distance(f_t, f_s, norm) * target_scale
            kd = self._kernel_distance(theta_t, theta_s, columns) * kernel_scale
            decay = self._weight_decay(x.dtype)
            # The optimizer sums the replicas' gradients: the replicated decay term counts once.
            scaled = td + self.config.effective_kernel_weight * kd + decay / replicas
        self._apply(tape.gradient(scaled, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO), variables)
        self._decoupled_decay()
        self._after_step()
        if replicas > 1:  # the global distances, for the logs
            context = tf.distribute.get_replica_context()
            td, kd = (context.all_reduce(tf.distribute.ReduceOp.SUM, v) for v in (td, kd))
        weighted = self.config.effective_kernel_weight * kd
        return self._log_step({"loss": td + weighted + decay, "target_distance": td, "kernel_distance": kd,
                               "weighted_kernel_distance": weighted})

    def _log_step(self, values):
        assign_in_replica([(tf.cast(value, tf.float32), self.step_values[name]) for name, value in values.items()])
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    # ------------------------------------------------------------------ results
    def _student_weights(self) -> List[np.ndarray]:
        """The student's weights in the plain model's ``get_weights()`` order."""
        inner = {_layers.unwrap(l)[0].name: _layers.unwrap(l)[0] for l in _layers.iter_layers(self.student)}
        return [w.numpy().copy() for name in self._plain_layer_names() for w in inner[name].weights]

    def _plain_layer_names(self) -> List[str]:
        return [_layers.unwrap(l)[0].name for l in _layers.iter_layers(self.teacher)]

    def rewind(self, to: str = "init"):
        """Sets the student to θ0 ⊙ m ("init") or to its learned weights ⊙ m ("learned")."""
        if to not in REWINDS:
            raise ValueError(f"rewind must be one of {REWINDS}. You passed: {to!r}")
        self.learned_weights = self._student_weights()
        if to == "init":
            inner = {_layers.unwrap(l)[0].name: _layers.unwrap(l)[0] for l in _layers.iter_layers(self.student)}
            values = iter(self.initial_weights)
            for name in self._plain_layer_names():
                for w in inner[name].weights:
                    w.assign(next(values))
        for wrapper in self._wrappers:
            weight, mask, _ = _internals.pruning_vars(wrapper)[0]
            weight.assign(weight * mask)

    def current_masks(self) -> Dict[str, np.ndarray]:
        return {name: var.numpy().copy() for name, var in self.mask_variables.items()}

    def ticket(self, history: Optional[dict] = None) -> Ticket:
        learned = getattr(self, "learned_weights", None) or self._student_weights()
        return Ticket(
            masks=self.current_masks(),
            initial_weights=self.initial_weights,
            method=self.config.method,
            history=history or {},
            config=self.config.get_config(),
            learned_weights=learned,
        )
