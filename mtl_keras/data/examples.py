"""Raw examples in memory, their checks, and the datasets made from them.

Every source is read into an `Examples` table (see `sources`), checked
against the model's tasks by `validate`, and becomes a `tf.data.Dataset` of
unbatched `(features, labels, masks)` (see docs/CONTRACTS.md):

    features = {"text": str} (+ "text_pair": str for sentence pairs)
    labels   = {task: label or placeholder}  for every task of the model
    masks    = {task: 1.0 if the example carries that task's label, else 0.0}

Two ways to train on several tasks: `joint_dataset` here, for jointly
labelled rows (one source carries several tasks), and `mixing.Mixture` for
separate sources mixed by a sampler. In `joint_dataset` a missing label masks
that task only; a task the source does not carry is masked everywhere. Rows
with no label at all are dropped (and counted). **One epoch is one pass over
the remaining rows**, in an order that depends only on the seed and the epoch
(`JointRows`).

`eval_dataset` gives every labelled dev row once with all its labels (one
pass evaluates every task); `eval_datasets` gives each task its own dataset:
each labelled dev row of that task exactly once, in file order, with the
other tasks masked.

This module knows sources only through what they offer (`read`, `tasks`,
`location`), so the sources can build `Examples` without a cycle.
"""

import dataclasses
import difflib
import logging

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import validate_tasks

logger = logging.getLogger(__package__)  # "mtl_keras.data", for every module

EMPTY_TEXT_POLICIES = ("keep", "error")


class DataValidationError(ValueError):
    """A data problem found before training starts.

    The message names the task, the file (or tfds name), the line (or example),
    the column and the offending value, as far as they apply.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> try:
    ...     validate(tasks[:1], train)  # the file also carries two other tasks
    ... except DataValidationError as error:
    ...     print(str(error).split(" (")[0])
    Task 'sentiment'
    """


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value):
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value)


def _show_column(column):
    if isinstance(column, (list, tuple)):
        return f"{list(column)[:3]}{'...' if len(column) > 3 else ''}"
    return repr(column)


# --------------------------------------------------------------------------
# Examples held in memory.


@dataclasses.dataclass(frozen=True)
class Examples:
    """Raw examples of one or more sources, held in memory as numpy columns.

    Args:
        source: name used in logs and messages.
        tasks: the model's tasks; `labels` and `masks` have one entry each.
        text: object array of `str`.
        text_pair: object array of `str`, or None for single-text data.
        labels: `{task: array}`, as the task's kind builds it
            (`TaskKind.label_array`); tagging labels are an object array of
            per-word int32 arrays.
        masks: `{task: float32 array}`, 1.0 where the label is present.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> examples = train.read(tasks)
    >>> len(examples.take([0, 1]))
    2
    >>> features, labels, masks = examples.take([0]).tensors()
    >>> sorted(labels) == sorted(masks) == ['aspects', 'mentions', 'rating', 'sentiment', 'topic']
    True
    """

    source: str
    tasks: tuple
    text: np.ndarray
    text_pair: np.ndarray
    labels: dict
    masks: dict

    def __len__(self):
        return len(self.text)

    def labelled_counts(self):
        return {name: int(mask.sum()) for name, mask in self.masks.items()}

    def take(self, indices, only_task=None):
        """The examples at `indices`; `only_task` masks every other task."""
        indices = np.asarray(indices, "int64")
        masks = {n: m[indices] for n, m in self.masks.items()}
        if only_task is not None:
            masks = {n: m if n == only_task else m * 0 for n, m in masks.items()}
        return dataclasses.replace(
            self,
            text=self.text[indices],
            text_pair=None if self.text_pair is None else self.text_pair[indices],
            labels={n: v[indices] for n, v in self.labels.items()},
            masks=masks,
        )

    def tensors(self, with_pair=False):
        """`(features, labels, masks)` as tensors with a leading row axis."""
        features = {"text": tf.constant(self.text.tolist(), tf.string)}
        if with_pair or self.text_pair is not None:
            pair = self.text_pair if self.text_pair is not None else [""] * len(self)
            features["text_pair"] = tf.constant(list(pair), tf.string)
        labels = {
            task.name: task.task_kind.label_tensor(self.labels[task.name])
            for task in self.tasks
        }
        masks = {n: tf.constant(m) for n, m in self.masks.items()}
        return features, labels, masks

    def to_dataset(self, indices=None, with_pair=False, tensors=None):
        """A dataset of the examples at `indices` (default: all, in order).

        `indices` may be a tensor, and `tensors` this table's `tensors()`
        made once (both as in `epochs.EpochBatches`, inside `flat_map`).
        """
        if indices is None:
            indices = np.arange(len(self))
        if not tf.is_tensor(indices):
            indices = np.asarray(indices, "int64")
        rows = tf.data.Dataset.from_tensor_slices(indices)
        return _gather(tensors or self.tensors(with_pair), rows)


