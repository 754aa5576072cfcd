"""Dynamic Weight Average (Liu, Johns and Davison, 2019)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class DynamicWeightAverage(LossWeighting):
    """Weights from how fast each task's loss falls: `w = T softmax(r / temperature)`.

    Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019, eq. 7: `r_t = L_t(k-1) / L_t(k-2)`, the ratio of task t's mean
    loss over the last two periods (the paper's periods are epochs); a task
    whose loss falls slowly gets more weight. Equal weights (1.0) for the
    first two periods. The loss history is state, saved and checkpointed.

    Args:
        period_steps: steps per period; `fit_run` sets it to the steps of
            an epoch when it is not given. Required before training.
        temperature: the softmax temperature (2.0 in the paper).

    Example:
    >>> import numpy as np
    >>> w = DynamicWeightAverage(period_steps=1)
    >>> w.build_for_tasks(["a", "b"])
    >>> present = tf.constant([True, True])
    >>> for losses in ([1.0, 1.0], [0.5, 1.0]):  # a halves, b stays
    ...     for variable, value in w.state_updates(tf.constant(losses), present, 0):
    ...         _ = variable.assign(value)
    >>> [round(float(v), 3) for v in w.task_weights(None, present, 0)]  # b gets more
    [0.876, 1.124]
    """

    def __init__(self, period_steps=None, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        if period_steps is not None and int(period_steps) < 1:
            raise ValueError(f"period_steps must be >= 1, got {period_steps!r}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.period_steps = None if period_steps is None else int(period_steps)
        self.temperature = float(temperature)

    def set_steps_per_epoch(self, steps):
        if self.period_steps is None:
            self.period_steps = int(steps)

    def build_for_tasks(self, task_names):
        super().build_for_tasks(task_names)
        t = (self.num_tasks,)
        self.loss_sums = self.add_state("loss_sums", t)
        self.loss_counts = self.add_state("loss_counts", t)
        self.steps_in_period = self.add_state("steps_in_period")
        self.last_means = self.add_state("last_means", t)  # L(k-1)
        self.earlier_means = self.add_state("earlier_means", t)  # L(k-2)
        self.periods = self.add_state("periods")

    def task_weights(self, losses, present, step):
        ratio = tf.math.divide_no_nan(self.last_means, self.earlier_means)
        weights = self.num_tasks * tf.nn.softmax(ratio / self.temperature)
        return tf.where(self.periods >= 2.0, weights, tf.ones_like(weights))

    def state_updates(self, losses, present, step):
        if self.period_steps is None:
            raise ValueError(
                "DynamicWeightAverage needs period_steps (e.g. the steps of an "
                "epoch) before training."
            )
        mask = tf.cast(present, "float32")
        sums = self.loss_sums + losses * mask
        counts = self.loss_counts + mask
        steps = self.steps_in_period + 1.0
        ends = steps >= float(self.period_steps)
        means = tf.math.divide_no_nan(sums, counts)

        def at_end(new, kept):
            return tf.where(ends, new, kept)

        return [
            (self.earlier_means, at_end(self.last_means, self.earlier_means)),
            (self.last_means, at_end(means, self.last_means)),
            (self.periods, at_end(self.periods + 1.0, self.periods)),
            (self.loss_sums, at_end(tf.zeros_like(sums), sums)),
            (self.loss_counts, at_end(tf.zeros_like(counts), counts)),
            (self.steps_in_period, at_end(tf.zeros_like(steps), steps)),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "period_steps": self.period_steps,
            "temperature": self.temperature,
        }
