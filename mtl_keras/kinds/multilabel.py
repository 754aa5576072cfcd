"""The `multilabel` kind: any subset of C classes: C logits, sigmoid cross-entropy summed over them."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import plots
from mtl_keras.kinds.base import THRESHOLD, ClassKind, as_list, parse_class
from mtl_keras.metrics import LogitF1Score


class SummedSigmoidCrossEntropy(keras.losses.Loss):
    """Sigmoid cross-entropy on logits, summed over the last axis (the classes).

    Keras's `BinaryCrossentropy` averages over the classes instead.

    Example:
    >>> loss = SummedSigmoidCrossEntropy()
    >>> [round(float(v), 4) for v in loss(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))]
    [1.3863]
    """

    def __init__(self, reduction=None, name="summed_sigmoid_cross_entropy", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        per_class = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(y_true, y_pred.dtype), logits=y_pred
        )
        return tf.reduce_sum(per_class, axis=-1)

    def get_config(self):
        return {**super().get_config(), "from_logits": True}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("from_logits", None)
        return cls(**config)


class Multilabel(ClassKind):
    """Any subset of C classes: C logits, sigmoid cross-entropy summed over the classes.

    The loss of an example is the negative log-likelihood of its label
    vector, `sum_c BCE(y_c, z_c)`, as a softmax task's is of its class: on the
    same scale. (Keras's `BinaryCrossentropy` averages over the classes, which
    makes a 28-label task push a shared encoder about 28x more weakly than a
    softmax task; on GoEmotions that cost the 28 emotions ~19 macro-F1
    points against a single-task model.)

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("tags", "multilabel", 3, label_names=("x", "y", "z"))
    >>> task.task_kind.parse(task, "x,z", None, 0).tolist()
    [1.0, 0.0, 1.0]
    """

    name = "multilabel"
    headline_metric = "macro_f1"

    def loss(self):
        return SummedSigmoidCrossEntropy()

    def metrics(self, task):
        return {
            "macro_f1": LogitF1Score(task.num_classes, sparse=False, name=f"{task.name}_macro_f1"),
            "accuracy": keras.metrics.BinaryAccuracy(threshold=0.0, name=f"{task.name}_accuracy"),
            "auc": keras.metrics.AUC(
                from_logits=True,
                multi_label=True,
                num_labels=task.num_classes,
                name=f"{task.name}_auc",
            ),
        }

    def loss_inputs(self, labels, logits):
        return tf.cast(labels, "float32"), logits

    def parse(self, task, value, label_map, num_words):
        if isinstance(value, np.ndarray) and value.dtype == bool:
            if value.shape != (task.num_classes,):
                raise ValueError(f"{value.size} flags for {task.num_classes} classes")
            return value.astype("float32")
        items = value.split(",") if isinstance(value, str) else as_list(value)
        hot = np.zeros(task.num_classes, "float32")
        for item in items:
            if item is None or (isinstance(item, str) and not item.strip()):
                raise ValueError("an empty item in a multilabel cell")
            hot[parse_class(task.classes, item, label_map)] = 1.0
        return hot

    def placeholder(self, task, num_words):
        return np.zeros(task.num_classes, "float32")

    def label_array(self, task, values):
        return np.asarray(values, "float32").reshape(len(values), task.num_classes)

    def serving_outputs(self, task, logits, padding_mask):
        p = tf.sigmoid(logits)
        names = tf.constant(task.classes, tf.string)
        chosen = tf.ragged.boolean_mask(tf.broadcast_to(names, tf.shape(p)), p > THRESHOLD)
        label = tf.strings.reduce_join(chosen, axis=1, separator=",")
        return self.class_outputs(task, p, label)

    def format(self, task, outputs, row, top_k=None):
        formatted = super().format(task, outputs, row, top_k)
        label = formatted["label"]
        formatted["label"] = label.split(",") if label else []
        return formatted

    def plot(self, task, labels, outputs):
        predicted, truth = np.asarray(outputs) > 0, np.asarray(labels) > 0.5
        outcomes = [(~truth & ~predicted), (~truth & predicted), (truth & ~predicted), (truth & predicted)]
        counts = np.stack([o.sum(0) for o in outcomes], axis=1)  # TN, FP, FN, TP
        return plots.plot_multilabel_confusion(counts, task.classes, task.name), "confusion"
