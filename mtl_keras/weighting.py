"""How per-task losses (or per-task gradients) combine into one update.

A strategy is a Keras layer, so a strategy that learns variables (for
example uncertainty weighting, Kendall et al. 2018) is saved with the model.
Two hooks:

- `combine(task_losses)`: the scalar to differentiate. Every strategy has it.
- `combine_gradients(task_gradients)`: for strategies with
  `needs_task_gradients = True` (GradNorm, PCGrad, ...), the training step
  hands over one gradient list per task and applies what this returns.
"""

import keras


class LossWeighting(keras.layers.Layer):
    """Base class: turns `{task: loss}` into one training objective.

    Example:
    >>> class Mean(LossWeighting):
    ...     def combine(self, task_losses):
    ...         return sum(task_losses.values()) / len(task_losses)
    >>> float(Mean().combine({"a": 1.0, "b": 3.0}))
    2.0
    """

    needs_task_gradients = False

    def combine(self, task_losses):
        raise NotImplementedError

    def combine_gradients(self, task_gradients):
        """Maps `{task: [dense grad per variable]}` to one gradient list."""
        raise NotImplementedError(
            f"{type(self).__name__} does not combine per-task gradients."
        )


@keras.saving.register_keras_serializable(package="mtl_keras")
class StaticWeighting(LossWeighting):
    """A fixed weighted sum: `sum_t w_t * L_t`.

    This is the multi-task objective of Caruana (1997) and MT-DNN: the sum,
    not the average, so adding a task does not shrink the others' gradients.
    With no weights given, each task uses its `Task.loss_weight` (set by
    the model), which is 1.0 by default.

    Args:
        weights: optional `{task_name: weight}`; tasks not listed get 1.0.

    Example:
    >>> import numpy as np
    >>> w = StaticWeighting({"topic": 1.0, "sentiment": 0.5})
    >>> float(w.combine({"topic": np.float32(2.0), "sentiment": np.float32(2.0)}))
    3.0
    """

    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        self.weights_by_task = dict(weights or {})

    def weight(self, task_name):
        return float(self.weights_by_task.get(task_name, 1.0))

    def combine(self, task_losses):
        return sum((self.weight(name) * loss for name, loss in task_losses.items()), 0.0)

    def combine_gradients(self, task_gradients):
        combined = []
        for grads in zip(*task_gradients.values()):  # one variable's, per task
            scaled = [
                self.weight(name) * g for name, g in zip(task_gradients, grads) if g is not None
            ]
            combined.append(sum(scaled[1:], scaled[0]) if scaled else None)
        return combined

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_by_task}


@keras.saving.register_keras_serializable(package="mtl_keras")
class EqualWeighting(StaticWeighting):
    """Every task weighs 1.0, whatever `Task.loss_weight` says.

    Example:
    >>> float(EqualWeighting().combine({"topic": 2.0, "sentiment": 1.0}))
    3.0
    """

    def __init__(self, **kwargs):
        kwargs.pop("weights", None)
        super().__init__(weights=None, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("weights")
        return config
