"""Task specs: the questions a model answers; what each implies is its kind's."""

import dataclasses
import keyword
import re

from mtl_keras.kinds import get_kind

_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Task:
    """One question the model answers about a text.

    The kind (see `mtl_keras.kinds`) fixes the head width, the loss (on
    logits), the metrics, how labels are parsed and what is served.

    Args:
        name: identifier used as output key, log prefix and file name.
        kind: a registered kind: `multiclass`, `binary`, `multilabel`,
            `regression` or `tagging`.
        num_classes: classes for multiclass, multilabel and tagging tasks;
            ignored (set to 1) for binary and regression.
        label_names: optional names of the classes (two for binary tasks).
        loss_weight: non-negative weight of this task's loss in the sum.

    Example:
    >>> topic = Task("topic", "multiclass", num_classes=4)
    >>> topic.head_units
    4
    >>> topic.metric_names()
    ['accuracy', 'macro_f1', 'mcc']
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
        try:
            kind = get_kind(self.kind)
        except ValueError as error:
            raise ValueError(f"Task {self.name!r}: {error}") from None
        if kind.single_output:
            object.__setattr__(self, "num_classes", 1)
        elif (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise ValueError(
                f"Task {self.name!r} ({self.kind}) needs num_classes >= 2, "
                f"got {self.num_classes!r}."
            )
        if self.label_names is not None:
            names = tuple(str(n) for n in self.label_names)
            expected = kind.label_count(self)
            if expected == 0:
                raise ValueError(
                    f"Task {self.name!r}: a {self.kind} task has no label names."
                )
            if len(names) != expected:
                raise ValueError(
                    f"Task {self.name!r}: {len(names)} label names given for "
                    f"{expected} classes."
                )
            object.__setattr__(self, "label_names", names)
        weight = self.loss_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(
                f"Task {self.name!r}: loss_weight must be a number >= 0, "
                f"got {weight!r}."
            )
        object.__setattr__(self, "loss_weight", float(weight))

    @property
    def task_kind(self):
        """The `TaskKind` object that defines this task's behaviour."""
        return get_kind(self.kind)

    @property
    def head_units(self):
        return self.task_kind.head_units(self)

    @property
    def per_token(self):
        """Whether the head reads the encoder's sequence output (one per token)."""
        return self.task_kind.per_token

    @property
    def headline_metric(self):
        return self.task_kind.headline(self)

    @property
    def classes(self):
        """Label names, or the class indices as strings (none for regression)."""
        count = self.task_kind.label_count(self)
        if count and self.label_names is not None:
            return self.label_names
        return tuple(str(i) for i in range(count))

    def loss(self):
        """A loss object on logits that returns one value per labelled unit.

        Reduction is left to the training step, which averages over the
        labelled examples of the global batch (see `MultiTaskModel`).
        """
        return self.task_kind.loss()

    def metrics(self):
        """Fresh metric objects, named `<task>_<metric>`, headline first."""
        return list(self.task_kind.metrics(self).values())

    def metric_names(self):
        return list(self.task_kind.metrics(self))

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

    Example:
    >>> [t.name for t in validate_tasks([{"name": "spam", "kind": "binary"}])]
    ['spam']
    """
    tasks = tuple(t if isinstance(t, Task) else Task(**t) for t in tasks)
    if not tasks:
        raise ValueError("A multi-task model needs at least one task.")
    names = [task.name for task in tasks]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"Duplicate task name {name!r}.")
    return tasks
