"""Metrics computed from logits: macro F1 and the confusion-matrix statistics.

Keras has F1 and precision/recall metrics, but they take probabilities
and (for F1) one-hot labels; the heads here output logits and the labels are
class indices. `LogitF1Score` adapts Keras' own `F1Score`. Keras has no
Matthews correlation, so `ConfusionMatrixMetric` keeps a `[C, C]` confusion
matrix and reads MCC, or the positive class's precision, recall or F1, off it.
`TokenAccuracy` counts tagged words exactly (Keras' own accuracy weights
each row by one over its padded length).
"""

import keras

from mtl_keras import _compat

STATISTICS = ("mcc", "precision", "recall", "f1")


@keras.saving.register_keras_serializable(package="mtl_keras")
class LogitF1Score(keras.metrics.F1Score):
    """Macro F1 computed from logits.

    Multiclass tasks pass integer labels (one-hot encoded here) and take the
    arg-max class; multilabel tasks pass multi-hot labels and threshold
    `sigmoid(logits)` at 0.5.

    Example:
    >>> f1 = LogitF1Score(num_classes=3, sparse=True, name="macro_f1")
    >>> f1.update_state([0, 1, 2], [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    >>> round(float(f1.result()), 4)
    1.0
    """

    def __init__(self, num_classes, sparse=True, name="macro_f1", **kwargs):
        kwargs.pop("average", None)
        kwargs.pop("threshold", None)
        threshold = None if sparse else 0.5  # multilabel: sigmoid > 0.5
        super().__init__(average="macro", threshold=threshold, name=name, **kwargs)
        self.num_classes = num_classes
        self.sparse = sparse
        # Create the variables now, not lazily inside a replica's step.
        _compat.build_f1_variables(self, num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = keras.ops.convert_to_tensor(y_pred, dtype="float32")
        if self.sparse:
            y_true = keras.ops.one_hot(
                keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)),
                self.num_classes,
            )
        else:
            y_pred = keras.ops.sigmoid(y_pred)
        super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "sparse": self.sparse})
        return config


@keras.saving.register_keras_serializable(package="mtl_keras")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """A statistic of the confusion matrix of class predictions from logits.

    `num_classes=2` with one logit per row (binary) predicts class 1 when
    the logit is > 0; otherwise the arg-max class is predicted. Statistics:

    - `"mcc"`: the Matthews correlation coefficient (Gorodkin's R_K for more
      than two classes), in [-1, 1]; 0 when it is undefined;
    - `"precision"`, `"recall"`, `"f1"`: of class 1 (the positive class).

    Args:
        num_classes: the classes, 2 for binary tasks.
        statistic: one of `"mcc"`, `"precision"`, `"recall"`, `"f1"`.

    Example:
    >>> mcc = ConfusionMatrixMetric(2, "mcc")
    >>> mcc.update_state([1, 0, 1, 0], [[3.0], [-2.0], [1.0], [4.0]])
    >>> round(float(mcc.result()), 4)
    0.5774
    """

    def __init__(self, num_classes, statistic="mcc", name=None, **kwargs):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}.")
        super().__init__(name=name or statistic, **kwargs)
        self.num_classes = int(num_classes)
        self.statistic = statistic
        shape = (self.num_classes, self.num_classes)
        self.matrix = self.add_variable(shape, "zeros", dtype="float32", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_pred = ops.convert_to_tensor(y_pred, dtype="float32")
        truth = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        if y_pred.shape[-1] == 1:
            predicted = ops.cast(ops.reshape(y_pred, (-1,)) > 0, "int32")
        else:
            predicted = ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1)
        weight = ops.ones_like(truth, dtype="float32")
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        rows = ops.one_hot(truth, self.num_classes) * weight[:, None]
        columns = ops.one_hot(ops.cast(predicted, "int32"), self.num_classes)
        self.matrix.assign_add(ops.matmul(ops.transpose(rows), columns))

    def result(self):
        ops = keras.ops
        m = self.matrix
        if self.statistic == "mcc":
            total = ops.sum(m)
            correct = ops.trace(m)
            true_counts, predicted_counts = ops.sum(m, axis=1), ops.sum(m, axis=0)
            numerator = correct * total - ops.sum(true_counts * predicted_counts)
            denominator = ops.sqrt(
                (total**2 - ops.sum(predicted_counts**2))
                * (total**2 - ops.sum(true_counts**2))
            )
            return ops.divide_no_nan(numerator, denominator)
        tp, fp, fn = m[1, 1], m[0, 1], m[1, 0]
        if self.statistic == "precision":
            return ops.divide_no_nan(tp, tp + fp)
        if self.statistic == "recall":
            return ops.divide_no_nan(tp, tp + fn)
        return ops.divide_no_nan(2 * tp, 2 * tp + fp + fn)

    def reset_state(self):
        self.matrix.assign(keras.ops.zeros_like(self.matrix))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "statistic": self.statistic,
        }


@keras.saving.register_keras_serializable(package="mtl_keras")
class TokenAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Accuracy over the labelled tokens of `[B, L]` labels: every word counts once.

    Keras' `SparseCategoricalAccuracy` given `[B, L]` values and weights
    first averages each row over its `L` positions, so a word in a batch
    padded to 128 weighs a quarter of one padded to 32, and the result moves
    with the batching (UD EWT dev UPOS: 0.9014 bucketed, 0.8967 in file
    order, 0.8963 counted). Flattening to one row per token makes the
    weighted mean exact: correct labelled tokens over labelled tokens.

    Example:
    >>> accuracy = TokenAccuracy()
    >>> accuracy.update_state([[1, 1]], [[[0.0, 1.0], [0.0, 1.0]]], sample_weight=[[1.0, 1.0]])
    >>> accuracy.update_state([[1, 1, 0, 0]], [[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]],
    ...                       sample_weight=[[1.0, 1.0, 0.0, 0.0]])
    >>> float(accuracy.result())  # 3 of 4 words (Keras' own metric says 0.8333)
    0.75
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = keras.ops.convert_to_tensor(y_pred)
        y_true = keras.ops.reshape(y_true, (-1,))
        y_pred = keras.ops.reshape(y_pred, (-1, keras.ops.shape(y_pred)[-1]))
        if sample_weight is not None:
            sample_weight = keras.ops.reshape(sample_weight, (-1,))
        super().update_state(y_true, y_pred, sample_weight=sample_weight)
