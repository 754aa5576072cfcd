"""Unconflicting projection of gradients, UPGrad (Quinton and Rey, 2024)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import GradientWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class UPGrad(GradientWeighting):
    """Projects each task gradient onto the cone where no task loses, and sums.

    Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization",
    2024 (UPGrad, as in torchjd): each `g_i` is projected onto the dual cone
    `{x : g_j . x >= 0 for all j}`; the projection is `sum_j u_j g_j` with
    `u = argmin_{u >= e_i} u^T G u` (G the Gram matrix), and the update is the
    sum (torchjd: the mean, times T here) of the projections. The update
    conflicts with no task. The T small box-constrained quadratic programs
    are solved in the graph by accelerated projected gradient descent
    (`iterations` steps, step 1 / trace(G)); torchjd calls a QP solver.

    Args:
        iterations: projected gradient steps per program.
        regularization: added to G's diagonal (relative to its trace), for
            linearly dependent gradients (torchjd: 1e-4).

    Example:
    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")
    >>> w = UPGrad()
    >>> w.build_for_tasks(["a", "b"])
    >>> update = w.gradient_weights(tf.constant(g @ g.T), None, None, 0).numpy() @ g
    >>> bool(np.all(g @ update >= -1e-4))  # no task's loss goes up
    True
    """

    def __init__(self, iterations=200, regularization=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.iterations = int(iterations)
        self.regularization = float(regularization)

    def gradient_weights(self, gram, losses, present, step):
        t = self.num_tasks
        scale = tf.maximum(tf.linalg.trace(gram), 1e-30)
        g = gram / scale + self.regularization * tf.eye(t)  # scale-free
        lower = tf.eye(t)  # row i: u >= e_i
        step_size = 1.0 / tf.linalg.trace(g)  # <= 1 / largest eigenvalue

        def body(k, u, previous):
            momentum = (k - 1.0) / (k + 2.0)
            y = u + momentum * (u - previous)
            new = tf.maximum(y - step_size * tf.matmul(y, g), lower)
            return k + 1.0, new, u

        _, u, _ = tf.while_loop(
            lambda k, u, previous: k < self.iterations,
            body,
            (tf.constant(0.0), lower, lower),
        )
        return tf.reduce_sum(u, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "iterations": self.iterations,
            "regularization": self.regularization,
        }
