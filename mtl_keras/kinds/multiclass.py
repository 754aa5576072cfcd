"""The `multiclass` kind: one of C classes: C logits, softmax cross-entropy."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.kinds.base import (
    ClassKind,
    confusion_counts,
    top_probabilities,
)
from mtl_keras.metrics import ConfusionMatrixMetric, LogitF1Score


class Multiclass(ClassKind):
    """One of C classes: C logits, softmax cross-entropy.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("topic", "multiclass", 3, label_names=("a", "b", "c"))
    >>> out = task.task_kind.serving_outputs(task, tf.constant([[0.0, 2.0, 0.0]]), None)
    >>> out["topic_label"].numpy().tolist()
    [b'b']
    """

    name = "multiclass"
    headline_metric = "accuracy"

    def loss(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def metrics(self, task):
        prefix = task.name + "_"
        return {
            "accuracy": keras.metrics.SparseCategoricalAccuracy(name=prefix + "accuracy"),
            "macro_f1": LogitF1Score(task.num_classes, sparse=True, name=prefix + "macro_f1"),
            "mcc": ConfusionMatrixMetric(task.num_classes, "mcc", name=prefix + "mcc"),
        }

    def label_array(self, task, values):
        return np.asarray(values, "int32")

    def serving_outputs(self, task, logits, padding_mask):
        p = tf.nn.softmax(logits, axis=-1)
        names = tf.constant(task.classes, tf.string)
        label = tf.gather(names, tf.argmax(p, axis=-1, output_type=tf.int32))
        return {f"{task.name}_probabilities": p, f"{task.name}_label": label}

    def format(self, task, outputs, row, top_k=None):
        p = outputs[f"{task.name}_probabilities"][row]
        return {
            "label": outputs[f"{task.name}_label"][row].decode(),
            "probabilities": top_probabilities(task.classes, p, top_k),
        }

    def plot(self, task, labels, outputs):
        from mtl_keras import plots

        predicted = np.asarray(outputs).reshape(-1, self.head_units(task)).argmax(-1)
        matrix = confusion_counts(np.asarray(labels).reshape(-1), predicted, len(task.classes))
        return plots.plot_confusion_matrix(matrix, task.classes, task.name), "confusion"
