"""Task specs: what each task predicts, and the loss and metrics that implies."""

import dataclasses
import keyword
import re

import keras

KINDS = ("multiclass", "binary", "multilabel", "regression", "tagging")
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@keras.saving.register_keras_serializable(package="mtl_keras")
class LogitF1Score(keras.metrics.F1Score):
    """Macro F1 computed from logits.

    Multiclass tasks pass integer labels (one-hot encoded here) and take the
    arg-max class; multilabel tasks pass multi-hot labels and threshold
    `sigmoid(logits)` at 0.5.

    Example:
    >>> f1 = LogitF1Score(num_classes=3, sparse=True, name="macro_f1")
    >>> f1.update_state([0, 1, 2], [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    >>> float(f1.result())
    1.0
    """

    def __init__(self, num_classes, sparse=True, name="macro_f1", **kwargs):
        kwargs.pop("average", None)
        kwargs.pop("threshold", None)
        super().__init__(
            average="macro",
            threshold=None if sparse else 0.5,
            name=name,
            **kwargs,
        )
        self.num_classes = num_classes
        self.sparse = sparse
        # Create the variables now, not lazily inside a replica's step.
        self._build((None, num_classes), (None, num_classes))

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


@dataclasses.dataclass(frozen=True)
class Task:
    """One question the model answers about a text.

    Each kind fixes the head width, the loss (on logits) and the default
    metrics:

    | kind | labels | head | loss | metrics |
    |---|---|---|---|---|
    | multiclass | int in [0, C) | C logits | softmax cross-entropy | accuracy, macro F1 |
    | binary | 0 or 1 | 1 logit | sigmoid cross-entropy | accuracy, AUC |
    | multilabel | C-hot vector | C logits | sigmoid cross-entropy | accuracy, macro F1, AUC |
    | regression | float | 1 value | mean squared error | MSE, MAE |
    | tagging | int per token | C logits per token | softmax cross-entropy | token accuracy |

    Args:
        name: identifier used as output key, log prefix and file name.
        kind: one of `KINDS`.
        num_classes: classes for multiclass, multilabel and tagging tasks;
            ignored (set to 1) for binary and regression.
        label_names: optional names of the classes, `num_classes` of them.
        loss_weight: non-negative weight of this task's loss in the sum.

    Example:
    >>> topic = Task("topic", "multiclass", num_classes=4)
    >>> topic.head_units
    4
    >>> sorted(topic.metric_names())
    ['accuracy', 'macro_f1']
    """

    name: str
    kind: str
    num_classes: int = 2
    label_names: tuple = None
    loss_weight: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"Task name {self.name!r} is not valid: use letters, digits "
                "and underscores, starting with a letter (it becomes an "
                "output key, a log prefix and a file name)."
            )
        if keyword.iskeyword(self.name) or self.name == "loss":
            raise ValueError(f"Task name {self.name!r} is reserved.")
        if self.kind not in KINDS:
            raise ValueError(
                f"Task {self.name!r}: unknown kind {self.kind!r}; "
                f"expected one of {', '.join(KINDS)}."
            )
        if self.kind in ("binary", "regression"):
            object.__setattr__(self, "num_classes", 1)
        elif not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(
                f"Task {self.name!r} ({self.kind}) needs num_classes >= 2, "
                f"got {self.num_classes!r}."
            )
        if self.label_names is not None:
            names = tuple(str(n) for n in self.label_names)
            expected = 2 if self.kind == "binary" else self.num_classes
            if self.kind == "regression":
                raise ValueError(
                    f"Task {self.name!r}: a regression task has no label names."
                )
            if len(names) != expected:
                raise ValueError(
                    f"Task {self.name!r}: {len(names)} label names given for "
                    f"{expected} classes."
                )
            object.__setattr__(self, "label_names", names)
        weight = self.loss_weight
        if not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(
                f"Task {self.name!r}: loss_weight must be a number >= 0, "
                f"got {weight!r}."
            )
        object.__setattr__(self, "loss_weight", float(weight))

    @property
    def head_units(self):
        return self.num_classes

    @property
    def is_sequence_task(self):
        return self.kind == "tagging"

    @property
    def classes(self):
        """Label names, or the class indices as strings."""
        if self.kind == "regression":
            return ()
        if self.label_names is not None:
            return self.label_names
        count = 2 if self.kind == "binary" else self.num_classes
        return tuple(str(i) for i in range(count))

    def loss(self):
        """A loss object that returns one value per labelled unit.

        Reduction is left to the training step, which averages over the
        labelled examples of the global batch (see `MultiTaskModel`).
        """
        if self.kind in ("multiclass", "tagging"):
            return keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction=None
            )
        if self.kind in ("binary", "multilabel"):
            return keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=None
            )
        return keras.losses.MeanSquaredError(reduction=None)

    def metrics(self):
        """Fresh metric objects, named `<task>_<metric>`."""
        prefix = self.name + "_"
        if self.kind == "multiclass":
            return [
                keras.metrics.SparseCategoricalAccuracy(name=prefix + "accuracy"),
                LogitF1Score(self.num_classes, sparse=True, name=prefix + "macro_f1"),
            ]
        if self.kind == "binary":
            return [
                keras.metrics.BinaryAccuracy(threshold=0.0, name=prefix + "accuracy"),
                keras.metrics.AUC(from_logits=True, name=prefix + "auc"),
            ]
        if self.kind == "multilabel":
            return [
                keras.metrics.BinaryAccuracy(threshold=0.0, name=prefix + "accuracy"),
                LogitF1Score(self.num_classes, sparse=False, name=prefix + "macro_f1"),
                keras.metrics.AUC(
                    from_logits=True,
                    multi_label=True,
                    num_labels=self.num_classes,
                    name=prefix + "auc",
                ),
            ]
        if self.kind == "regression":
            return [
                keras.metrics.MeanSquaredError(name=prefix + "mse"),
                keras.metrics.MeanAbsoluteError(name=prefix + "mae"),
            ]
        return [
            keras.metrics.SparseCategoricalAccuracy(name=prefix + "token_accuracy")
        ]

    def metric_names(self):
        return [m.name[len(self.name) + 1 :] for m in self.metrics()]

    def get_config(self):
        config = dataclasses.asdict(self)
        if config["label_names"] is not None:
            config["label_names"] = list(config["label_names"])
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def validate_tasks(tasks):
    """Checks a list of tasks and returns it as a tuple of `Task`s.

    Accepts `Task` objects or their config dicts.
    """
    tasks = tuple(t if isinstance(t, Task) else Task(**t) for t in tasks)
    if not tasks:
        raise ValueError("A multi-task model needs at least one task.")
    seen = set()
    for task in tasks:
        if task.name in seen:
            raise ValueError(f"Duplicate task name {task.name!r}.")
        seen.add(task.name)
    return tasks
