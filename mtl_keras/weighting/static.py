"""Fixed weights: the weighted sum of the task losses."""

import keras
import tensorflow as tf

from mtl_keras.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="mtl_keras")
class StaticWeighting(LossWeighting):
    """A fixed weighted sum: `sum_t w_t * L_t`.

    This is the multi-task objective of Caruana (1997) and MT-DNN (Liu et
    al. 2019): the sum, not the average, so adding a task does not shrink the
    others' gradients. Tuned static weights are a strong baseline (Kurin et
    al. 2022; Xin et al. 2022), so it is always reported beside the learned
    methods. With no weights given, each task uses its `Task.loss_weight` (set
    by the model), which is 1.0 by default.

    Args:
        weights: optional `{task_name: weight}`; tasks not listed get 1.0.

    Example:
    >>> import numpy as np
    >>> w = StaticWeighting({"topic": 1.0, "sentiment": 0.5})
    >>> w.build_for_tasks(["topic", "sentiment"])
    >>> float(w.combine({"topic": np.float32(2.0), "sentiment": np.float32(2.0)}))
    3.0
    """

    logs_weights = False  # they are in the config

    def __init__(self, weights=None, **kwargs):
        super().__init__(**kwargs)
        self.weights_by_task = {k: float(v) for k, v in dict(weights or {}).items()}

    def build_for_tasks(self, task_names):
        unknown = sorted(set(self.weights_by_task) - set(task_names))
        if unknown:
            raise ValueError(f"StaticWeighting weights for {unknown}, which are not tasks.")
        super().build_for_tasks(task_names)

    def weight(self, task_name):
        return self.weights_by_task.get(task_name, 1.0)

    def task_weights(self, losses, present, step):
        return tf.constant([self.weight(n) for n in self.task_names], "float32")

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_by_task}


@keras.saving.register_keras_serializable(package="mtl_keras")
class EqualWeighting(StaticWeighting):
    """Every task weighs 1.0, whatever `Task.loss_weight` says.

    Example:
    >>> w = EqualWeighting()
    >>> w.build_for_tasks(["topic", "sentiment"])
    >>> float(w.combine({"topic": 2.0, "sentiment": 1.0}))
    3.0
    """

    def __init__(self, **kwargs):
        kwargs.pop("weights", None)
        super().__init__(weights=None, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("weights")
        return config
