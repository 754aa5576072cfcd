"""Fast Adaptive Multitask Optimization, FAMO (Liu et al., 2023)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class FAMO(LossWeighting):
    """Balances the tasks' log-loss improvement rates at the cost of one step.

    Liu, Feng, Stone and Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023 (Algorithm 1, with `min_losses = 0`). The
    model descends `sum_t z_t log(L_t + eps) / c` with `z = softmax(xi)` and
    `c = sum_t z_t / (L_t + eps)`, i.e. the task losses weighted by
    `z_t / (c (L_t + eps))` (which sum to 1; times T here). After the update
    the losses are recomputed on the same batch (with `training=False`, one
    extra forward pass) and the logits `xi` take one Adam step (learning rate
    `logit_learning_rate`, L2 `logit_decay`) along the softmax's
    vector-Jacobian product with `log L_before - log L_after`: a task whose
    loss fell more than the others' gets less weight. The Adam update of the
    T logits is written out (a handful of lines) because a second Keras
    optimizer inside the step would need its own distribution handling; its
    moments are state like the logits.

    Args:
        logit_learning_rate: the logits' Adam learning rate (0.025).
        logit_decay: the logits' L2 penalty (gamma, 0.01).
        epsilon: added to each loss before the logarithm (1e-8).

    Example:
    >>> w = FAMO()
    >>> w.build_for_tasks(["a", "b"])
    >>> present = tf.constant([True, True])
    >>> before, after = tf.constant([1.0, 1.0]), tf.constant([0.5, 1.0])  # a improved
    >>> for variable, value in w.after_step_updates(before, after, present):
    ...     _ = variable.assign(value)
    >>> weights = w.task_weights(tf.constant([1.0, 1.0]), present, 0).numpy()
    >>> bool(weights[0] < 1.0 < weights[1])  # a is weighed down
    True
    """

    needs_every_task = True
    needs_losses_after_step = True

    def __init__(self, logit_learning_rate=0.025, logit_decay=0.01, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.logit_learning_rate = float(logit_learning_rate)
        self.logit_decay = float(logit_decay)
        self.epsilon = float(epsilon)

    def build_for_tasks(self, task_names):
        super().build_for_tasks(task_names)
        t = (self.num_tasks,)
        self.logits = self.add_state("logits", t)
        self.first_moment = self.add_state("first_moment", t)
        self.second_moment = self.add_state("second_moment", t)
        self.updates = self.add_state("updates")

    def task_weights(self, losses, present, step):
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        inverse = tf.where(present, z / (losses + self.epsilon), tf.zeros_like(z))
        return self.num_tasks * inverse / tf.reduce_sum(inverse)

    def after_step_updates(self, losses_before, losses_after, present):
        improvement = tf.math.log(losses_before + self.epsilon) - tf.math.log(
            losses_after + self.epsilon
        )
        improvement = tf.where(present, improvement, tf.zeros_like(improvement))
        logits = tf.convert_to_tensor(self.logits)
        z = tf.nn.softmax(logits)
        # The vector-Jacobian product of the softmax, plus the L2 term.
        gradient = z * (improvement - tf.reduce_sum(z * improvement)) + self.logit_decay * logits
        beta_1, beta_2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as the paper
        t = self.updates + 1.0
        m = beta_1 * self.first_moment + (1.0 - beta_1) * gradient
        v = beta_2 * self.second_moment + (1.0 - beta_2) * tf.square(gradient)
        m_hat = m / (1.0 - beta_1**t)
        v_hat = v / (1.0 - beta_2**t)
        new_logits = logits - self.logit_learning_rate * m_hat / (tf.sqrt(v_hat) + eps)
        return [
            (self.logits, new_logits),
            (self.first_moment, m),
            (self.second_moment, v),
            (self.updates, t),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "logit_learning_rate": self.logit_learning_rate,
            "logit_decay": self.logit_decay,
            "epsilon": self.epsilon,
        }
