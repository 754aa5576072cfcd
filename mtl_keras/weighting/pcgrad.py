"""Projecting conflicting gradients, PCGrad (Yu et al., 2020)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import GradientWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class PCGrad(GradientWeighting):
    """Removes from each task gradient its component along conflicting ones.

    Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for
    Multi-Task Learning", NeurIPS 2020 (Algorithm 1): for each task i,
    `g_i' = g_i`; for every other task j in a random order, if `g_i' . g_j <
    0` then `g_i' -= (g_i' . g_j) / |g_j|^2 g_j`; the update is `sum_i g_i'`.
    Every `g_i'` is a combination `sum_k C[i, k] g_k` of the task gradients,
    so the projections are done on the coefficients `C` with the Gram matrix
    and the weights are `w = sum_i C[i]`. The order is drawn from `(seed,
    step, i)`: the same on every replica and after a resume.

    Args:
        seed: seed of the random task orders.

    Example:
    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")  # conflicting
    >>> w = PCGrad()
    >>> w.build_for_tasks(["a", "b"])
    >>> weights = w.gradient_weights(tf.constant(g @ g.T), None, None, 0)
    >>> (weights.numpy() @ g).round(3).tolist()  # g_a' = (.5, .5), g_b' = (0, 1)
    [0.5, 1.5]
    """

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def gradient_weights(self, gram, losses, present, step):
        t = self.num_tasks
        identity = tf.eye(t)
        squared_norms = tf.linalg.diag_part(gram)
        rows = []
        for i in range(t):
            seed = tf.stack(
                [tf.constant(self.seed, "int64"), tf.cast(step, "int64") * t + i]
            )
            order = tf.argsort(tf.random.stateless_uniform((t,), seed=seed))
            c = identity[i]
            for k in range(t):
                j = order[k]
                dot = tf.reduce_sum(c * gram[:, j])  # g_i' . g_j
                conflict = tf.logical_and(dot < 0.0, j != i)
                step_size = tf.math.divide_no_nan(dot, squared_norms[j])
                c = c - tf.where(conflict, step_size, 0.0) * tf.one_hot(j, t)
            rows.append(c)
        return tf.reduce_sum(tf.stack(rows), axis=0)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
