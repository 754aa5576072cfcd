"""Impartial multi-task learning, IMTL-G (Liu et al., 2021)."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import GradientWeighting, gram_norms


@keras.saving.register_keras_serializable(package="mtl_keras")
class IMTLG(GradientWeighting):
    """The combined gradient has equal projections on every task's gradient.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021 (IMTL-G, their eq. 7, on the gradients
    with respect to the shared features, which costs one backward pass):
    with `u_t = g_t / |g_t|`, `D = [g_1 - g_t]` and `U = [u_1 - u_t]` (t =
    2..T), `alpha_{2..T} = g_1 U^T (D U^T)^-1` and `alpha_1 = 1 - sum`; the
    encoder is updated with `sum_t alpha_t g_t` (alpha times T here), whose
    cosine with each `g_t` is the same. Computed from the Gram matrix; a
    singular system (parallel gradients) falls back to the least-squares
    solution.

    Example:
    >>> import numpy as np
    >>> g = np.array([[2.0, 0.0], [0.0, 0.5]], "float32")
    >>> w = IMTLG()
    >>> w.build_for_tasks(["a", "b"])
    >>> update = w.gradient_weights(tf.constant(g @ g.T), None, None, 0).numpy() @ g
    >>> u = g / np.linalg.norm(g, axis=1, keepdims=True)
    >>> [round(float(v), 3) for v in u @ update]  # equal projections
    [0.8, 0.8]
    """

    uses = "feature_gradients"

    def gradient_weights(self, gram, losses, present, step):
        t = self.num_tasks
        gram = gram / tf.maximum(tf.linalg.trace(gram), 1e-30)  # scale-free
        norms = gram_norms(gram)
        inverse = tf.math.divide_no_nan(1.0, norms)
        # <g_a, u_b> = gram[a, b] / |g_b|
        g_dot_u = gram * inverse[tf.newaxis, :]
        d_u = (
            g_dot_u[:1, :1]
            - g_dot_u[:1, 1:]
            - g_dot_u[1:, :1]
            + g_dot_u[1:, 1:]
        )  # (g_1 - g_a) . (u_1 - u_b), a, b = 2..T
        g1_u = g_dot_u[:1, :1] - g_dot_u[:1, 1:]  # g_1 . (u_1 - u_b)
        alpha_rest = tf.linalg.lstsq(
            tf.transpose(d_u), tf.transpose(g1_u), fast=False
        )[:, 0]
        alpha = tf.concat([[1.0 - tf.reduce_sum(alpha_rest)], alpha_rest], axis=0)
        return t * alpha
