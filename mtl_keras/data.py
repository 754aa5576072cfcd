"""Data sources to raw multi-task examples (see docs/CONTRACTS.md).

A source (`FileSource` for CSV/TSV/JSONL files, `TfdsSource` for tfds names)
is read in Python into memory, every label is checked, and the result becomes
a `tf.data.Dataset` of unbatched `(features, labels, masks)`:

    features = {"text": str} (+ "text_pair": str for sentence pairs)
    labels   = {task: label or placeholder}  for every task of the model
    masks    = {task: 1.0 if the example carries that task's label, else 0.0}

Two ways to train on several tasks:

* `joint_dataset`: jointly labelled rows (one source carries several tasks).
  A missing label masks that task only; a task the source does not carry is
  masked everywhere. Rows with no label at all are dropped (and counted).
  **One epoch is one pass over the remaining rows**, reshuffled every epoch.
* `Mixture`: separate sources mixed by a sampler (`Proportional`,
  `Temperature`, `Uniform`, `Annealed`). **An epoch is N examples, N = the sum
  of the sources' sizes** (labelled rows). Source i contributes exactly
  c_i = N * p_i examples in an epoch, rounded by largest remainder so that the
  c_i sum to N. Each source is an endless stream of passes over its rows, each
  pass freshly shuffled, and every epoch continues the stream where the
  previous one stopped: a small source is repeated (reshuffled each time), a
  large one is spread over several epochs, and no source runs dry and stops
  the others. `Mixture.counts(epoch)` reports the c_i and the datasets log
  them. Everything is seeded and deterministic.

`eval_datasets` gives each task its own dataset: each labelled dev row of
that task exactly once, in file order, with the other tasks masked.

Text policy:

* Invalid UTF-8 is decoded with `errors="replace"` (files and tfds bytes):
  each bad byte becomes U+FFFD and the rows affected are logged as a warning.
* Empty (or whitespace-only) texts follow `empty_text`: `"keep"` (default)
  keeps them and logs how many there are; `"error"` raises
  `DataValidationError` naming the first one.

Label cells: an empty cell (None in JSONL, -1 from a tfds class label) is a
missing label. Class labels (multiclass, binary, multilabel items, tags) are
integer indices or `task.label_names`; a per-task `label_map` translates raw
values first (for example AG News 1..4 to 0..3). Multilabel cells are
comma-separated ("3,27", "joy,love") or a JSON list; regression cells are
finite numbers. Problems raise `DataValidationError` naming the task, the
file or tfds name, the line or example, the column and the value. File line
numbers count from 1 and include the header line.
"""

import csv
import dataclasses
import difflib
import functools
import json
import logging
import math
import numbers
from pathlib import Path

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import Task, validate_tasks

logger = logging.getLogger(__name__)

EMPTY_TEXT_POLICIES = ("keep", "error")
_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_QUOTING = {"csv": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}

# The 28 boolean label features of tfds `goemotions`, in label-id order.
GOEMOTIONS_LABELS = (
    "admiration amusement anger annoyance approval caring confusion curiosity "
    "desire disappointment disapproval disgust embarrassment excitement fear "
    "gratitude grief joy love nervousness optimism pride realization relief "
    "remorse sadness surprise neutral"
).split()


class DataValidationError(ValueError):
    """A data problem found before training starts.

    The message names the task, the file (or tfds name), the line (or example),
    the column and the offending value, as far as they apply.
    """


def _did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------
# Label parsing: raw cell -> label, None when missing; ValueError(problem).


