"""The training data epoch by epoch, and training over it from any position.

`EpochBatches` turns per-epoch examples into batches. The examples come from
a `data.JointRows` or a `data.Mixture`: both give a `table`, `epoch_size` and
`epoch_rows(epoch)`, each epoch a function of the seed and the epoch alone. Epoch e is batched on its own (length buckets and batch order seeded
by the epoch too), so it has exactly `steps_per_epoch` batches and no batch
crosses an epoch.

`train_epochs` runs `model.fit` (or `loop.train_loop`) over them from a data
position `(epoch, batch)` so that Keras epoch e consumes exactly the examples
of epoch e, each once. A run resumed at batch j of epoch e first trains the
remaining `steps_per_epoch - j` batches as Keras epoch e, then the following
epochs: two `fit` calls, because `fit` cannot start inside an epoch.
"""

import math

import numpy as np
import tensorflow as tf

from mtl_keras.batching import make_batches, no_autograph
from mtl_keras.loop import train_loop


def with_pair_feature(pair):
    """A dataset transform adding an empty `"text_pair"` where a pair model needs one.

    Example:
    >>> ds = tf.data.Dataset.from_tensors(({"text": "hi"}, {}, {}))
    >>> sorted(next(iter(with_pair_feature(True)(ds)))[0])
    ['text', 'text_pair']
    """

    @no_autograph
    def add(features, labels, masks):
        features = dict(features)
        features.setdefault("text_pair", tf.constant(""))
        return features, labels, masks

    def with_pair(dataset):
        return dataset.map(add)

    def unchanged(dataset):
        return dataset

    return with_pair if pair else unchanged


class EpochBatches:
    """The batches of every training epoch, each epoch rebuilt from its number.

    Epoch e gathers the rows `rows.epoch_rows(e)` (computed up front) of one
    table and batches them with `make_batches` seeded by `seed + 1000 * e`.
    All epochs of a stream run through one `flat_map`, so the tokenizer is
    traced once, not once per epoch.

    Args:
        rows: a `data.JointRows` or `data.Mixture` (`table`, `epoch_size`,
            `epoch_rows(epoch)`).
        preprocessor: the model's `TextPreprocessor`.
        batch_size: examples per batch.
        seed: seeds the batch order within each epoch (with the epoch).
        map_fn: optional function mapped over the batches (e.g. a counter).
        keep_order: batch each epoch's examples in order instead of by
            length (`every_task` batching: the order is a stratified
            schedule, see `data.Mixture(batch_size=...)`).

    Example:
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.data import JointRows, bundled_sample
    >>> tasks, train, _ = bundled_sample()
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32, align_words=True)
    >>> batches = EpochBatches(JointRows(tasks, train), preprocessor, batch_size=500)
    >>> batches.steps_per_epoch, int(batches.stream(1, 2, num_epochs=3).cardinality())
    (4, 6)
    """

    def __init__(self, rows, preprocessor, batch_size, seed=0, map_fn=None, keep_order=False):
        self.rows, self.preprocessor = rows, preprocessor
        self.batch_size, self.seed, self.map_fn = batch_size, seed, map_fn
        self.keep_order = keep_order
        self.epoch_size = rows.epoch_size
        self.steps_per_epoch = math.ceil(self.epoch_size / batch_size)
        self._tensors = None

    def epoch(self, epoch):
        """The batches of `epoch` (zero-based): `steps_per_epoch` of them."""
        return self.stream(epoch, 0, epoch + 1)

    def first_batch_without_labels(self, task_names, num_epochs):
        """`(epoch, batch, task)` of the first batch with no labels for a task, or None.

        Exact only with `keep_order` (a batch is then `batch_size`
        consecutive rows of `rows.epoch_rows(epoch)`).

        Example:
        >>> from mtl_keras import TextPreprocessor
        >>> from mtl_keras.data import JointRows, bundled_sample
        >>> tasks, train, _ = bundled_sample()
        >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32, align_words=True)
        >>> batches = EpochBatches(JointRows(tasks, train), preprocessor, 2, keep_order=True)
        >>> batches.first_batch_without_labels(["topic", "rating"], 1)
        (0, 0, 'rating')
        """
        masks = self.rows.table.masks
        for epoch in range(num_epochs):
            rows = self.rows.epoch_rows(epoch)
            for batch, start in enumerate(range(0, len(rows), self.batch_size)):
                chunk = rows[start : start + self.batch_size]
                for task in task_names:
                    if not np.any(masks[task][chunk]):
                        return epoch, batch, task
        return None

    def stream(self, epoch, batch, num_epochs):
        """Epochs `epoch .. num_epochs - 1` in order, starting at batch `batch`."""
        if self._tensors is None:
            self._tensors = self.rows.table.tensors()
        epochs = list(range(epoch, num_epochs))
        order = tf.constant(np.stack([self.rows.epoch_rows(e) for e in epochs]), tf.int64)
        seeds = tf.constant([self.seed + 1000 * e for e in epochs], tf.int64)
        pair = with_pair_feature(self.preprocessor.pair)

        @no_autograph
        def one_epoch(i):
            examples = self.rows.table.to_dataset(order[i], tensors=self._tensors)
            return make_batches(pair(examples), self.preprocessor, self.batch_size,
                                seed=seeds[i], keep_order=self.keep_order)

        stream = tf.data.Dataset.range(len(epochs)).flat_map(one_epoch).skip(batch)
        count = len(epochs) * self.steps_per_epoch - batch
        stream = stream.apply(tf.data.experimental.assert_cardinality(count))
        stream = stream.prefetch(tf.data.AUTOTUNE)
        # Last, so that it sees exactly the batches taken from the stream.
        return stream if self.map_fn is None else stream.map(self.map_fn)


