"""Data sources: records of a file or a tfds split to a checked `Examples` table.

A source (`FileSource` for CSV/TSV/JSONL/CoNLL/CoNLL-U files here, `TfdsSource`
for tfds names in `mtl_keras.data.tfds_source`) is read in Python into memory
and every label is checked. The constructors take the keys of a config's data
entry (`FileSource(**entry)`, `TfdsSource(**entry)`), check the values and read
nothing; `get_config()` gives the entry back. Reading happens on
`read(tasks)`, once per tasks.

Text policy:

* Invalid UTF-8 is decoded with `errors="replace"` (files and tfds bytes):
  each bad byte becomes U+FFFD and the rows affected are logged as a warning.
* Empty (or whitespace-only) texts follow `empty_text`: `"keep"` (default)
  keeps them and logs how many there are; `"error"` raises
  `DataValidationError` naming the first one.

Label cells: an empty cell (None in JSONL, -1 from a tfds class label) is a
missing label. Every other cell is parsed by the task's kind
(`TaskKind.parse`, see `mtl_keras.kinds`): class labels (multiclass, binary,
multilabel items, tags) are integer indices or `task.label_names`; a per-task
`label_map` translates raw values first (for example AG News 1..4 to 0..3).
Multilabel cells are comma-separated ("3,27", "joy,love") or a JSON list;
regression cells are finite numbers. Problems raise `DataValidationError`
naming the task, the file or tfds name, the line or example, the column and
the value. File line numbers count from 1 and include the header line.
"""

import csv
import dataclasses
import json
import logging
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import mtl_keras.data.conll as conll
from mtl_keras.data.examples import (
    DataValidationError,
    Examples,
    _check_empty_policy,
    _check_source_tasks,
    _did_you_mean,
    _object_array,
    _show,
    _show_column,
)
from mtl_keras.tasks import validate_tasks

logger = logging.getLogger(__package__)  # "mtl_keras.data", for every module

_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll", ".conllu": "conllu"}  # fmt: skip
_TOKEN_FORMATS = {"conll": (conll.read_conll, conll.conll_column, 0), "conllu": (conll.read_conllu, conll.conllu_column, "form")}  # fmt: skip
_QUOTING = {"csv": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}


def _is_missing(value):
    """An empty cell (or None) is a missing label, whatever the task's kind."""
    return value is None or (isinstance(value, str) and not value.strip())


def _task_columns(name, tasks):
    """`{task: column}` from a mapping or a list of names (column = name)."""
    if tasks is None:
        tasks = {}
    if isinstance(tasks, (list, tuple)):
        if not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"Source {name}: `tasks` lists names, got {tasks!r}.")
        tasks = {t: t for t in tasks}
    if not isinstance(tasks, Mapping):
        raise ValueError(
            f"Source {name}: `tasks` must map task names to columns or list "
            f"task names that are also column names, got {tasks!r}."
        )
    return {
        t: tuple(c) if isinstance(c, (list, tuple)) else c for t, c in tasks.items()
    }