def _is_missing(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _apply_label_map(value, label_map):
    if label_map is None:
        return value
    for key in (value, str(value).strip()):
        if isinstance(key, (str, numbers.Number)):
            if key in label_map:
                return label_map[key]
    # File cells are strings: let `{1: ...}` match the cell "1".
    by_text = {str(k).strip(): v for k, v in label_map.items()}
    if str(value).strip() in by_text:
        return by_text[str(value).strip()]
    keys = list(label_map)
    raise ValueError(f"not a key of the label_map {keys}" + _did_you_mean(value, keys))


def _parse_class(task, value, label_map):
    value = _apply_label_map(value, label_map)
    names = task.classes
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
                raise ValueError(
                    f"unknown label; expected one of {list(names)} or an index "
                    f"in [0, {len(names)})" + _did_you_mean(text, names)
                ) from None
            raise ValueError(
                "a float in a class column (use an integer or a label name)"
            ) from None
    else:
        raise ValueError(f"a {type(value).__name__} in a class column")
    if not 0 <= index < len(names):
        raise ValueError(f"class index out of range [0, {len(names)})")
    return index


def _parse_label(task, value, label_map, num_words):
    """Returns the label of one cell, or None when the cell is missing."""
    if _is_missing(value):
        return None
    if task.kind in ("multiclass", "binary"):
        return _parse_class(task, value, label_map)
    if task.kind == "multilabel":
        if isinstance(value, np.ndarray) and value.dtype == bool:
            if value.shape != (task.num_classes,):
                raise ValueError(f"{value.size} flags for {task.num_classes} classes")
            return value.astype("float32")
        items = value.split(",") if isinstance(value, str) else _items(value)
        hot = np.zeros(task.num_classes, "float32")
        for item in items:
            if _is_missing(item):
                raise ValueError("an empty item in a multilabel cell")
            hot[_parse_class(task, item, label_map)] = 1.0
        return hot
    if task.kind == "tagging":
        items = value.split() if isinstance(value, str) else _items(value)
        if len(items) != num_words:
            raise ValueError(f"{len(items)} tags for {num_words} words")
        return np.array([_parse_class(task, t, label_map) for t in items], "int32")
    value = _apply_label_map(value, label_map)
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, str)
    ):
        raise ValueError("a regression target must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("a regression target must be a number") from None
    if not math.isfinite(number):
        raise ValueError("a regression target must be finite, not NaN or Inf")
    return number


def _items(value):
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]


def _placeholder(task, num_words):
    if task.kind == "multilabel":
        return np.zeros(task.num_classes, "float32")
    if task.kind == "tagging":
        return np.zeros(num_words, "int32")
    return 0


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
        labels: `{task: array}`; tagging labels are an object array of
            per-word int32 arrays.
        masks: `{task: float32 array}`, 1.0 where the label is present.

    Example:
    >>> tasks, train, _ = bundled_sample()
    >>> examples = train.read(tasks)
    >>> len(examples.take([0, 1]))
    2
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
        labels = {}
        for task in self.tasks:
            values = self.labels[task.name]
            if task.kind == "tagging":
                lengths = [len(v) for v in values]
                flat = np.concatenate(list(values)) if len(values) else []
                labels[task.name] = tf.RaggedTensor.from_row_lengths(
                    np.asarray(flat, "int32"), np.asarray(lengths, "int64")
                )
            else:
                labels[task.name] = tf.constant(values)
        masks = {n: tf.constant(m) for n, m in self.masks.items()}
        return features, labels, masks

    def to_dataset(self, indices=None, with_pair=False):
        """A dataset of the examples at `indices` (default: all, in order)."""
        indices = np.arange(len(self)) if indices is None else indices
        rows = tf.data.Dataset.from_tensor_slices(np.asarray(indices, "int64"))
        return _gather(self.tensors(with_pair), rows)


def _gather(tensors, rows):
    """Maps a dataset of row indices to the examples at those rows."""

    def gather(batch):  # gathering 1024 rows at a time is ~5x faster
        return tf.nest.map_structure(lambda t: tf.gather(t, batch), tensors)

    return rows.batch(1024).map(gather).unbatch()


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
# Sources.


