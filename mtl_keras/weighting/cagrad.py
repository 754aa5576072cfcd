"""Conflict-averse gradient descent, CAGrad (Liu et al., 2021)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import GradientWeighting, project_to_simplex


@keras.saving.register_keras_serializable(package="mtl_keras")
class CAGrad(GradientWeighting):
    """The update near the average gradient that most improves the worst task.

    Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for
    Multi-task Learning", NeurIPS 2021 (Algorithm 1, with the official
    code's rescaling): with `g0` the mean task gradient and `c = alpha
    |g0|`, solve `min_{w in simplex} g_w . g0 + c |g_w|` (`g_w = sum_i w_i
    g_i`); the update is `(g0 + c / |g_w| g_w) / (1 + alpha^2)`, times T
    here. The T-dimensional problem is solved in the graph by accelerated
    projected gradient descent on the simplex (`iterations` steps); the
    paper's code uses SLSQP.

    Args:
        alpha: the radius of the ball around `g0` (0.5; 0 is the mean).
        iterations: solver steps.

    Example:
    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0], [-0.5, 1.0]], "float32")
    >>> w = CAGrad()
    >>> w.build_for_tasks(["a", "b"])
    >>> update = w.gradient_weights(tf.constant(g @ g.T), None, None, 0).numpy() @ g
    >>> [round(float(v), 2) for v in g @ update]  # the sum's: [0.5, 1.75]
    [0.73, 0.73]
    """

    def __init__(self, alpha=0.5, iterations=300, **kwargs):
        super().__init__(**kwargs)
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}.")
        self.alpha = float(alpha)
        self.iterations = int(iterations)

    def gradient_weights(self, gram, losses, present, step):
        t = self.num_tasks
        a = gram / tf.maximum(tf.linalg.trace(gram), 1e-30)  # scale-free
        mean = tf.fill((t,), 1.0 / t)
        c = self.alpha * tf.sqrt(tf.maximum(tf.tensordot(mean, tf.linalg.matvec(a, mean), 1), 0.0))
        a_mean = tf.linalg.matvec(a, mean)
        step_size = 0.5 / tf.maximum(tf.linalg.trace(a) * (1.0 + c * 10.0), 1e-30)

        def gradient(w):
            a_w = tf.linalg.matvec(a, w)
            return a_mean + c * a_w / tf.sqrt(tf.tensordot(w, a_w, 1) + 1e-8)

        def body(k, w, previous):
            y = w + (k - 1.0) / (k + 2.0) * (w - previous)
            return k + 1.0, project_to_simplex(y - step_size * gradient(y)), w

        _, w, _ = tf.while_loop(
            lambda k, w, previous: k < self.iterations, body, (tf.constant(0.0), mean, mean)
        )
        norm_w = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(a, w), 1), 0.0))
        lam = c / (norm_w + 1e-8)
        return t * (mean + lam * w) / (1.0 + self.alpha**2)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "iterations": self.iterations}
