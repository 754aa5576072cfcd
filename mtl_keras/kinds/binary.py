"""The `binary` kind: yes or no: one logit, sigmoid cross-entropy; P(`classes[1]`) is served."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import plots
from mtl_keras.kinds.base import THRESHOLD, ClassKind, class_strata, confusion_counts
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
    loss_class = keras.losses.BinaryCrossentropy

    def metrics(self, task):
        found = {
            "accuracy": keras.metrics.BinaryAccuracy(threshold=0.0, name=f"{task.name}_accuracy"),
            "auc": keras.metrics.AUC(from_logits=True, name=f"{task.name}_auc"),
        }
        for statistic in ("precision", "recall", "f1", "mcc"):
            found[statistic] = ConfusionMatrixMetric(2, statistic, name=f"{task.name}_{statistic}")
        return found

    def strata(self, task, labels, masks):
        return class_strata(labels, masks)

    def serving_outputs(self, task, logits, padding_mask):
        p = tf.sigmoid(tf.reshape(logits, [-1]))
        names = tf.constant(task.classes, tf.string)
        label = tf.gather(names, tf.cast(p > THRESHOLD, tf.int32))
        return self.class_outputs(task, p, label)

    def class_probabilities(self, p):
        return [1.0 - float(p), float(p)]

    def plot(self, task, labels, outputs):
        predicted = (np.asarray(outputs).reshape(-1) > 0).astype("int64")
        matrix = confusion_counts(np.asarray(labels).reshape(-1), predicted, 2)
        return plots.plot_confusion_matrix(matrix, task.classes, task.name), "confusion"