class _Source:
    """Shared reading logic: records in, validated `Examples` out."""

    def __init__(self, name, tasks, label_map, max_rows):
        if not tasks:
            raise ValueError(f"Source {name}: `tasks` maps no task to a column.")
        self.name = name
        self.tasks = dict(tasks)
        self.label_map = dict(label_map or {})
        self.max_rows = max_rows
        self._cache = {}
        unknown = set(self.label_map) - set(self.tasks)
        if unknown:
            raise ValueError(f"Source {name}: label_map for unmapped tasks {unknown}.")

    def read(self, tasks, empty_text="keep"):
        """Reads and validates all rows; returns `Examples` for `tasks`."""
        tasks = validate_tasks(tasks)
        _check_empty_policy(empty_text)
        _check_source_tasks(self, tasks)
        key = (tasks, empty_text)
        if key not in self._cache:
            self._cache[key] = self._collect(tasks, empty_text)
        return self._cache[key]

    def _collect(self, tasks, empty_text):
        texts, pairs = [], []
        labels = {t.name: [] for t in tasks}
        masks = {t.name: [] for t in tasks}
        empty, replaced, first_empty = 0, 0, None
        for where, text, pair, raw in self._records():
            for column, value in ((self.text_column, text), (self.pair_column, pair)):
                if value is not None and not value.strip():
                    if empty_text == "error":
                        raise DataValidationError(
                            f"Empty text in column {column!r} of {self.location}, "
                            f"{where} (empty_text='error'; use 'keep' to keep it)."
                        )
                    empty += 1
                    first_empty = first_empty or where
            replaced += "\ufffd" in text or (pair is not None and "\ufffd" in pair)
            texts.append(text)
            pairs.append(pair)
            num_words = len(text.split())
            for task in tasks:
                value = raw.get(task.name)
                try:
                    label = _parse_label(
                        task, value, self.label_map.get(task.name), num_words
                    )
                except ValueError as error:
                    end = "" if str(error).endswith("?") else "."
                    raise DataValidationError(
                        f"Task {task.name!r} ({task.kind}): {error}{end} Found "
                        f"{_show(value)} in column {_show_column(self.tasks[task.name])} "
                        f"of {self.location}, {where}."
                    ) from None
                masks[task.name].append(0.0 if label is None else 1.0)
                labels[task.name].append(
                    _placeholder(task, num_words) if label is None else label
                )
        if empty:
            logger.warning(
                "%s: %d empty text(s) kept (first at %s).",
                self.location,
                empty,
                first_empty,
            )
        if replaced:
            logger.warning(
                "%s: %d row(s) with invalid UTF-8 replaced by U+FFFD.",
                self.location,
                replaced,
            )
        return Examples(
            source=self.name,
            tasks=tasks,
            text=_object_array(texts),
            text_pair=None if self.pair_column is None else _object_array(pairs),
            labels={t.name: _label_array(t, labels[t.name]) for t in tasks},
            masks={n: np.asarray(m, "float32") for n, m in masks.items()},
        )


def _object_array(values):
    array = np.empty(len(values), object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _label_array(task, values):
    if task.kind == "tagging":
        return _object_array(values)
    if task.kind == "multilabel":
        return np.asarray(values, "float32").reshape(len(values), task.num_classes)
    dtype = "int32" if task.kind == "multiclass" else "float32"
    return np.asarray(values, dtype)


def _show(value):
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value)


def _show_column(column):
    if isinstance(column, (list, tuple)):
        return f"{list(column)[:3]}{'...' if len(column) > 3 else ''}"
    return repr(column)


