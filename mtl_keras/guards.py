"""Checks around `fit` and `evaluate`: what goes in, and the losses that come out.

- `check_label_keys`: label and sample-weight keys must name the model's
  tasks (a misspelled key would train nothing for that task, silently); a
  task may lack labels only when declared (`fit(..., unlabelled_tasks=...)`)
  or frozen.
- `check_evaluation_data`: an evaluation must see each example exactly once,
  so a repeating dataset, a dataset batched with `drop_remainder=True`, or
  `steps` that do not match the dataset's length are errors.
- `FailOnNonFinite`: stops training with `NonFiniteLossError` naming the
  task(s) and the step when a task's loss is not finite (the step itself is
  not applied: see `MultiTaskModel.train_step`).
"""

import difflib
import math

import keras
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """A task's training loss was not finite; names the tasks and the step.

    Example:
    >>> str(NonFiniteLossError(["score"], 12, "inf"))[:47]
    "Task 'score': the training loss became inf at t"
    """

    def __init__(self, tasks, step, value):
        self.tasks, self.step = list(tasks), step
        names = ", ".join(repr(t) for t in self.tasks)
        super().__init__(
            f"Task {names}: the training loss became {value} at training step "
            f"{step}; that step was not applied and training stopped. Check the "
            "task's labels (e.g. regression targets far outside the others), or "
            "lower the learning rate."
        )


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys(structure):
    return None if not isinstance(structure, dict) else set(structure)


def check_label_keys(model, y, sample_weight=None, unlabelled_tasks=()):
    """Raises `ValueError` for label / sample-weight keys that do not fit the tasks.

    `y` and `sample_weight` are dicts (of arrays or of `TensorSpec`s).

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> model = MultiTaskModel([Task("score", "regression")],
    ...                        SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> check_label_keys(model, {"scroe": [1.0]})
    Traceback (most recent call last):
    ...
    ValueError: Label key 'scroe' names no task of the model (tasks: ['score']); did you mean 'score'?
    """
    names = model.task_names
    unknown = sorted(set(unlabelled_tasks) - set(names))
    if unknown:
        raise ValueError(f"unlabelled_tasks {unknown} are not tasks of the model ({names}).")
    labels = _keys(y)
    if labels is None:
        raise ValueError(
            "A MultiTaskModel takes labels as a dict {task name: labels}, got "
            f"{type(y).__name__}."
        )
    for what, keys in (("Label", labels), ("Sample-weight", _keys(sample_weight) or set())):
        for key in sorted(keys - set(names)):
            raise ValueError(
                f"{what} key {key!r} names no task of the model (tasks: {names})"
                + _did_you_mean(key, names)
            )
    weights_only = sorted((_keys(sample_weight) or set()) - labels)
    if weights_only:
        raise ValueError(f"Sample weights for {weights_only} come without labels.")
    frozen = {n for n in names if not model.heads[n].trainable}
    missing = [n for n in names if n not in labels and n not in frozen]
    missing = [n for n in missing if n not in unlabelled_tasks]
    if missing:
        raise ValueError(
            f"No labels for task(s) {missing} (labels given: {sorted(labels)}). A task "
            "without labels is not trained; if that is meant, pass "
            f"unlabelled_tasks={missing} to fit()."
        )


def fit_label_keys(x, y=None, sample_weight=None):
    """The label and sample-weight structures of `fit`'s arguments (specs for datasets).

    Example:
    >>> ds = tf.data.Dataset.from_tensors(({"token_ids": [1]}, {"spam": [1.0]}))
    >>> sorted(fit_label_keys(ds)[0])
    ['spam']
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) >= 2:
            return spec[1], spec[2] if len(spec) > 2 else None
        return None, None
    return y, sample_weight


def check_evaluation_data(x, steps=None):
    """Raises `ValueError` unless an evaluation on `x` sees each example once.

    Example:
    >>> ds = tf.data.Dataset.range(10).map(lambda i: ({"token_ids": [i]}, {"spam": [1.0]}))
    >>> check_evaluation_data(ds.batch(4).repeat())
    Traceback (most recent call last):
    ...
    ValueError: The evaluation dataset repeats forever, so examples would be counted more than once; evaluate on one pass (no .repeat()).
    >>> check_evaluation_data(ds.batch(4), steps=3)  # 3 batches: fine
    """
    if not isinstance(x, tf.data.Dataset):
        return
    cardinality = int(x.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The evaluation dataset repeats forever, so examples would be counted "
            "more than once; evaluate on one pass (no .repeat())."
        )
    if steps is not None and steps != cardinality:
        known = f"has {cardinality} batches" if cardinality >= 0 else "has an unknown length"
        raise ValueError(
            f"evaluate(steps={steps}) but the dataset {known}: some examples would "
            "be skipped or counted twice. Leave steps=None to evaluate one pass."
        )
    for spec in tf.nest.flatten(x.element_spec):
        if spec.shape.rank and spec.shape[0] is not None:
            raise ValueError(
                f"The evaluation dataset has a fixed batch size ({spec.shape[0]}), as "
                "batch(..., drop_remainder=True) gives: a final partial batch would "
                "be dropped. Batch with drop_remainder=False."
            )


class FailOnNonFinite(keras.callbacks.Callback):
    """Raises `NonFiniteLossError` after a step whose task loss is not finite.

    Reads the per-task running losses `<task>_loss` of the logs: the running
    mean of an epoch turns non-finite at the first non-finite step, so the
    step and the task are exact. `MultiTaskModel.fit` adds it by default.

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> model = MultiTaskModel([Task("score", "regression")],
    ...                        SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> guard = FailOnNonFinite()
    >>> guard.set_model(model)
    >>> guard.on_train_batch_end(0, {"loss": float("inf"), "score_loss": float("inf")})
    Traceback (most recent call last):
    ...
    mtl_keras.guards.NonFiniteLossError: Task 'score': the training loss became inf at training step 0; that step was not applied and training stopped. Check the task's labels (e.g. regression targets far outside the others), or lower the learning rate.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        names = self.model.task_names
        bad = [n for n in names if not math.isfinite(float(logs.get(f"{n}_loss", 0.0)))]
        step = int(self.model.train_step_counter.numpy())
        raise NonFiniteLossError(bad or names, step, float(loss))
