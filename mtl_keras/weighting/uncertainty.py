"""Uncertainty weighting (Kendall, Gal and Cipolla, 2018)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class UncertaintyWeighting(LossWeighting):
    """Learned homoscedastic uncertainty: `sum_t exp(-s_t) L_t + s_t / 2`.

    Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics", CVPR 2018 (their eq. 10
    for classification, with `s_t = log sigma_t^2` learned by the optimizer
    with the model; no weight decay on it). At the optimum `exp(-s_t) = 1 /
    (2 L_t)`: tasks with a large loss are weighed down. `s` starts at 0, the
    static sum.

    Example:
    >>> w = UncertaintyWeighting()
    >>> w.build_for_tasks(["a", "b"])
    >>> float(w.combine({"a": 2.0, "b": 1.0}))  # s = 0: the plain sum
    3.0
    >>> [v.name for v in w.trainable_variables]
    ['log_variance']
    """

    def build_for_tasks(self, task_names):
        super().build_for_tasks(task_names)
        self.log_variance = self.add_weight(
            name="log_variance",
            shape=(self.num_tasks,),
            initializer="zeros",
            trainable=True,
        )

    def task_weights(self, losses, present, step):
        return tf.exp(-tf.cast(self.log_variance, "float32"))

    def objective(self, local_losses, losses, present, step, num_replicas):
        s = tf.cast(self.log_variance, "float32")
        regularizer = tf.where(present, 0.5 * s, tf.zeros_like(s))
        return tf.reduce_sum(tf.exp(-s) * local_losses + regularizer / num_replicas)