class FileSource(_Source):
    """Rows of a local CSV, TSV or JSONL file, with a column per task.

    Args:
        path: the file.
        text_column: column of the text (a header name, or an int index).
        tasks: `{task_name: column}` for the tasks this file carries.
        text_pair_column: column of the second text for sentence pairs.
        format: "csv", "tsv" or "jsonl"; default from the suffix.
        quoting: "csv" (quoted fields, as pandas writes them) or "none"
            (GLUE-style: quotes are plain characters, `csv.QUOTE_NONE`).
        header: whether the first line names the columns (CSV/TSV).
        column_names: names for the columns of a file without header.
        label_map: `{task_name: {raw value: label}}`, applied before parsing.
        max_rows: read at most this many data rows.
        name: short name for logs and mixture counts; default: the path.

    Example:
    >>> source = FileSource("data/sample/dev.tsv", "text", {"topic": "topic"})
    >>> tasks = [Task("topic", "multiclass", 4,
    ...               label_names=("sports", "politics", "tech", "food"))]
    >>> len(source.read(tasks)) > 0
    True
    """

    def __init__(
        self,
        path,
        text_column,
        tasks,
        text_pair_column=None,
        format=None,
        quoting="csv",
        header=True,
        column_names=None,
        label_map=None,
        max_rows=None,
        name=None,
    ):
        self.path = Path(path)
        super().__init__(name or str(path), tasks, label_map, max_rows)
        self.format = format or _FORMATS.get(self.path.suffix.lower())
        if self.format not in ("csv", "tsv", "jsonl"):
            raise ValueError(
                f"{path}: cannot tell the format from the suffix; pass "
                "format='csv', 'tsv' or 'jsonl'."
            )
        if quoting not in _QUOTING:
            raise ValueError(f"quoting must be 'csv' or 'none', got {quoting!r}.")
        self.quoting = quoting
        self.header = header
        self.column_names = column_names
        self.text_column = text_column
        self.pair_column = text_pair_column
        self.location = str(self.path)

    def _records(self):
        if not self.path.is_file():
            raise DataValidationError(f"Data file {self.path} does not exist.")
        with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = self._jsonl_rows(f) if self.format == "jsonl" else self._csv_rows(f)
            for count, (where, get) in enumerate(rows):
                if self.max_rows is not None and count >= self.max_rows:
                    return
                text = get(self.text_column)
                pair = None if self.pair_column is None else get(self.pair_column)
                for column, value in (
                    (self.text_column, text),
                    (self.pair_column, pair),
                ):
                    if column is not None and not isinstance(value, str):
                        raise DataValidationError(
                            f"Text column {column!r} of {self.path}, {where} holds "
                            f"{value!r}, not a string."
                        )
                raw = {t: get(c, optional=True) for t, c in self.tasks.items()}
                yield where, text, pair, raw

    def _jsonl_rows(self, f):
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataValidationError(
                    f"{self.path}, {where}: bad JSON ({error})."
                ) from None

            def get(column, optional=False, row=row, where=where):
                if optional and column not in row:
                    return None  # an absent label key is a missing label
                if column not in row:
                    raise DataValidationError(
                        f"{self.path}, {where}: no key {column!r}"
                        + _did_you_mean(column, row)
                    )
                return row[column]

            yield where, get

    def _csv_rows(self, f):
        delimiter = "\t" if self.format == "tsv" else ","
        reader = csv.reader(f, delimiter=delimiter, quoting=_QUOTING[self.quoting])
        names = self.column_names
        if self.header:
            header = next(reader, [])
            names = names or header
        columns = [self.text_column, self.pair_column, *self.tasks.values()]
        index = {c: self._column_index(c, names) for c in columns if c is not None}
        needed = max(index.values()) + 1
        for record in reader:
            where = f"line {reader.line_num}"
            if not record:
                continue
            if len(record) < needed:
                raise DataValidationError(
                    f"{self.path}, {where}: {len(record)} field(s), expected at "
                    f"least {needed} (check the delimiter and quoting={self.quoting!r})."
                )
            yield where, lambda column, optional=False, r=record: r[index[column]]

    def _column_index(self, column, names):
        if isinstance(column, int):
            return column
        if not names or column not in names:
            hint = ""
            if names and len(names) == 1:
                hint = f"; the header was not split: check format={self.format!r}"
            raise DataValidationError(
                f"Column {column!r} is not in {self.path} (columns: {names})"
                + (hint or _did_you_mean(column, names or []))
            )
        return list(names).index(column)


class TfdsSource(_Source):
    """Examples of a TensorFlow Datasets split, loaded with `tfds.load`.

    Args:
        name: tfds name, e.g. "glue/sst2", "glue/rte", "ag_news_subset",
            "goemotions".
        split: tfds split, e.g. "train", "validation", "test[:100]".
        text_key: feature holding the text.
        tasks: `{task_name: feature}`; a list of boolean features (e.g.
            `GOEMOTIONS_LABELS`) makes a multi-hot label. A negative integer
            value is a missing label (tfds writes -1 for the unlabelled GLUE
            test splits).
        text_pair_key: feature holding the second text of a pair.
        data_dir: tfds data directory.
        label_map: `{task_name: {raw value: label}}`, applied before parsing.
        max_rows: read at most this many examples.
        name_in_logs: short name; default "<name>:<split>".

    Example:
    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4,
    ...                             policy=tfds.testing.MockPolicy.USE_CODE):
    ...     source = TfdsSource("glue/sst2", "train", "sentence",
    ...                         {"sentiment": "label"})
    ...     examples = source.read([Task("sentiment", "binary")])
    >>> len(examples)
    4
    """

    def __init__(
        self,
        name,
        split,
        text_key,
        tasks,
        text_pair_key=None,
        data_dir=None,
        label_map=None,
        max_rows=None,
        name_in_logs=None,
    ):
        super().__init__(name_in_logs or f"{name}:{split}", tasks, label_map, max_rows)
        self.dataset = name
        self.split = split
        self.data_dir = data_dir
        self.text_column = text_key
        self.pair_column = text_pair_key
        self.location = f"tfds {name!r} split {split!r}"

    def _records(self):
        import tensorflow_datasets as tfds

        ds = tfds.load(
            self.dataset, split=self.split, data_dir=self.data_dir, shuffle_files=False
        )
        if self.max_rows is not None:
            ds = ds.take(self.max_rows)
        for number, example in enumerate(tfds.as_numpy(ds)):
            where = f"example {number}"
            get = self._getter(example, where)
            text = _decode(get(self.text_column))
            pair = None if self.pair_column is None else _decode(get(self.pair_column))
            raw = {}
            for task, key in self.tasks.items():
                if isinstance(key, str):
                    value = get(key)
                    if isinstance(value, numbers.Integral) and value < 0:
                        value = None  # tfds marks unlabelled examples with -1
                    raw[task] = _decode(value) if isinstance(value, bytes) else value
                else:
                    raw[task] = np.array([bool(get(k)) for k in key])
            yield where, text, pair, raw

    def _getter(self, example, where):
        def get(key):
            if key not in example:
                raise DataValidationError(
                    f"{self.location}, {where}: no feature {key!r} (features: "
                    f"{sorted(example)})" + _did_you_mean(key, example)
                )
            return example[key]

        return get


