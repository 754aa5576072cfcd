"""The `regression` kind: a number: one output, mean squared error."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import plots
from mtl_keras.kinds.base import TaskKind, apply_label_map


class Regression(TaskKind):
    """A number: one output, mean squared error.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("rating", "regression")
    >>> task.task_kind.parse(task, "4.5", None, 0), task.task_kind.output_names(task)
    (4.5, ['rating_value'])
    """

    name = "regression"
    single_output = True
    headline_metric = "mae"

    def loss(self):
        return keras.losses.MeanSquaredError(reduction=None)

    def metrics(self, task):
        return {
            "mae": keras.metrics.MeanAbsoluteError(name=f"{task.name}_mae"),
            "mse": keras.metrics.MeanSquaredError(name=f"{task.name}_mse"),
        }

    def parse(self, task, value, label_map, num_words):
        value = apply_label_map(value, label_map)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
            raise ValueError("a regression target must be a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError("a regression target must be a number") from None
        if not math.isfinite(number):
            raise ValueError("a regression target must be finite, not NaN or Inf")
        return number

    def serving_outputs(self, task, logits, padding_mask):
        return {f"{task.name}_value": tf.reshape(logits, [-1])}

    def output_names(self, task):
        return [f"{task.name}_value"]

    def format(self, task, outputs, row, top_k=None):
        return {"value": float(outputs[f"{task.name}_value"][row])}

    def plot(self, task, labels, outputs):
        return plots.plot_regression(labels, outputs, task.name), "predictions"
