"""What a run reports while it trains: the progress display and the batch counts."""

import csv
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from mtl_keras.preprocess import MIN_COUNT, VOCABULARY_SIZE


class BatchCounter:
    """Counts what the training batches delivered, as `fit` consumed them.

    Mapped over a batch dataset (`batches.map(counter)`); `result()` gives
    the batches, examples, token positions (padded and real) and labelled
    examples per task.

    Example:
    >>> import numpy as np
    >>> counter = BatchCounter(["spam"])
    >>> x = {"padding_mask": np.array([[True, True, False]])}
    >>> _ = counter(x, {"spam": np.ones(1)}, {"spam": np.ones(1)})
    >>> counter.result()["padded_tokens"], counter.result()["tokens"]
    (3, 2)
    >>> tags = BatchCounter(["pos"])  # per-word masks count the rows they label
    >>> _ = tags(x, {}, {"pos": np.array([[1.0, 1.0, 0.0]])})
    >>> tags.result()["labelled_examples"]
    {'pos': 1}
    """

    def __init__(self, task_names):
        def zero():
            return tf.Variable(0, dtype=tf.int64, trainable=False)

        self.batches, self.examples = zero(), zero()
        self.padded_tokens, self.tokens = zero(), zero()
        self.labelled = {name: zero() for name in task_names}

    def __call__(self, x, y, sample_weight):
        mask = x["padding_mask"]
        updates = [
            self.batches.assign_add(1),
            self.examples.assign_add(tf.shape(mask, out_type=tf.int64)[0]),
            self.padded_tokens.assign_add(tf.size(mask, out_type=tf.int64)),
            self.tokens.assign_add(tf.reduce_sum(tf.cast(mask, tf.int64))),
        ]
        for name, count in self.labelled.items():
            if name in sample_weight:  # a row with any labelled position (words, for tags)
                weights = sample_weight[name]
                rows = tf.reshape(weights > 0, [tf.shape(weights)[0], -1])
                labelled = tf.reduce_sum(tf.cast(tf.reduce_any(rows, axis=1), tf.int64))
                updates.append(count.assign_add(labelled))
        with tf.control_dependencies(updates):
            x = tf.nest.map_structure(tf.identity, x)
        return x, y, sample_weight

    def result(self):
        return {
            "batches": int(self.batches.numpy()),
            "examples": int(self.examples.numpy()),
            "padded_tokens": int(self.padded_tokens.numpy()),
            "tokens": int(self.tokens.numpy()),
            "labelled_examples": {n: int(v.numpy()) for n, v in self.labelled.items()},
        }


