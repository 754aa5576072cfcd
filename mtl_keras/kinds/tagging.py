"""The `tagging` kind: one of C tags per token: C logits per token, softmax cross-entropy."""

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.kinds.base import as_list, parse_class, top_probabilities
from mtl_keras.kinds.multiclass import Multiclass


class Tagging(Multiclass):
    """One of C tags per token: C logits per token, softmax cross-entropy.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("pos", "tagging", 2, label_names=("NOUN", "VERB"))
    >>> task.task_kind.parse(task, "NOUN VERB", None, num_words=2).tolist()
    [0, 1]
    """

    name = "tagging"
    per_token = True
    headline_metric = "token_accuracy"

    def metrics(self, task):
        name = task.name + "_token_accuracy"
        return {"token_accuracy": keras.metrics.SparseCategoricalAccuracy(name=name)}

    def metric_inputs(self, task, labels, logits):
        return tf.reshape(labels, (-1,)), tf.reshape(logits, (-1, task.num_classes))

    def parse(self, task, value, label_map, num_words):
        items = value.split() if isinstance(value, str) else as_list(value)
        if len(items) != num_words:
            raise ValueError(f"{len(items)} tags for {num_words} words")
        return np.array([parse_class(task.classes, t, label_map) for t in items], "int32")

    def placeholder(self, task, num_words):
        return np.zeros(num_words, "int32")

    def label_array(self, task, values):
        array = np.empty(len(values), object)
        array[:] = [np.asarray(v, "int32") for v in values]
        return array

    def label_tensor(self, column):
        lengths = np.asarray([len(v) for v in column], "int64")
        flat = np.concatenate(list(column)) if len(column) else np.zeros(0)
        return tf.RaggedTensor.from_row_lengths(np.asarray(flat, "int32"), lengths)

    def serving_outputs(self, task, logits, padding_mask):
        outputs = super().serving_outputs(task, logits, padding_mask)  # per token
        label = outputs[f"{task.name}_label"]
        outputs[f"{task.name}_label"] = tf.where(padding_mask, label, "")
        return outputs

    def format(self, task, outputs, row, top_k=None):
        length = int(outputs["num_tokens"][row])
        p = outputs[f"{task.name}_probabilities"][row][:length]
        return {
            "label": [t.decode() for t in outputs[f"{task.name}_label"][row][:length]],
            "probabilities": [top_probabilities(task.classes, q, top_k) for q in p],
        }

    def plot(self, task, labels, outputs):
        return None