def _decode(value):
    return (
        value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    )


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


def validate(tasks, sources, *, empty_text="keep", split="train"):
    """Reads `sources` and checks them against the model's `tasks`.

    Raises `DataValidationError` for a bad label, a task in the data that the
    model lacks, a model task that no source provides, or a task left with no
    labelled example (an empty split). Returns one `Examples` per source.
    """
    tasks = validate_tasks(tasks)
    sources = _as_list(sources)
    _check_empty_policy(empty_text)
    if not sources:
        raise DataValidationError(f"No {split} data source given.")
    provided = {name for source in sources for name in source.tasks}
    for source in sources:
        _check_source_tasks(source, tasks)
    for task in tasks:
        if task.name not in provided:
            raise DataValidationError(
                f"Task {task.name!r} of the model is provided by no {split} "
                f"source (the sources {', '.join(s.location for s in sources)} "
                f"provide {sorted(provided)})" + _did_you_mean(task.name, provided)
            )
    tables = [source.read(tasks, empty_text) for source in sources]
    for task in tasks:
        if sum(t.labelled_counts()[task.name] for t in tables) == 0:
            raise DataValidationError(
                f"Task {task.name!r}: the {split} split is empty, no labelled "
                f"example in {', '.join(s.location for s in sources)}."
            )
    return tables


def _as_list(sources):
    return [sources] if isinstance(sources, _Source) else list(sources)


# --------------------------------------------------------------------------
# Mode (a): jointly labelled rows. Evaluation.


def joint_dataset(tasks, sources, *, shuffle=True, seed=0, empty_text="keep"):
    """Jointly labelled rows of one or more sources, as one dataset.

    One epoch is one pass over the rows that carry at least one label;
    with `shuffle`, the order is reshuffled every epoch (seeded).

    Example:
    >>> tasks, train, _ = bundled_sample()
    >>> ds = joint_dataset(tasks, train)
    >>> sorted(next(iter(ds))[2])
    ['rating', 'sentiment', 'topic']
    """
    tables = validate(tasks, sources, empty_text=empty_text)
    table = _concat(tables, " + ".join(t.source for t in tables))
    keep = np.flatnonzero(_any_label(table))
    if len(keep) < len(table):
        logger.info(
            "%s: %d row(s) without any label dropped.",
            table.source,
            len(table) - len(keep),
        )
    table = table.take(keep)
    logger.info(
        "Joint dataset %s: %d rows per epoch; labelled per task: %s",
        table.source,
        len(table),
        table.labelled_counts(),
    )
    rows = tf.data.Dataset.from_tensor_slices(np.arange(len(table), dtype="int64"))
    if shuffle:
        rows = rows.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    return _gather(table.tensors(), rows)


def eval_datasets(tasks, sources, *, empty_text="keep"):
    """`{task: dataset}`: each task's labelled dev rows, each exactly once.

    In the dataset of a task, every other task is masked, so evaluating on it
    gives that task's metrics on its own dev split.

    Example:
    >>> tasks, _, dev = bundled_sample()
    >>> sorted(eval_datasets(tasks, dev))
    ['rating', 'sentiment', 'topic']
    """
    tables = validate(tasks, sources, empty_text=empty_text, split="evaluation")
    table = _concat(tables, " + ".join(t.source for t in tables))
    with_pair = table.text_pair is not None
    datasets = {}
    for task in validate_tasks(tasks):
        rows = np.flatnonzero(table.masks[task.name])
        datasets[task.name] = table.take(rows, only_task=task.name).to_dataset(
            with_pair=with_pair
        )
        logger.info("Evaluation of %s: %d labelled rows.", task.name, len(rows))
    return datasets


