"""What a weighting method is: the interface between the training step and it.

A method turns the tasks' losses, or their gradients, into one update. The
training step (`mtl_keras.step`) gives it what its `uses` names, always
*global* (summed over the replicas of a `tf.distribute` strategy, unscaled
under `mixed_float16`), as vectors in the model's task order:

- `"losses"`: the objective is `sum_t w_t * L_t` with `w =
  task_weights(losses, present, step)` (or the method's own `objective`).
  Every variable gets the gradient of that objective.
- `"shared_gradients"`: `gradient_weights(gram, losses, present, step)`
  gets the Gram matrix `gram[i, j] = <g_i, g_j>` of the tasks' gradients with
  respect to the *shared* encoder's variables; the encoder is updated with
  `sum_t w_t g_t`.
- `"feature_gradients"`: the same, with `g_t` the gradient of task t's loss
  with respect to the encoder's output (the shared features), which costs one
  backward pass instead of T. The encoder gets the gradient of `sum_t w_t L_t`.

With a gradient method each task's head gets its own task's gradient,
unweighted. All methods here only need dot products between task
gradients, so `gram` is all they see: the step never flattens the
parameters, and `w` is always defined (for PCGrad, CAGrad or UPGrad the
combined gradient is a linear combination of the task gradients too).

Scale: weights are on the scale of the plain sum, so equal weights are 1.0
each and a method whose paper averages (RLW, FAMO, CAGrad, UPGrad, IMTL-G)
is multiplied by the number of tasks. `present[t]` says whether task t has
labels in the (global) batch; `step` is the model's step counter (seeds the
random methods, so replicas and a resumed run agree).

State: a method that learns (DWA's loss history, FAMO's logits, ...) keeps
it in non-trainable variables, saved with the model and checkpointed, and
proposes new values in `state_updates` / `after_step_updates`; the step
assigns them only when the step is applied (finite gradients), so a step
that `LossScaleOptimizer` skips leaves the method's state unchanged too.
"""

import keras
import tensorflow as tf

USES = ("losses", "shared_gradients", "feature_gradients")


class LossWeighting(keras.layers.Layer):
    """Base class of the weighting methods (see the module docstring).

    Subclasses set `uses`, create their state in `build_for_tasks` and
    implement `task_weights` (loss methods) or `gradient_weights`.

    Attributes:
        uses: `"losses"`, `"shared_gradients"` or `"feature_gradients"`.
        needs_every_task: the method is only meaningful when every task has
            labels in every batch (a gradient method reduces to a plain sum
            otherwise); `fit_run` refuses batching that cannot give that.
        needs_losses_after_step: the step recomputes the losses on the same
            batch after the update and calls `after_step_updates` (FAMO).
        logs_weights: log each task's weight (`<task>_weight`) in `fit`.

    Example:
    >>> import numpy as np
    >>> class Halves(LossWeighting):
    ...     def task_weights(self, losses, present, step):
    ...         return 0.5 * tf.ones_like(losses)
    >>> w = Halves()
    >>> w.build_for_tasks(["a", "b"])
    >>> float(w.combine({"a": 1.0, "b": 3.0}))
    2.0
    """

    uses = "losses"
    needs_every_task = False
    needs_losses_after_step = False
    logs_weights = True

    def build_for_tasks(self, task_names):
        """Creates the method's state for these tasks (the model calls it).

        Every method keeps `last_weights`, the weights of the last applied
        step (logged as `<task>_weight` when `logs_weights`).
        """
        self.task_names = list(task_names)
        self.last_weights = self.add_state(
            "last_weights", (len(self.task_names),), initializer="ones"
        )
        self.built = True

    def set_steps_per_epoch(self, steps):
        """Told by `fit_run` before training (DWA's default period)."""

    @property
    def num_tasks(self):
        return len(self.task_names)

    def add_state(self, name, shape=(), initializer="zeros", dtype="float32"):
        """A non-trainable state variable, the same on every replica."""
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            aggregation="only_first_replica",
        )

    def as_vector(self, values_by_task):
        """`{task: scalar}` -> float32 vector in task order (absent tasks 0)."""
        zero = tf.zeros((), "float32")
        return tf.stack(
            [tf.cast(values_by_task.get(n, zero), "float32") for n in self.task_names]
        )

    # --- Loss methods --------------------------------------------------------

    def task_weights(self, losses, present, step):
        """Weights `w` [T] from the global task losses (loss methods)."""
        raise NotImplementedError(f"{type(self).__name__} has no task_weights.")

    def objective(self, local_losses, losses, present, step, num_replicas):
        """The scalar this replica differentiates: `sum_t w_t * local_t`.

        `local_losses` are this replica's shares (they sum to `losses` over
        the replicas); a term that is not a share of the batch (a
        regularizer) must be divided by `num_replicas`.
        """
        weights = tf.stop_gradient(self.task_weights(losses, present, step))
        return tf.reduce_sum(weights * local_losses)

    def combine(self, task_losses):
        """The objective on one device, from `{task: loss}` (for a quick look)."""
        losses = self.as_vector(task_losses)
        present = tf.ones_like(losses, "bool")
        return self.objective(losses, losses, present, tf.zeros((), "int64"), 1)

    # --- Gradient methods ----------------------------------------------------

    def gradient_weights(self, gram, losses, present, step):
        """Weights `w` [T] of the task gradients, from their Gram matrix."""
        raise NotImplementedError(f"{type(self).__name__} has no gradient_weights.")

    # --- State -----------------------------------------------------------------

    def state_updates(self, losses, present, step):
        """`[(variable, new value)]` to assign if the step is applied."""
        return []

    def after_step_updates(self, losses_before, losses_after, present):
        """Like `state_updates`, from the losses after the update (FAMO)."""
        return []

    def effective_weights(self, losses, present, step):
        """The weights a loss method uses now (for diagnostics)."""
        return tf.stop_gradient(self.task_weights(losses, present, step))


class GradientWeighting(LossWeighting):
    """Base class of the methods that combine the tasks' shared gradients.

    Example:
    >>> class Sum(GradientWeighting):
    ...     def gradient_weights(self, gram, losses, present, step):
    ...         return tf.ones_like(losses)
    >>> Sum().uses
    'shared_gradients'
    """

    uses = "shared_gradients"
    needs_every_task = True

    def task_weights(self, losses, present, step):
        # Only for `combine` and evaluation: a plain sum.
        return tf.ones_like(losses)


def gram_norms(gram):
    """The task gradients' norms, `sqrt(diag(gram))`.

    Example:
    >>> gram_norms(tf.constant([[4.0, 1.0], [1.0, 9.0]])).numpy().tolist()
    [2.0, 3.0]
    """
    return tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))


def project_to_simplex(v):
    """The Euclidean projection of `v` [T] onto the probability simplex.

    (Duchi et al. 2008, sort-based.)

    Example:
    >>> project_to_simplex(tf.constant([0.9, 0.6, -1.0])).numpy().round(3)
    array([0.65, 0.35, 0.  ], dtype=float32)
    """
    v = tf.convert_to_tensor(v, "float32")
    u = tf.sort(v, direction="DESCENDING")
    cumulative = tf.cumsum(u) - 1.0
    index = tf.range(1, tf.size(v) + 1, dtype=v.dtype)
    condition = u - cumulative / index > 0
    rho = tf.reduce_max(tf.where(condition, index, tf.zeros_like(index)))
    theta = tf.reduce_sum(tf.where(index <= rho, u, tf.zeros_like(u))) - 1.0
    return tf.maximum(v - theta / rho, 0.0)
