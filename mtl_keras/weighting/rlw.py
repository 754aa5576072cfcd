"""Random loss weighting (Lin et al., 2022)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class RandomLossWeighting(LossWeighting):
    """Fresh random weights every step: `w = T softmax(z)`, `z ~ N(0, 1)`.

    Lin, Ye, Xu, Shi and Zhang, "Reasonable Effectiveness of Random
    Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022 (RLW with
    the normal distribution). The draw is seeded by `(seed, step)`, so every
    replica draws the same weights and a resumed run draws what the
    uninterrupted one would have.

    Args:
        seed: seed of the draws.

    Example:
    >>> w = RandomLossWeighting(seed=3)
    >>> w.build_for_tasks(["a", "b", "c"])
    >>> weights = w.task_weights(None, None, step=7)
    >>> round(float(tf.reduce_sum(weights)), 5)
    3.0
    >>> bool(tf.reduce_all(weights == w.task_weights(None, None, step=7)))
    True
    """

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def task_weights(self, losses, present, step):
        seed = tf.stack([tf.constant(self.seed, "int64"), tf.cast(step, "int64")])
        z = tf.random.stateless_normal((self.num_tasks,), seed=seed)
        return self.num_tasks * tf.nn.softmax(z)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