def check_every_task_in_every_batch(model, batching, batches=None, num_epochs=1):
    """Refuses batches without a task, for a method that needs every task in each.

    Raises `ValueError` when `model.weighting.needs_every_task` and the
    batching is not `every_task` (unless `batches`' rows all carry every
    trained task, as jointly labelled data can: then any batch has them all,
    and length bucketing stays), or (given `batches`) a batch of the first
    `num_epochs` epochs has no labels for a trained task.

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> encoder = SharedEncoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...                         num_layers=1, num_heads=2)
    >>> model = MultiTaskModel([Task("a", "binary"), Task("b", "binary")], encoder,
    ...                        weighting="pcgrad")
    >>> check_every_task_in_every_batch(model, "length")
    Traceback (most recent call last):
    ...
    ValueError: Weighting PCGrad needs every task in every batch: set `training: {batching: every_task}` (with a mixing sampler every batch then holds each source's share; with `sampler: joint` every batch is checked).
    """
    method = type(model.weighting).__name__
    if not model.weighting.needs_every_task:
        return
    trained = [n for n in model.task_names if model.heads[n].trainable]
    if batches is not None and batching != "every_task":
        masks = batches.rows.table.masks
        if all(np.all(masks[n] > 0) for n in trained):
            return  # every row carries every task: any batch has them all
    if batching != "every_task":
        raise ValueError(
            f"Weighting {method} needs every task in every batch: set `training: "
            "{batching: every_task}` (with a mixing sampler every batch then holds "
            "each source's share; with `sampler: joint` every batch is checked)."
        )
    missing = None if batches is None else batches.first_batch_without_labels(trained, num_epochs)
    if missing is not None:
        epoch, batch, task = missing
        raise ValueError(
            f"Weighting {method} needs every task in every batch, but batch {batch + 1} "
            f"of epoch {epoch + 1} has no labels for task {task!r}. Use a larger "
            "batch_size, a sampler that gives the task more examples, or a loss "
            "method (static, uncertainty, dwa, rlw)."
        )


def train_epochs(
    model,
    batches,
    epochs,
    *,
    start=(0, 0),
    checkpoint=None,
    explicit_loop=False,
    validation_data=None,
    callbacks=(),
):
    """Trains epochs `start[0] .. epochs - 1` from batch `start[1]`; returns the history.

    Args:
        model: a compiled `MultiTaskModel`.
        batches: an `EpochBatches`.
        epochs: the epoch to stop before (as in `fit`).
        start: the data position `(epoch, batch)` to start at, e.g. from
            `checkpoints.TrainingCheckpoint.restore()`.
        checkpoint: a `TrainingCheckpoint` (told where inside the epoch a
            `fit` starts).
        explicit_loop: train with `loop.train_loop` instead of `fit`.
        validation_data: evaluated at the end of each epoch.
        callbacks: Keras callbacks (the same objects for every `fit` call).

    Returns:
        `{log key: [value per epoch]}` of the epochs trained.

    Example:
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.data import JointRows
    >>> from mtl_keras.pipeline import build_model
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32, align_words=True)
    >>> rows = JointRows(config.tasks, config.sources("train"))
    >>> model = build_model(config, preprocessor)
    >>> history = train_epochs(model, EpochBatches(rows, preprocessor, 256), 2, start=(1, 5))
    >>> int(model.train_step_counter.numpy())  # the last 3 of the 8 batches of epoch 1
    3
    """
    steps = batches.steps_per_epoch
    epoch, batch = start
    if batch >= steps:
        epoch, batch = epoch + 1, 0
    callbacks = [*callbacks, *([checkpoint] if checkpoint is not None else [])]
    history = {}
    try:
        _run(model, batches, epochs, epoch, batch, checkpoint, explicit_loop,
             validation_data, callbacks, history)
    finally:  # after an error too: give SIGTERM / SIGINT back their handlers
        if checkpoint is not None:
            checkpoint.on_train_end()
    return history


def _run(model, batches, epochs, epoch, batch, checkpoint, explicit_loop,
         validation_data, callbacks, history):
    steps = batches.steps_per_epoch
    while epoch < epochs:
        stop = epoch + 1 if batch else epochs
        if checkpoint is not None:
            checkpoint.epoch_offset = batch
        arguments = dict(
            epochs=stop,
            initial_epoch=epoch,
            steps_per_epoch=steps - batch,
            validation_data=validation_data,
            callbacks=callbacks,
            verbose=0,
        )
        stream = batches.stream(epoch, batch, stop)
        if explicit_loop:
            logs = train_loop(model, stream, **arguments)
        else:
            logs = model.fit(stream, shuffle=False, **arguments)  # the data is shuffled
        for key, values in logs.history.items():
            history.setdefault(key, []).extend(values)
        if model.stop_training:
            break
        epoch, batch = stop, 0
