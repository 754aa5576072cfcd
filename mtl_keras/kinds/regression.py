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
    >>> task.task_kind.check_column(task, [3.0, 4.0, 1e30], [1, 1, 1])[0]  # the row
    2
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

    # A target this many robust deviations from its column's median is almost
    # surely a mistake (units, a parsing slip), and its squared error can
    # overflow float32 (|x| > ~1.8e19 always does).
    OUTLIER_DEVIATIONS = 1e6
    OVERFLOW = 1e18

    def check_column(self, task, values, masks):
        labelled = np.flatnonzero(np.asarray(masks) > 0)
        if len(labelled) == 0:
            return None
        x = np.asarray(values, "float64")[labelled]
        median = float(np.median(x))
        deviation = np.abs(x - median)
        spread = 1.4826 * float(np.median(deviation)) or float(np.mean(deviation)) or 1.0
        worst = int(np.argmax(deviation))
        z = deviation[worst] / spread
        if z > self.OUTLIER_DEVIATIONS or abs(x[worst]) > self.OVERFLOW:
            return int(labelled[worst]), (
                f"the target {x[worst]:g} is {z:.3g} robust deviations from the "
                f"column's median {median:g}: training on it would overflow the "
                "squared error. Fix the value, or rescale the column"
            )
        return None

    def serving_outputs(self, task, logits, padding_mask):
        return {f"{task.name}_value": tf.reshape(logits, [-1])}

    def output_names(self, task):
        return [f"{task.name}_value"]

    def format(self, task, outputs, row, top_k=None):
        return {"value": float(outputs[f"{task.name}_value"][row])}

    def plot(self, task, labels, outputs):
        return plots.plot_regression(labels, outputs, task.name), "predictions"
