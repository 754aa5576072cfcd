"""The base of every task kind: the `TaskKind` interface, the registry, label cells.

`register_kind` adds a `TaskKind` subclass under its `name`; `get_kind`
finds one. The helpers here (class-label cells, label maps, top-k
probabilities, confusion counts, `format_rows`) are shared by the kinds.
"""

import difflib
import numbers

import numpy as np
import tensorflow as tf

THRESHOLD = 0.5  # binary and multilabel: a class is predicted when p > 0.5
KINDS = {}  # name -> TaskKind instance, in registration order


def register_kind(kind_class):
    """Registers a `TaskKind` subclass under its `name`; returns the class.

    Example:
    >>> from mtl_keras.kinds import Regression
    >>> class Count(Regression):  # a regression kind under another name
    ...     name = "count"
    >>> _ = register_kind(Count)
    >>> get_kind("count").headline_metric
    'mae'
    >>> del KINDS["count"]
    """
    KINDS[kind_class.name] = kind_class()
    return kind_class


def get_kind(name):
    """The registered `TaskKind` called `name`; a clear error otherwise.

    Example:
    >>> get_kind("multilabel").headline_metric
    'macro_f1'
    >>> get_kind("binarry")
    Traceback (most recent call last):
    ...
    ValueError: unknown kind 'binarry'; expected one of multiclass, binary, multilabel, regression, tagging. Did you mean 'binary'?
    """
    if name not in KINDS:
        close = difflib.get_close_matches(str(name), list(KINDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown kind {name!r}; expected one of {', '.join(KINDS)}.{hint}"
        )
    return KINDS[name]


def apply_label_map(value, label_map):
    """Translates a raw cell through `label_map` (`{raw: label}`), if any.

    Example:
    >>> apply_label_map("1", {1: "World", 2: "Sports"})
    'World'
    """
    if label_map is None:
        return value
    if isinstance(value, (str, numbers.Number)) and value in label_map:
        return label_map[value]
    # File cells are strings: let `{1: ...}` match the cell "1".
    by_text = {str(k).strip(): v for k, v in label_map.items()}
    if str(value).strip() in by_text:
        return by_text[str(value).strip()]
    keys = list(label_map)
    close = difflib.get_close_matches(str(value), [str(k) for k in keys], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"not a key of the label_map {keys}{hint}")


def parse_class(names, value, label_map=None):
    """The index of one class label: an integer index or one of `names`.

    Example:
    >>> parse_class(("neg", "pos"), "pos"), parse_class(("neg", "pos"), "0")
    (1, 0)
    """
    value = apply_label_map(value, label_map)
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, numbers.Integral):
        index = int(value)
    elif isinstance(value, numbers.Real):
        raise ValueError("a float in a class column (use an integer or a label name)")
    elif isinstance(value, str):
        text = value.strip()
        if text in names:
            return names.index(text)
        try:
            index = int(text)
        except ValueError:
            try:
                float(text)
            except ValueError:
                close = difflib.get_close_matches(text, list(names), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown label; expected one of {list(names)} or an index "
                    f"in [0, {len(names)}){hint}"
                ) from None
            raise ValueError(
                "a float in a class column (use an integer or a label name)"
            ) from None
    else:
        raise ValueError(f"a {type(value).__name__} in a class column")
    if not 0 <= index < len(names):
        raise ValueError(f"class index out of range [0, {len(names)})")
    return index


def as_list(value):
    """as_list.

    Example:
    >>> as_list("a"), as_list(("a", "b"))
    (['a'], ['a', 'b'])
    """
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]


