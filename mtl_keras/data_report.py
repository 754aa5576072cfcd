"""What a careful user checks before training: truncated texts and dev texts seen in training.

`data_report(preprocessor, train_tables, evaluation_tables)` counts, per
split, source and task (labelled rows only):

- **truncated**: texts longer than the preprocessor's `sequence_length`
  word pieces (special tokens included; both texts of a pair together),
  whose end the model never sees;
- **in_train** (dev and test only): texts that also occur in the training
  data after normalization (Unicode NFKC, lower case, whitespace collapsed),
  compared by SHA-1 of the normalized text: a score on them measures
  memory, not generalization.

`check_overlap` turns a share of copied dev texts above `max_overlap` into
a warning or, with `overlap: error`, a `DataValidationError` before
training.
"""

import hashlib
import logging
import unicodedata

import numpy as np
import tensorflow as tf

from mtl_keras.data import DataValidationError

OVERLAP_POLICIES = ("warn", "error", "ignore")
_log = logging.getLogger("mtl_keras")


def text_key(text):
    """The SHA-1 of a text's normalized form (NFKC, lower case, single spaces).

    Example:
    >>> text_key("The  Film ") == text_key("the film")
    True
    """
    normalized = " ".join(unicodedata.normalize("NFKC", str(text)).lower().split())
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()


def _keys(table):
    keys = [text_key(t) for t in table.text]
    if table.text_pair is not None:
        keys = [a + text_key(b) for a, b in zip(keys, table.text_pair)]
    return np.array(keys, dtype=object)


def _too_long(preprocessor, table):
    """A boolean per row: its word pieces (with special tokens) exceed sequence_length."""
    columns = (table.text,) if table.text_pair is None else (table.text, table.text_pair)
    dataset = tf.data.Dataset.from_tensor_slices(tuple(c.astype(str) for c in columns))
    lengths = [preprocessor.untruncated_lengths(*batch).numpy()
               for batch in dataset.batch(1024)]
    return np.concatenate(lengths) > preprocessor.sequence_length


def data_report(preprocessor, train_tables, evaluation_tables=None):
    """`{split: {source: {task: {"labelled", "truncated", "in_train"?}}}}`.

    Args:
        preprocessor: the `TextPreprocessor` training uses.
        train_tables: the training `data.Examples`.
        evaluation_tables: `{split: [Examples]}` for dev / test.

    Example:
    >>> from mtl_keras import Task, TextPreprocessor
    >>> from mtl_keras.data import Examples
    >>> task = Task("spam", "binary")
    >>> def table(texts):
    ...     return Examples("t.tsv", (task,), np.array(texts, dtype=object), None,
    ...                     {"spam": np.zeros(len(texts))}, {"spam": np.ones(len(texts))})
    >>> preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "buy", "now"], 4)
    >>> report = data_report(preprocessor, [table(["buy now", "hi there you all"])],
    ...                      {"dev": [table(["Buy  now", "hello"])]})
    >>> report["train"]["t.tsv"]["spam"], report["dev"]["t.tsv"]["spam"]
    ({'labelled': 2, 'truncated': 1}, {'labelled': 2, 'truncated': 0, 'in_train': 1})
    """
    seen = set()
    for table in train_tables:
        seen.update(_keys(table))
    report = {}
    splits = {"train": train_tables, **(evaluation_tables or {})}
    for split, tables in splits.items():
        report[split] = {}
        for table in tables:
            too_long = _too_long(preprocessor, table)
            copied = None if split == "train" else np.array([k in seen for k in _keys(table)])
            counts = {}
            for name, mask in table.masks.items():
                labelled = np.asarray(mask) > 0
                counts[name] = {"labelled": int(labelled.sum()),
                                "truncated": int((too_long & labelled).sum())}
                if copied is not None:
                    counts[name]["in_train"] = int((copied & labelled).sum())
            report[split][table.source] = counts
    return report


def format_report(report, sequence_length):
    """The report as lines: one per split and source, the counts per task.

    Example:
    >>> print(format_report({"dev": {"d.tsv": {"spam": {"labelled": 10, "truncated": 1,
    ...                                                  "in_train": 0}}}}, 64))
    Data report, dev d.tsv: truncated at 64 word pieces: spam 1 of 10 (10.0%); also in train: spam 0 of 10.
    """

    def counts(tasks, key):
        return ", ".join(
            f"{name} {c[key]} of {c['labelled']}"
            + (f" ({100 * c[key] / max(1, c['labelled']):.1f}%)" if c[key] else "")
            for name, c in tasks.items())

    lines = []
    for split, sources in report.items():
        for source, tasks in sources.items():
            line = (f"Data report, {split} {source}: truncated at {sequence_length} word "
                    f"pieces: {counts(tasks, 'truncated')}")
            if all("in_train" in c for c in tasks.values()):
                line += f"; also in train: {counts(tasks, 'in_train')}"
            lines.append(line + ".")
    return "\n".join(lines)


def check_overlap(report, max_overlap=0.01, policy="warn"):
    """Warns (or raises, `policy="error"`) where dev/test texts copy training texts.

    Returns the `(split, source, task, share)` above `max_overlap`.

    Example:
    >>> report = {"dev": {"d.tsv": {"spam": {"labelled": 60, "truncated": 0, "in_train": 30}}}}
    >>> check_overlap(report, policy="error")
    Traceback (most recent call last):
    ...
    mtl_keras.data.examples.DataValidationError: 30 of 60 dev texts of task 'spam' in d.tsv (50.0%) also occur in the training data (normalized text), above data.max_overlap=0.01: their scores measure memory, not generalization. Remove them from dev, or set data.overlap: warn.
    """
    if policy not in OVERLAP_POLICIES:
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, got {policy!r}.")
    found = []
    for split, sources in report.items():
        for source, tasks in sources.items():
            for name, c in tasks.items():
                share = c.get("in_train", 0) / max(1, c["labelled"])
                if share > max_overlap:
                    found.append((split, source, name, share))
                    message = (
                        f"{c['in_train']} of {c['labelled']} {split} texts of task {name!r} in "
                        f"{source} ({100 * share:.1f}%) also occur in the training data "
                        f"(normalized text), above data.max_overlap={max_overlap}: their "
                        "scores measure memory, not generalization.")
                    if policy == "error":
                        raise DataValidationError(
                            message + " Remove them from dev, or set data.overlap: warn.")
                    if policy == "warn":
                        _log.warning("%s", message)
    return found