# --------------------------------------------------------------------------
# Mode (b): separate sources mixed by a sampler.


def _power_law(sizes, alpha):
    weights = np.asarray(sizes, "float64") ** alpha
    return weights / weights.sum()


class Proportional:
    """p_i proportional to the size n_i of source i."""

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 1.0)


class Temperature:
    """p_i proportional to n_i ** (1 / temperature); 1 is proportional.

    Args:
        temperature: > 0; larger values move towards uniform.
    """

    def __init__(self, temperature=2.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 1.0 / self.temperature)


class Uniform:
    """p_i = 1 / number of sources."""

    def probabilities(self, sizes, epoch, num_epochs):
        return _power_law(sizes, 0.0)


class Annealed:
    """Annealed sampling (Stickland & Murray, 2019): p_i ∝ n_i ** alpha.

    alpha = 1 - 0.8 * (e - 1) / (E - 1) for epoch e = 1..E of E epochs: from
    proportional in the first epoch to nearly uniform (alpha = 0.2) in the
    last. With zero-based `epoch`, e = epoch + 1.
    """

    def probabilities(self, sizes, epoch, num_epochs):
        alpha = 1.0 if num_epochs <= 1 else 1.0 - 0.8 * epoch / (num_epochs - 1)
        return _power_law(sizes, alpha)


SAMPLERS = {
    "proportional": Proportional,
    "temperature": Temperature,
    "uniform": Uniform,
    "annealed": Annealed,
}


def get_sampler(sampler):
    """A sampler object from a sampler or one of the names in `SAMPLERS`."""
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ValueError(
                f"Unknown sampler {sampler!r} (known: {sorted(SAMPLERS)})"
                + _did_you_mean(sampler, SAMPLERS)
            )
        return SAMPLERS[sampler]()
    return sampler


def largest_remainder(total, probabilities):
    """Integers c_i with sum `total`, each floor or ceil of total * p_i."""
    exact = total * np.asarray(probabilities, "float64")
    counts = np.floor(exact).astype("int64")
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