class TaskKind:
    """What a kind of task predicts; subclass it and `register_kind` it.

    Class attributes: `name`; `single_output` (one logit or value, so
    `num_classes` is 1); `per_token` (the head reads the encoder's sequence
    output); `headline_metric` (shown in progress lines and first in
    tables); `loss_class` (built by `loss()` on logits).

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("topic", "multiclass", 3)
    >>> kind = task.task_kind
    >>> kind.name, kind.head_units(task), kind.per_token
    ('multiclass', 3, False)
    """

    name = None
    single_output = False
    per_token = False
    headline_metric = None
    loss_class = None  # a Keras loss taking `from_logits`, for `loss()`

    # --- The spec -----------------------------------------------------------

    def label_count(self, task):
        """How many label names the task has (0: none, as for a number)."""
        return 0

    def head_units(self, task):
        return task.num_classes

    def headline(self, task):
        """The metric shown first for `task` (`headline_metric` by default)."""
        return self.headline_metric

    def headline_in(self, metrics):
        """The headline key of a metrics dict of this kind (as `headline`)."""
        return self.headline_metric

    # --- Training -----------------------------------------------------------

    def loss(self):
        """A loss object on logits with `reduction=None` (one value per unit)."""
        return self.loss_class(from_logits=True, reduction=None)

    def metrics(self, task):
        """`{suffix: fresh metric}`, headline first; logged as `<task>_<suffix>`."""
        raise NotImplementedError

    def loss_inputs(self, labels, logits):
        """`(labels, logits)` shaped for `loss()` and the metrics."""
        if self.single_output:  # one float label per row, like the logits
            labels = tf.reshape(tf.cast(labels, "float32"), (-1, 1))
        return labels, logits

    def metric_inputs(self, task, labels, logits):
        """`(labels, logits)` with one row per labelled unit."""
        return self.loss_inputs(labels, logits)

    # --- Data ---------------------------------------------------------------

    def parse(self, task, value, label_map, num_words):
        """The label of one non-empty cell; ValueError(problem) when bad."""
        raise NotImplementedError

    def placeholder(self, task, num_words):
        """What stands in for a missing label (masked out)."""
        return 0

    def check_column(self, task, values, masks):
        """`(row, problem)` for the worst label of a whole column, or None.

        Called once per source with every parsed label (`masks` 1.0 where
        present), for checks a single cell cannot make.
        """
        return None

    def strata(self, task, labels, masks):
        """Each row's class for a stratified split (int64, -1 where unlabelled), or None.

        None (the default) means rows of this kind have no single class to
        stratify by; the kinds with one class per row return it.
        """
        return None

    def label_array(self, task, values):
        """A numpy column of parsed labels."""
        return np.asarray(values, "float32")

    def label_tensor(self, column):
        """The tensor of a numpy column (leading axis: rows)."""
        return tf.constant(column)

    def evaluation_rows(self, labels, logits, mask):
        """Dev labels and logits (numpy) with one row per labelled unit, for plots."""
        labelled = np.reshape(mask, (-1,)) > 0  # rows of other tasks are masked
        return labels[labelled], logits[labelled]

    def evaluation_details(self, task, model):
        """Entries for `metrics.json` beyond the logged metrics (none by default)."""
        return {}

    # --- Serving ------------------------------------------------------------

    def serving_outputs(self, task, logits, padding_mask):
        """`{output name: tensor}` of a SavedModel signature, in the graph."""
        raise NotImplementedError

    def output_names(self, task):
        return [f"{task.name}_probabilities", f"{task.name}_label"]

    def format(self, task, outputs, row, top_k=None):
        """One row's outputs (numpy) as a JSON-serializable dict."""
        raise NotImplementedError

    # --- Reports ------------------------------------------------------------

    def plot(self, task, labels, outputs):
        """`(figure, file suffix)` for a run directory, or None."""
        return None


class ClassKind(TaskKind):
    """Kinds whose labels are class names or indices.

    Example:
    >>> from mtl_keras import Task
    >>> task = Task("topic", "multiclass", 3, label_names=("a", "b", "c"))
    >>> task.task_kind.parse(task, "c", None, 0)
    2
    """

    def label_count(self, task):
        return 2 if self.single_output else task.num_classes  # one logit: two classes

    def parse(self, task, value, label_map, num_words):
        return parse_class(task.classes, value, label_map)

    def class_outputs(self, task, p, label):
        """The serving outputs `<task>_probabilities` and `<task>_label`."""
        return {f"{task.name}_probabilities": p, f"{task.name}_label": label}

    def class_probabilities(self, p):
        """One row of `<task>_probabilities` as a probability per class."""
        return p

    def format(self, task, outputs, row, top_k=None):
        p = self.class_probabilities(outputs[f"{task.name}_probabilities"][row])
        return {
            "label": outputs[f"{task.name}_label"][row].decode(),
            "probabilities": top_probabilities(task.classes, p, top_k),
        }


def class_strata(labels, masks):
    """One class per row as int64, -1 where the row has no label (`TaskKind.strata`).

    Example:
    >>> class_strata(np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.0, 1.0])).tolist()
    [1, -1, 1]
    """
    labels = np.asarray(labels).reshape(len(masks), -1)[:, 0].astype("int64")
    return np.where(np.asarray(masks) > 0, labels, -1)


def top_probabilities(classes, p, top_k=None):
    """`{class: probability}`, the `top_k` most likely only when given.

    Example:
    >>> top_probabilities(["a", "b", "c"], [0.2, 0.5, 0.3], top_k=2)
    {'b': 0.5, 'c': 0.3}
    """
    pairs = list(zip(classes, map(float, p)))
    if top_k is not None:
        pairs = sorted(pairs, key=lambda pair: -pair[1])[:top_k]
    return dict(pairs)


def confusion_counts(truth, predicted, size):
    """confusion_counts.

    Example:
    >>> confusion_counts(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    matrix = np.zeros((size, size), "int64")
    np.add.at(matrix, (truth.astype("int64"), predicted.astype("int64")), 1)
    return matrix


def format_rows(tasks, outputs, top_k=None):
    """Serving outputs (numpy arrays, one row per text) as one dict per text.

    Example:
    >>> from mtl_keras import Task
    >>> outputs = {"num_tokens": np.array([3]), "score_value": np.array([0.5])}
    >>> format_rows([Task("score", "regression")], outputs)
    [{'score': {'value': 0.5}}]
    """
    return [
        {task.name: task.task_kind.format(task, outputs, row, top_k) for task in tasks}
        for row in range(len(outputs["num_tokens"]))
    ]