class _Source:
    """Shared reading logic: records in, validated `Examples` out.

    The subclasses are dataclasses of their constructor arguments;
    `_check_arguments` normalizes and checks the shared ones.
    """

    def _check_arguments(self):
        self.tasks = _task_columns(self.name, self.tasks)
        if not self.tasks:
            raise ValueError(f"Source {self.name}: `tasks` maps no task to a column.")
        max_rows = self.max_rows
        if max_rows is not None and (
            isinstance(max_rows, bool)
            or not isinstance(max_rows, numbers.Integral)
            or max_rows < 1
        ):
            raise ValueError(
                f"Source {self.name}: max_rows must be an integer >= 1, got {max_rows!r}."
            )
        self.max_rows = None if max_rows is None else int(max_rows)
        self.label_map = dict(self.label_map or {})
        unknown = set(self.label_map) - set(self.tasks)
        if unknown:
            raise ValueError(f"Source {self.name}: label_map for unmapped tasks {unknown}.")
        self._cache = {}

    def read(self, tasks, empty_text="keep"):
        """Reads and validates all rows; returns `Examples` for `tasks`."""
        tasks = validate_tasks(tasks)
        _check_empty_policy(empty_text)
        _check_source_tasks(self, tasks)
        key = (tasks, empty_text)
        if key not in self._cache:
            self._cache[key] = self._collect(tasks, empty_text)
        return self._cache[key]

    def get_config(self):
        """The constructor arguments: the required ones and the non-default ones."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        defaults.update(label_map={}, **self._derived_defaults())
        return {
            key: _plain(getattr(self, key))
            for key, default in defaults.items()
            if getattr(self, key) != default
        }

    def _collect(self, tasks, empty_text):
        texts, pairs = [], []
        labels = {t.name: [] for t in tasks}
        masks = {t.name: [] for t in tasks}
        kinds = {t.name: t.task_kind for t in tasks}
        empty, replaced, first_empty, wheres = 0, 0, None, []
        for where, text, pair, raw in self._records(tasks):
            wheres.append(where)
            for column, value in ((self.text, text), (self.text_pair, pair)):
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
                kind, value = kinds[task.name], raw.get(task.name)
                try:
                    label = None
                    if not _is_missing(value):
                        label_map = self.label_map.get(task.name)
                        label = kind.parse(task, value, label_map, num_words)
                except ValueError as error:
                    end = "" if str(error).endswith("?") else "."
                    raise DataValidationError(
                        f"Task {task.name!r} ({task.kind}): {error}{end} Found "
                        f"{_show(value)} in column {_show_column(self.tasks[task.name])} "
                        f"of {self.location}, {where}."
                    ) from None
                masks[task.name].append(0.0 if label is None else 1.0)
                labels[task.name].append(
                    kind.placeholder(task, num_words) if label is None else label
                )
        for task in tasks:
            found = kinds[task.name].check_column(task, labels[task.name], masks[task.name])
            if found is not None:
                row, problem = found
                raise DataValidationError(
                    f"Task {task.name!r} ({task.kind}): {problem}. Found in column "
                    f"{_show_column(self.tasks[task.name])} of {self.location}, {wheres[row]}."
                )
        if empty:
            logger.warning(
                "%s: %d empty text(s) kept (first at %s).", self.location, empty, first_empty
            )
        if replaced:
            logger.warning(
                "%s: %d row(s) with invalid UTF-8 replaced by U+FFFD.", self.location, replaced
            )
        return Examples(
            source=self.name,
            tasks=tasks,
            text=_object_array(texts),
            text_pair=None if self.text_pair is None else _object_array(pairs),
            labels={
                t.name: kinds[t.name].label_array(t, labels[t.name]) for t in tasks
            },
            masks={n: np.asarray(m, "float32") for n, m in masks.items()},
        )


def _plain(value):
    """A copy with tuples turned into lists (what YAML and JSON hold)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(eq=False)