class Mixture:
    """Separate sources (usually one per task) mixed by a sampler.

    An epoch has N = sum of the sources' sizes examples; source i gives
    exactly `counts(epoch)[i]` of them (N * p_i by largest remainder), taken
    from an endless stream of reshuffled passes over its rows that continues
    across epochs. Source order within an epoch is a seeded shuffle of the
    schedule; the dataset gathers the scheduled rows in order, in batches.

    Args:
        tasks: the model's tasks.
        sources: list of sources; their `name`s must be unique.
        sampler: a sampler object or a name in `SAMPLERS`.
        num_epochs: epochs covered by `dataset()` (and the annealing length).
        seed: seed of every shuffle.
        empty_text: "keep" or "error" (see the module docstring).

    Example:
    >>> tasks, train, _ = bundled_sample()
    >>> mix = Mixture(tasks, [train], sampler="uniform", num_epochs=2)
    >>> mix.counts(0) == {train.name: mix.epoch_size}
    True
    """

    def __init__(
        self,
        tasks,
        sources,
        sampler="proportional",
        num_epochs=1,
        seed=0,
        empty_text="keep",
    ):
        self.tasks = validate_tasks(tasks)
        sources = _as_list(sources)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"Mixture sources need unique names, got {names}.")
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")
        self.sampler = get_sampler(sampler)
        self.num_epochs = num_epochs
        self.seed = seed
        self.names = names
        self.tables = []
        for table in validate(self.tasks, sources, empty_text=empty_text):
            keep = np.flatnonzero(_any_label(table))
            if len(keep) == 0:
                raise DataValidationError(f"Source {table.source} has no labelled row.")
            self.tables.append(table.take(keep))
        self.sizes = {n: len(t) for n, t in zip(names, self.tables)}
        self.epoch_size = sum(self.sizes.values())
        self._with_pair = any(t.text_pair is not None for t in self.tables)

    def probabilities(self, epoch):
        """`{source name: p_i}` in `epoch` (zero-based)."""
        p = self.sampler.probabilities(
            list(self.sizes.values()), epoch, self.num_epochs
        )
        return dict(zip(self.names, map(float, p)))

    def counts(self, epoch):
        """`{source name: examples}` in `epoch`; they sum to `epoch_size`."""
        p = list(self.probabilities(epoch).values())
        return dict(zip(self.names, map(int, largest_remainder(self.epoch_size, p))))

    def task_counts(self, epoch):
        """`{task: labelled examples}` in `epoch`, exactly."""
        totals = dict.fromkeys((t.name for t in self.tasks), 0)
        for i, table in enumerate(self.tables):
            rows = self._stream(i, epoch)
            for name in totals:
                totals[name] += int(table.masks[name][rows].sum())
        return totals

    def _stream(self, i, epoch):
        """Row indices source i gives in `epoch`: a slice of its stream."""
        size = len(self.tables[i])
        start = sum(self.counts(e)[self.names[i]] for e in range(epoch))
        stop = start + self.counts(epoch)[self.names[i]]
        passes = [
            np.random.default_rng([self.seed, 2, i, p]).permutation(size)
            for p in range(start // size, (stop - 1) // size + 1)
        ]
        offset = (start // size) * size
        if not passes:
            return np.zeros(0, "int64")
        return np.concatenate(passes)[start - offset : stop - offset]

    def _schedule(self, epoch):
        counts = list(self.counts(epoch).values())
        choice = np.repeat(np.arange(len(counts), dtype="int64"), counts)
        return np.random.default_rng([self.seed, 1, epoch]).permutation(choice)

    def epoch_dataset(self, epoch):
        """The examples of one epoch (zero-based)."""
        return self._dataset([epoch])

    def dataset(self):
        """All `num_epochs` epochs, one after the other (N examples each).

        For `model.fit(..., epochs=num_epochs)` pass
        `steps_per_epoch = epoch_size // batch_size` so that Keras keeps one
        iterator over the epochs.
        """
        return self._dataset(range(self.num_epochs))

    def _dataset(self, epochs):
        for epoch in epochs:
            logger.info(
                "Mixture epoch %d: %d examples; per source %s; labelled per task %s",
                epoch,
                self.epoch_size,
                self.counts(epoch),
                self.task_counts(epoch),
            )
        return self._all_rows.to_dataset(self._rows(epochs), with_pair=self._with_pair)

    @functools.cached_property
    def _all_rows(self):
        """Every source's rows in one table, source after source."""
        return _concat(self.tables, " + ".join(self.names))

    def _rows(self, epochs):
        """Row indices into `_all_rows` of the examples of `epochs`, in order.

        The schedule says which source each position draws from; the k-th
        position of source i takes the k-th row of source i's stream. One
        index array over all sources lets the dataset gather whole batches
        of rows at a time instead of choosing a source example by example.
        """
        choice = np.concatenate([self._schedule(e) for e in epochs])
        offsets = np.cumsum([0] + [len(t) for t in self.tables])
        rows = np.empty(len(choice), "int64")
        for i in range(len(self.tables)):
            stream = np.concatenate([self._stream(i, e) for e in epochs])
            rows[choice == i] = offsets[i] + stream
        return rows


# --------------------------------------------------------------------------
# The bundled sample (data/sample at the repository root).

SAMPLE_TASKS = (
    Task("topic", "multiclass", 4, label_names=("sports", "politics", "tech", "food")),
    Task("sentiment", "binary", label_names=("negative", "positive")),
    Task("rating", "regression"),
)


def bundled_sample(directory=None):
    """`(tasks, train_source, dev_source)` of the generated sample data.

    The files live in `data/sample/` at the repository root, next to the
    package (they are not installed with it); `python data/make_sample.py`
    regenerates them.

    Example:
    >>> tasks, train, dev = bundled_sample()
    >>> [t.name for t in tasks]
    ['topic', 'sentiment', 'rating']
    """
    if directory is None:
        directory = Path(__file__).resolve().parents[1] / "data" / "sample"
    directory = Path(directory)
    if not (directory / "train.tsv").is_file() or not (directory / "dev.tsv").is_file():
        raise FileNotFoundError(
            f"The bundled sample is not at {directory}. It is part of the "
            "mtl_keras repository (data/sample/), not of an installed package: "
            "run from a checkout, or regenerate it with `python data/make_sample.py`."
        )
    columns = {t.name: t.name for t in SAMPLE_TASKS}
    return (
        list(SAMPLE_TASKS),
        FileSource(directory / "train.tsv", "text", columns, name="sample/train"),
        FileSource(directory / "dev.tsv", "text", columns, name="sample/dev"),
    )
