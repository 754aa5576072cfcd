"""The `multiclass` kind: one of C classes: C logits, softmax cross-entropy."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import plots
from mtl_keras.kinds.base import ClassKind, class_strata, confusion_counts
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
    loss_class = keras.losses.SparseCategoricalCrossentropy

    def metrics(self, task):
        return {
            "accuracy": keras.metrics.SparseCategoricalAccuracy(name=f"{task.name}_accuracy"),
            "macro_f1": LogitF1Score(task.num_classes, sparse=True, name=f"{task.name}_macro_f1"),
            "mcc": ConfusionMatrixMetric(task.num_classes, "mcc", name=f"{task.name}_mcc"),
        }

    def label_array(self, task, values):
        return np.asarray(values, "int32")

    def strata(self, task, labels, masks):
        return class_strata(labels, masks)

    def serving_outputs(self, task, logits, padding_mask):
        p = tf.nn.softmax(logits, axis=-1)
        names = tf.constant(task.classes, tf.string)
        label = tf.gather(names, tf.argmax(p, axis=-1, output_type=tf.int32))
        return self.class_outputs(task, p, label)

    def plot(self, task, labels, outputs):
        predicted = np.asarray(outputs).reshape(-1, self.head_units(task)).argmax(-1)
        matrix = confusion_counts(np.asarray(labels).reshape(-1), predicted, len(task.classes))
        return plots.plot_confusion_matrix(matrix, task.classes, task.name), "confusion"
