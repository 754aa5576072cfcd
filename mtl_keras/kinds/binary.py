"""The `binary` kind: yes or no: one logit, sigmoid cross-entropy; P(`classes[1]`) is served."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.kinds.base import (
    THRESHOLD,
    ClassKind,
    confusion_counts,
    top_probabilities,
)
from mtl_keras.metrics import ConfusionMatrixMetric


class Binary(ClassKind):
    """Yes or no: one logit, sigmoid cross-entropy; P(`classes[1]`) is served.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("spam", "binary", label_names=("ham", "spam"))
    >>> out = task.task_kind.serving_outputs(task, tf.constant([[2.0]]), None)
    >>> out["spam_label"].numpy().tolist(), round(float(out["spam_probabilities"][0]), 3)
    ([b'spam'], 0.881)
    """

    name = "binary"
    single_output = True
    headline_metric = "accuracy"

    def label_count(self, task):
        return 2

    def loss(self):
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def metrics(self, task):
        prefix = task.name + "_"
        found = {
            "accuracy": keras.metrics.BinaryAccuracy(threshold=0.0, name=prefix + "accuracy"),
            "auc": keras.metrics.AUC(from_logits=True, name=prefix + "auc"),
        }
        for statistic in ("precision", "recall", "f1", "mcc"):
            found[statistic] = ConfusionMatrixMetric(2, statistic, name=prefix + statistic)
        return found

    def loss_inputs(self, labels, logits):
        return tf.reshape(tf.cast(labels, "float32"), (-1, 1)), logits

    def serving_outputs(self, task, logits, padding_mask):
        p = tf.sigmoid(tf.reshape(logits, [-1]))
        names = tf.constant(task.classes, tf.string)
        label = tf.gather(names, tf.cast(p > THRESHOLD, tf.int32))
        return {f"{task.name}_probabilities": p, f"{task.name}_label": label}

    def format(self, task, outputs, row, top_k=None):
        p = float(outputs[f"{task.name}_probabilities"][row])
        return {
            "label": outputs[f"{task.name}_label"][row].decode(),
            "probabilities": top_probabilities(task.classes, np.array([1.0 - p, p]), top_k),
        }

    def plot(self, task, labels, outputs):
        from mtl_keras import plots

        predicted = (np.asarray(outputs).reshape(-1) > 0).astype("int64")
        matrix = confusion_counts(np.asarray(labels).reshape(-1), predicted, 2)
        return plots.plot_confusion_matrix(matrix, task.classes, task.name), "confusion"