class Progress(keras.callbacks.Callback):
    """The progress display: the loss and each task's headline metric.

    Keras' own bar prints every log (three or more per task), which wraps
    over several lines; this shows `loss` and `<task>_<headline>` while
    training, and the same keys on the dev data at the end of an epoch. When
    stdout is not a terminal (a log file, CI) it writes one plain line per
    epoch (no bar, no colour escapes) and, in long epochs, a heartbeat line
    every `heartbeat_seconds`.

    Example:
    >>> from mtl_keras import Task
    >>> Progress([Task("topic", "multiclass", 3)], epochs=1, steps=10).keys
    ['loss', 'topic_accuracy']
    """

    def __init__(self, tasks, epochs, steps, label=None, heartbeat_seconds=60.0):
        super().__init__()
        self.keys = ["loss"] + [f"{t.name}_{t.headline_metric}" for t in tasks]
        self.epochs, self.steps, self.label = epochs, steps, label
        self.heartbeat_seconds = heartbeat_seconds
        self.interactive = sys.stdout.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        self.title = f"{self.label + ': ' if self.label else ''}Epoch {epoch + 1}/{self.epochs}"
        if self.interactive:
            print(self.title)
            stateful = self.keys + [f"val_{k}" for k in self.keys]
            self.progbar = keras.utils.Progbar(self.steps, stateful_metrics=stateful)
        self.last = self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.interactive:
            self.progbar.update(batch + 1, self._values(logs, ""), finalize=False)
        elif time.perf_counter() - self.last >= self.heartbeat_seconds:
            self.last = time.perf_counter()
            loss = (logs or {}).get("loss")
            print(f"  step {batch + 1}/{self.steps}, loss {float(loss):.4f}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        values = self._values(logs, "") + self._values(logs, "val_")
        if self.interactive:
            self.progbar.update(self.steps, values, finalize=True)
        else:  # a log file: one plain line, no bar, no colour escapes
            print(self.epoch_line(values, time.perf_counter() - self.start), flush=True)

    def epoch_line(self, values, seconds):
        """The plain line of an epoch for a log file.

        Example:
        >>> from mtl_keras import Task
        >>> progress = Progress([Task("topic", "multiclass", 3)], epochs=2, steps=10)
        >>> progress.title = "Epoch 1/2"
        >>> progress.epoch_line([("loss", 0.51), ("val_loss", 0.6)], 3.2)
        'Epoch 1/2: 10 steps, 3 s - loss: 0.5100 - val_loss: 0.6000'
        """
        shown = " - ".join(f"{key}: {value:.4f}" for key, value in values)
        return f"{self.title}: {self.steps} steps, {seconds:.0f} s - {shown}"

    def _values(self, logs, prefix):
        logs = logs or {}
        return [(prefix + k, float(logs[prefix + k])) for k in self.keys if prefix + k in logs]


def read_history(path):
    """`{column: [values]}` of a `CSVLogger` file.

    Example:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/history.csv"
    >>> _ = open(path, "w").write(chr(10).join(["epoch,loss", "0,1.5", "1,0.5"]))
    >>> read_history(path)
    {'loss': [1.5, 0.5]}
    """
    history = {}
    if not Path(path).exists():
        return history
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key == "epoch":
                    continue
                try:
                    history.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    history.setdefault(key, []).append(float("nan"))
    return history


# --------------------------------------------------------------------------
# Lines printed while the data is read and the vocabulary learned.


def source_line(split, source, table, seconds):
    """One line for a source just read: its rows and labelled rows per task.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, _, dev = bundled_sample()
    >>> print(source_line("dev", dev, dev.read(tasks), 0.12))
    Read dev data sample/dev: 400 rows; labelled: topic 347, sentiment 332, rating 345, aspects 344, mentions 340 (0.1 s).
    """
    counts = table.labelled_counts()
    labelled = ", ".join(f"{name} {counts[name]}" for name in source.tasks)
    return (f"Read {split} data {source.name}: {len(table)} rows; labelled: {labelled} "
            f"({seconds:.1f} s).")


def split_line(entry, split):
    """One line for a source's dev split (an entry of `data.split_sources`' record).

    Example:
    >>> entry = {"source": "t.tsv", "dev": 10, "train": 90, "stratify": "topic"}
    >>> print(split_line(entry, {"seed": 0}))
    Dev split of t.tsv: 10 rows for dev, 90 for training (stratified by topic, seed 0).
    """
    how = f"stratified by {entry['stratify']}" if entry["stratify"] else "not stratified"
    return (f"Dev split of {entry['source']}: {entry['dev']} rows for dev, {entry['train']} "
            f"for training ({how}, seed {split['seed']}).")


def read_sources(split, sources, tasks, empty_text="keep", verbose=0):
    """Reads each source (each keeps its table), printing a `source_line` each; returns them.

    Example:
    >>> from mtl_keras.data import bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> len(read_sources("train", [train], tasks))
    1
    """
    for source in sources:
        start = time.perf_counter()
        table = source.read(tasks, empty_text)
        if verbose:
            print(source_line(split, source, table, time.perf_counter() - start), flush=True)
    return sources


def learning_line(options, count):
    """The line before a vocabulary is learned from `count` texts (`options`: `preprocessor:`).

    Example:
    >>> print(learning_line({"vocabulary_size": 500}, 2000))
    Learning the vocabulary from 2000 texts (vocabulary_size 500, min_count 10)...
    """
    asked, min_count = options.get("vocabulary_size", VOCABULARY_SIZE), options.get("min_count", MIN_COUNT)
    return (f"Learning the vocabulary from {count} texts (vocabulary_size {asked}, "
            f"min_count {min_count})...")


def vocabulary_line(options, learned, size, seconds):
    """The line after the vocabulary is made: learned and asked sizes, what to change when short.

    `options` is the `preprocessor:` section; `learned` False for a
    vocabulary file or a preset's tokenizer.

    Example:
    >>> print(vocabulary_line({"vocabulary_size": 8000}, True, 970, 2.04))
    Vocabulary: 970 tokens learned (8000 asked; words seen fewer than 10 times are spelled with pieces: a lower preprocessor.min_count may give more) in 2.0 s.
    >>> print(vocabulary_line({"vocabulary": "vocab.txt"}, False, 30, 0.01))
    Vocabulary: 30 tokens from vocab.txt.
    """
    if not learned:
        return f"Vocabulary: {size} tokens from {options.get('vocabulary') or 'the preset'}."
    asked, min_count = options.get("vocabulary_size", VOCABULARY_SIZE), options.get("min_count", MIN_COUNT)
    if size >= asked:
        return f"Vocabulary: {size} tokens learned ({asked} asked) in {seconds:.1f} s."
    if min_count <= 1:
        return (f"Vocabulary: {size} tokens learned ({asked} asked; the texts hold no more "
                f"words and pieces) in {seconds:.1f} s.")
    return (f"Vocabulary: {size} tokens learned ({asked} asked; words seen fewer than "
            f"{min_count} times are spelled with pieces: a lower preprocessor.min_count may "
            f"give more) in {seconds:.1f} s.")