def _object_array(values):
    array = np.empty(len(values), object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _gather(tensors, rows):
    """Maps a dataset of row indices to the examples at those rows."""

    @tf.autograph.experimental.do_not_convert  # plain graph code (see batching.no_autograph)
    def gather(batch):  # gathering 1024 rows at a time is ~5x faster
        return tf.nest.map_structure(lambda t: tf.gather(t, batch), tensors)

    examples = rows.batch(1024).map(gather).unbatch()
    # `unbatch` forgets the count; keeping it lets `make_batches` (and so
    # `fit` and `evaluate`) know how many batches an epoch has.
    count = tf.get_static_value(rows.cardinality())  # None inside `flat_map`
    if count is not None and count >= 0:
        examples = examples.apply(tf.data.experimental.assert_cardinality(count))
    return examples


def _concat(tables, source):
    with_pair = any(t.text_pair is not None for t in tables)

    def pairs(t):
        return t.text_pair if t.text_pair is not None else np.full(len(t), "", object)

    first = tables[0]
    return Examples(
        source=source,
        tasks=first.tasks,
        text=np.concatenate([t.text for t in tables]),
        text_pair=np.concatenate([pairs(t) for t in tables]) if with_pair else None,
        labels={n: np.concatenate([t.labels[n] for t in tables]) for n in first.labels},
        masks={n: np.concatenate([t.masks[n] for t in tables]) for n in first.masks},
    )


def _any_label(table):
    if not table.masks:
        return np.zeros(len(table), bool)
    return np.any(np.stack(list(table.masks.values())) > 0, axis=0)


# --------------------------------------------------------------------------
# Validation across sources.


def _check_empty_policy(empty_text):
    if empty_text not in EMPTY_TEXT_POLICIES:
        raise ValueError(
            f"empty_text must be one of {EMPTY_TEXT_POLICIES}, got {empty_text!r}."
        )


def _check_source_tasks(source, tasks):
    names = [t.name for t in tasks]
    for name, column in source.tasks.items():
        if name not in names:
            raise DataValidationError(
                f"Task {name!r} (column {_show_column(column)} of "
                f"{source.location}) is not a task of the model (tasks: "
                f"{names})" + _did_you_mean(name, names)
            )


def validate(tasks, sources, *, empty_text="keep", split="train", needed=None):
    """Reads `sources` and checks them against the model's `tasks`.

    Raises `DataValidationError` for a bad label, a task in the data that the
    model lacks, a model task that no source provides, or a task left with no
    labelled example (an empty split). Returns one `Examples` per source.
    `needed` (task names, default all) limits the last two checks to those
    tasks (an evaluation file that carries some of the model's tasks).

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, dev = bundled_sample()
    >>> [len(table) for table in validate(tasks, [train, dev])]
    [2000, 400]
    """
    tasks = validate_tasks(tasks)
    sources = _as_list(sources)
    _check_empty_policy(empty_text)
    if not sources:
        raise DataValidationError(f"No {split} data source given.")
    provided = {name for source in sources for name in source.tasks}
    for source in sources:
        _check_source_tasks(source, tasks)
    needed = [t for t in tasks if needed is None or t.name in needed]
    for task in needed:
        if task.name not in provided:
            raise DataValidationError(
                f"Task {task.name!r} of the model is provided by no {split} "
                f"source (the sources {', '.join(s.location for s in sources)} "
                f"provide {sorted(provided)})" + _did_you_mean(task.name, provided)
            )
    tables = [source.read(tasks, empty_text) for source in sources]
    for task in needed:
        if sum(t.labelled_counts()[task.name] for t in tables) == 0:
            raise DataValidationError(
                f"Task {task.name!r}: the {split} split is empty, no labelled "
                f"example in {', '.join(s.location for s in sources)}."
            )
    return tables


def _as_list(sources):
    """One source (anything with `read`) or an iterable of them, as a list."""
    return [sources] if hasattr(sources, "read") else list(sources)


# --------------------------------------------------------------------------
# Jointly labelled rows. Evaluation.


class JointRows:
    """Jointly labelled rows of one or more sources; an epoch is one pass.

    The rows that carry at least one label, in one table (rows without any
    label are dropped and counted in the log). Epoch `e` visits every row
    once, in the order `epoch_rows(e)`: a permutation that depends only on
    `(seed, e)`, so any epoch can be rebuilt on its own (how a resumed run
    gets the same batches as the uninterrupted one).

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> joint = JointRows(tasks, train, seed=3)
    >>> joint.epoch_size, sorted(joint.epoch_rows(0)) == list(range(joint.epoch_size))
    (2000, True)
    >>> bool((joint.epoch_rows(1) == JointRows(tasks, train, seed=3).epoch_rows(1)).all())
    True
    """

    def __init__(self, tasks, sources, *, seed=0, empty_text="keep"):
        tables = validate(tasks, sources, empty_text=empty_text)
        table = _concat(tables, " + ".join(t.source for t in tables))
        keep = np.flatnonzero(_any_label(table))
        if len(keep) < len(table):
            logger.info(
                "%s: %d row(s) without any label dropped.",
                table.source,
                len(table) - len(keep),
            )
        self.table = table.take(keep)
        self.seed = seed
        self.epoch_size = len(self.table)
        logger.info(
            "Joint dataset %s: %d rows per epoch; labelled per task: %s",
            table.source,
            self.epoch_size,
            self.table.labelled_counts(),
        )

    def epoch_rows(self, epoch):
        """The row order of `epoch` (zero-based)."""
        return np.random.default_rng([self.seed, 3, epoch]).permutation(self.epoch_size)

    def epoch_dataset(self, epoch):
        """The examples of one epoch, in `epoch_rows(epoch)` order."""
        return self.table.to_dataset(self.epoch_rows(epoch))


def joint_dataset(tasks, sources, *, shuffle=True, seed=0, empty_text="keep"):
    """Jointly labelled rows of one or more sources, as one dataset.

    One epoch is one pass over the rows that carry at least one label;
    with `shuffle`, the order is reshuffled every time the dataset is
    iterated (seeded). For epochs that can be rebuilt one by one, use
    `JointRows(...).epoch_dataset(epoch)` (what `mtl-keras train` does).

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> ds = joint_dataset(tasks, train)
    >>> sorted(next(iter(ds))[2])
    ['aspects', 'mentions', 'rating', 'sentiment', 'topic']
    """
    table = JointRows(tasks, sources, seed=seed, empty_text=empty_text).table
    rows = tf.data.Dataset.from_tensor_slices(np.arange(len(table), dtype="int64"))
    if shuffle:
        rows = rows.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    return _gather(table.tensors(), rows)


def eval_dataset(tasks, sources, *, empty_text="keep", needed=None):
    """`(dataset, counts)`: every dev row that carries a label, once, in file order.

    Each row keeps all its labels and masks, so one pass gives every task's
    metrics on its own labelled rows (masked metrics count only those);
    `counts[task]` is how many rows that is. A text that several tasks
    label runs through the model once. `needed`: as for `validate`.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, _, dev = bundled_sample()
    >>> dataset, counts = eval_dataset(tasks, dev)
    >>> int(dataset.cardinality()), counts["topic"]
    (400, 347)
    """
    table = _eval_table(tasks, sources, empty_text, needed)
    table = table.take(np.flatnonzero(_any_label(table)))
    counts = table.labelled_counts()
    for task, count in counts.items():
        logger.info("Evaluation of %s: %d labelled rows.", task, count)
    return table.to_dataset(with_pair=table.text_pair is not None), counts


def _eval_table(tasks, sources, empty_text, needed=None):
    tables = validate(tasks, sources, empty_text=empty_text, split="evaluation", needed=needed)
    validate_tasks(tasks)
    return _concat(tables, " + ".join(t.source for t in tables))


def eval_datasets(tasks, sources, *, empty_text="keep"):
    """`{task: dataset}`: each task's labelled dev rows, each exactly once.

    In the dataset of a task, every other task is masked, so evaluating on it
    gives that task's metrics on its own dev split.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, _, dev = bundled_sample()
    >>> sorted(eval_datasets(tasks, dev))
    ['aspects', 'mentions', 'rating', 'sentiment', 'topic']
    """
    table = _eval_table(tasks, sources, empty_text)
    with_pair = table.text_pair is not None
    datasets = {}
    for task in tasks:
        rows = np.flatnonzero(table.masks[task.name])
        datasets[task.name] = table.take(rows, only_task=task.name).to_dataset(
            with_pair=with_pair
        )
        logger.info("Evaluation of %s: %d labelled rows.", task.name, len(rows))
    return datasets