class FileSource(_Source):
    """Rows of a local CSV, TSV or JSONL file, with a column per task.

    The arguments are the keys of a config's file entry: `FileSource(**entry)`,
    and `get_config()` gives the entry back (the required and the non-default
    arguments). They are checked here (a ValueError says what is wrong); the
    file itself is opened only by `read`.

    Args:
        file: the file (a path; `path` holds it as a `Path`).
        text: column of the text (a header name, or an int index).
        tasks: `{task_name: column}` for the tasks this file carries, or a
            list of task names that are also column names.
        text_pair: column of the second text for sentence pairs.
        format: "csv", "tsv", "jsonl", "conll" or "conllu" (default from the
            suffix). In `conll`/`conllu` files a row is a sentence, `text` the
            token column (default 0 / `form`), a task's column its tags (an
            index, -1 the last / a name such as `upos`): `mtl_keras.data.conll`.
        quoting: "csv" (quoted fields, as pandas writes them) or "none"
            (GLUE-style: quotes are plain characters, `csv.QUOTE_NONE`).
        header: whether the first line names the columns (CSV/TSV).
        column_names: names for the columns of a file without header.
        label_map: `{task_name: {raw value: label}}`, applied before parsing.
        max_rows: read at most this many data rows.
        name: short name for logs and mixture counts; default: the path.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, _, dev = bundled_sample()
    >>> source = FileSource(dev.path, "text", ["topic"], max_rows=10)
    >>> len(source.read(tasks[:1]))
    10
    >>> sorted(source.get_config())
    ['file', 'max_rows', 'tasks']
    >>> FileSource("dev.tsv", "sentence", {"sst2": "label"}, quoting="none").get_config()
    {'file': 'dev.tsv', 'text': 'sentence', 'tasks': {'sst2': 'label'}, 'quoting': 'none'}
    """

    file: str | Path
    text: str | int = "text"
    tasks: dict | list = None
    text_pair: str | int | None = None
    format: str | None = None
    quoting: str = "csv"
    header: bool = True
    column_names: list | None = None
    label_map: dict | None = None
    max_rows: int | None = None
    name: str | None = None

    def __post_init__(self):
        self.path = Path(self.file)
        self.file = self.location = str(self.path)
        self.name = self.name or self.file
        self._check_arguments()
        self.format = self.format or _FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise ValueError(
                f"{self.file}: cannot tell the format from the suffix; pass "
                "format='csv', 'tsv' or 'jsonl'."
            )
        if self.format not in ("csv", "tsv", "jsonl", *_TOKEN_FORMATS):
            raise ValueError(
                f"{self.file}: format must be 'csv', 'tsv', 'jsonl', 'conll' or "
                f"'conllu', got {self.format!r}."
            )
        if self.format in _TOKEN_FORMATS and self.text_pair is not None:
            raise ValueError(f"{self.file}: a {self.format} file has no text_pair.")
        if self.quoting not in _QUOTING:
            raise ValueError(f"quoting must be 'csv' or 'none', got {self.quoting!r}.")
        if not isinstance(self.header, bool):
            raise ValueError(
                f"{self.file}: header must be True or False, got {self.header!r}."
            )
        names = self.column_names
        if names is not None:
            if not isinstance(names, (list, tuple)) or not all(
                isinstance(c, str) for c in names
            ):
                raise ValueError(
                    f"{self.file}: column_names must be a list of strings, got {names!r}."
                )
            self.column_names = list(names)

    def _derived_defaults(self):
        return {"format": _FORMATS.get(self.path.suffix.lower()), "name": self.file}

    def _records(self, tasks):
        if not self.path.is_file():
            raise DataValidationError(f"Data file {self.path} does not exist.")
        if self.format in _TOKEN_FORMATS:
            yield from self._sentences()
            return
        with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = self._jsonl_rows(f) if self.format == "jsonl" else self._csv_rows(f)
            for count, (where, get) in enumerate(rows):
                if self.max_rows is not None and count >= self.max_rows:
                    return
                text = conll.words_text(get(self.text), self.text, self.path, where)
                pair = None if self.text_pair is None else get(self.text_pair)
                for column, value in ((self.text, text), (self.text_pair, pair)):
                    if column is not None and not isinstance(value, str):
                        raise DataValidationError(
                            f"Text column {column!r} of {self.path}, {where} holds "
                            f"{value!r}, not a string."
                        )
                raw = {t: get(c, optional=True) for t, c in self.tasks.items()}
                yield where, text, pair, raw

    def _sentences(self):
        read, column_of, default_text = _TOKEN_FORMATS[self.format]
        token_column = column_of(default_text if self.text == "text" else self.text, self.path)
        columns = {t: column_of(c, self.path) for t, c in self.tasks.items()}
        with open(self.path, encoding="utf-8-sig", errors="replace", newline="") as f:
            sentences = read(f, self.path, token_column, sorted(set(columns.values())))
            for count, (where, tokens, tags) in enumerate(sentences):
                if self.max_rows is not None and count >= self.max_rows:
                    return
                text = conll.words_text(tokens, self.text, self.path, where)
                yield where, text, None, {t: tags[c] for t, c in columns.items()}

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
        columns = [self.text, self.text_pair, *self.tasks.values()]
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
