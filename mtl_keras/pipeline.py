"""The one training pipeline: a `RunConfig` in, a trained and evaluated model out.

`fit_run(config)` is what `mtl-keras train`, `mtl-keras compare`, the
benchmarks and the notebooks run: seed → read and check the data → the
preprocessor (a vocabulary learned from the training texts, or a preset's
tokenizer) → length-bucketed batches → the model → `compile` with the
learning-rate schedule → `fit` → each task evaluated on its own dev rows.
It keeps the `History` in memory, takes an optional `tf.distribute`
strategy and extra Keras callbacks, and returns a `RunResult`.

Epochs: with `sampler: joint` an epoch is one pass over the jointly
labelled rows, reshuffled every epoch; with a mixing sampler Keras epoch k
trains on exactly mixture epoch k, batched on its own (no batch crosses an
epoch). `examples=B` instead trains on the first B examples of that stream
in one pass (how `compare` gives each model its budget).
"""

import dataclasses
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import data as data_lib
from mtl_keras.model import MultiTaskModel
from mtl_keras.optimizers import EncoderAdamW
from mtl_keras.preprocess import make_batches


@dataclasses.dataclass
class RunResult:
    """What `fit_run` returns.

    Attributes:
        model: the trained `MultiTaskModel` (it owns its preprocessor).
        history: `History.history`: `{log key: [value per epoch]}`.
        metrics: `{task: {"kind", "examples", "<metric>": value}}` on dev.
        predictions: `{task: {"labels", "outputs"}}` on dev (numpy), if asked.
        compute: examples, steps, token positions and seconds (see `fit_run`).
        examples_per_epoch: training examples in one epoch.
        config: the resolved `RunConfig`.

    Example:
    >>> [field.name for field in dataclasses.fields(RunResult)][:4]
    ['model', 'history', 'metrics', 'predictions']
    """

    model: MultiTaskModel
    history: dict
    metrics: dict
    predictions: dict
    compute: dict
    examples_per_epoch: int
    config: object


def learning_rate(training, total_steps):
    """The learning rate (or schedule) of a `Training` over `total_steps`.

    Example:
    >>> from mtl_keras.config import Training
    >>> schedule = learning_rate(Training(warmup_fraction=0.1, schedule="cosine"), 100)
    >>> round(float(schedule(10)), 6), float(schedule(100))
    (0.001, 0.0)
    """
    warmup = int(round(training.warmup_fraction * total_steps))
    if training.schedule == "constant" and warmup == 0:
        return training.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else training.learning_rate,
        decay_steps=max(1, total_steps - warmup),
        alpha=1.0 if training.schedule == "constant" else 0.0,
        warmup_target=training.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


@dataclasses.dataclass
class _Data:
    train_sources: list
    dev_sources: list
    tables: list  # `data.Examples` of the training sources
    mixture: object  # a `data.Mixture`, or None for joint rows
    examples_per_epoch: int


def read_data(config):
    """Builds and checks the sources of a config; nothing is trained yet.

    Example:
    >>> from mtl_keras.config import load_config
    >>> read_data(load_config()).examples_per_epoch  # rows with at least one label
    1994
    """
    tasks, empty_text = config.tasks, config.data.empty_text
    train, dev = config.sources("train"), config.sources("dev")
    tables = data_lib.validate(tasks, train, empty_text=empty_text)
    data_lib.validate(tasks, dev, empty_text=empty_text, split="evaluation")
    sampler = config.sampler_object()
    if sampler is None:
        mixture = None
        examples = sum(int(np.any([m > 0 for m in t.masks.values()], axis=0).sum()) for t in tables)
    else:
        mixture = data_lib.Mixture(
            tasks,
            train,
            sampler=sampler,
            num_epochs=config.training.epochs,
            seed=config.training.seed,
            empty_text=empty_text,
        )
        examples = mixture.epoch_size
    return _Data(train, dev, tables, mixture, examples)


def training_texts(tables):
    """Every training text (and second text of pairs), for the vocabulary.

    Example:
    >>> from mtl_keras.config import load_config
    >>> len(training_texts(read_data(load_config()).tables))
    2000
    """
    texts = []
    for table in tables:
        texts.extend(table.text.tolist())
        if table.text_pair is not None:
            texts.extend(table.text_pair.tolist())
    return texts


def _with_pair(pair):
    def add(features, labels, masks):
        features = dict(features)
        features.setdefault("text_pair", tf.constant(""))
        return features, labels, masks

    return (lambda ds: ds.map(add)) if pair else (lambda ds: ds)


def _train_batches(config, data, preprocessor, examples, counter):
    """`(batches, epochs, steps_per_epoch, total_steps)` for `fit`."""
    training, tasks = config.training, config.tasks
    batch_size, seed = training.batch_size, training.seed
    pair = _with_pair(preprocessor.pair)

    def batched(raw, epoch=0):
        return make_batches(pair(raw), preprocessor, batch_size, seed=seed + 1000 * epoch)

    if data.mixture is None:
        raw = data_lib.joint_dataset(tasks, data.train_sources, shuffle=True, seed=seed,
                                     empty_text=config.data.empty_text)
        if examples is not None:
            raw = raw.repeat().take(examples)
        batches, steps_per_epoch = batched(raw), None
    elif examples is None:
        epochs = [batched(data.mixture.epoch_dataset(e), e) for e in range(training.epochs)]
        batches = epochs[0]
        for more in epochs[1:]:
            batches = batches.concatenate(more)
        steps_per_epoch = math.ceil(data.examples_per_epoch / batch_size)
    else:
        batches, steps_per_epoch = batched(data.mixture.dataset().take(examples)), None
    count = examples or data.examples_per_epoch
    epochs = 1 if examples is not None else training.epochs
    total_steps = math.ceil(count / batch_size) * epochs
    return batches.map(counter), epochs, steps_per_epoch, total_steps


def build_model(config, preprocessor, strategy=None, total_steps=1):
    """The config's model, compiled (inside `strategy`'s scope if given).

    Example:
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras import TextPreprocessor
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["a b c"], 20, sequence_length=32)
    >>> build_model(config, preprocessor).task_names
    ['topic', 'sentiment', 'rating']
    """
    training = config.training
    with (strategy or tf.distribute.get_strategy()).scope():
        encoder = config.build_encoder(preprocessor, config.precision)
        model = MultiTaskModel(config.tasks, encoder, preprocessor, name="multi_task_model")
        rate = learning_rate(training, total_steps)
        optimizer = None
        if training.encoder_learning_rate is not None:
            optimizer = EncoderAdamW(
                rate,
                encoder_learning_rate_multiplier=training.encoder_learning_rate
                / training.learning_rate,
                weight_decay=training.weight_decay,
                clipnorm=1.0,
            )
        model.compile(
            optimizer=optimizer,
            learning_rate=rate,
            weight_decay=training.weight_decay,
            steps_per_execution=training.steps_per_execution,
        )
    return model


def evaluate_tasks(model, dev_sources, batch_size=64, empty_text="keep", with_predictions=True):
    """Each task's metrics on its own dev rows, each row counted once.

    Returns `(metrics, predictions)`: `metrics[task]` holds `kind`,
    `examples` and `<metric>: value`; `predictions[task]` the `labels` and
    `outputs` (logits, or values) as numpy arrays.

    Example:
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32)
    >>> model = build_model(config, preprocessor)  # untrained
    >>> metrics, predictions = evaluate_tasks(model, config.sources("dev"))
    >>> metrics["topic"]["examples"] == len(predictions["topic"]["labels"])
    True
    """
    datasets = data_lib.eval_datasets(model.tasks, dev_sources, empty_text=empty_text)
    pair = _with_pair(model.preprocessor.pair)
    metrics, predictions = {}, {}
    for task in model.tasks:
        batches = make_batches(pair(datasets[task.name]), model.preprocessor, batch_size).cache()
        logs = model.evaluate(batches, verbose=0, return_dict=True)
        prefix = task.name + "_"
        result = {"kind": task.kind, "examples": int(datasets[task.name].cardinality())}
        result.update({k[len(prefix):]: float(v) for k, v in logs.items() if k.startswith(prefix)})
        metrics[task.name] = result
        if with_predictions:
            labels, outputs = [], []
            for x, y, _ in batches:
                outputs.append(np.asarray(model.predict_on_batch(x)[task.name]))
                labels.append(y[task.name].numpy())
            predictions[task.name] = {
                "labels": np.concatenate(labels) if labels else np.zeros(0),
                "outputs": np.concatenate(outputs) if outputs else np.zeros(0),
            }
    return metrics, predictions


def fit_run(
    config,
    *,
    examples=None,
    preprocessor=None,
    strategy=None,
    callbacks=(),
    run_dir=None,
    label=None,
    verbose=1,
    with_predictions=True,
):
    """Trains and evaluates the model a `RunConfig` describes.

    Args:
        config: a `RunConfig` (see `mtl_keras.config.load_config`).
        examples: train on the first `examples` examples of the training
            stream in one pass, instead of `training.epochs` epochs.
        preprocessor: reuse this preprocessor (its vocabulary) instead of
            making one from the training texts.
        strategy: a `tf.distribute.Strategy` to build and train under.
        callbacks: more Keras callbacks for `fit`.
        run_dir: if set, `fit` writes `history.csv` there, and the best and
            backup weights when `training.checkpoint` / `training.backup`.
        label: a name for progress lines.
        verbose: 0 silent, 1 a line per epoch (and a heartbeat each minute).
        with_predictions: also return the dev labels and outputs.

    Returns:
        A `RunResult`; its `compute` holds `steps` (batches trained),
        `examples`, `padded_tokens`, `tokens`, `labelled_examples` per task,
        `parameters`, and `prepare_seconds`, `vocabulary_seconds`,
        `train_seconds`, `train_cpu_seconds`, `evaluate_seconds`,
        `total_seconds`.

    Example:
    >>> from mtl_keras.config import load_config
    >>> result = fit_run(load_config(epochs=1, batch_size=64), verbose=0)
    >>> result.compute["examples"] == result.examples_per_epoch
    True
    >>> result.model.predict_labels(["the match was great"])[0]["topic"]["label"] in (
    ...     "sports", "politics", "tech", "food")
    True
    """
    start = time.perf_counter()
    config = config.resolved()
    training = config.training
    keras.utils.set_random_seed(training.seed)
    data = read_data(config)
    prepared = time.perf_counter()
    if preprocessor is None:
        preprocessor = config.build_preprocessor(training_texts(data.tables))
    vocabulary_seconds = time.perf_counter() - prepared
    counter = BatchCounter([t.name for t in config.tasks])
    batches, epochs, steps_per_epoch, total_steps = _train_batches(
        config, data, preprocessor, examples, counter
    )
    model = build_model(config, preprocessor, strategy, total_steps)
    dev_raw = data_lib.joint_dataset(
        config.tasks, data.dev_sources, shuffle=False, empty_text=config.data.empty_text
    )
    dev_batches = make_batches(
        _with_pair(preprocessor.pair)(dev_raw), preprocessor, training.batch_size
    ).cache()
    callbacks = [keras.callbacks.TerminateOnNaN(), *callbacks, *_run_dir_callbacks(run_dir, training)]
    if verbose:
        callbacks.append(Progress(config.tasks, epochs, total_steps // epochs, label))
        print(
            f"{label or 'Training'}: {', '.join(t.name for t in config.tasks)} on "
            f"{examples or data.examples_per_epoch} examples"
            f"{'' if examples else ' per epoch'} ({total_steps} steps of "
            f"{training.batch_size}), vocabulary {preprocessor.vocabulary_size}, "
            f"{model.count_params():,} parameters, {config.precision}.",
            flush=True,
        )
    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    history = model.fit(
        batches,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=dev_batches if examples is None else None,
        callbacks=callbacks,
        shuffle=False,  # the data pipeline shuffles
        verbose=0,
    )
    train_seconds, train_cpu = time.perf_counter() - fit_start, time.process_time() - fit_cpu
    if run_dir is not None and training.checkpoint and (run_dir / BEST_WEIGHTS).exists():
        model.load_weights(str(run_dir / BEST_WEIGHTS))
    evaluate_start = time.perf_counter()
    metrics, predictions = evaluate_tasks(
        model, data.dev_sources, training.batch_size, config.data.empty_text, with_predictions
    )
    compute = counter.result()
    compute.update(
        steps=compute["batches"],
        parameters=int(model.count_params()),
        prepare_seconds=round(prepared - start, 2),
        vocabulary_seconds=round(vocabulary_seconds, 2),
        train_seconds=round(train_seconds, 2),
        train_cpu_seconds=round(train_cpu, 2),
        evaluate_seconds=round(time.perf_counter() - evaluate_start, 2),
        total_seconds=round(time.perf_counter() - start, 2),
    )
    return RunResult(
        model, dict(history.history), metrics, predictions, compute,
        data.examples_per_epoch, config,
    )


BEST_WEIGHTS = "checkpoints/best.weights.h5"


def _run_dir_callbacks(run_dir, training):
    if run_dir is None:
        return []
    found = [keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=training.backup)]
    if training.checkpoint:
        (run_dir / BEST_WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
        found.append(
            keras.callbacks.ModelCheckpoint(
                str(run_dir / BEST_WEIGHTS),
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
            )
        )
    if training.backup:
        found.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup")))
    return found


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
            if name in sample_weight:
                labelled = tf.reduce_sum(tf.cast(sample_weight[name] > 0, tf.int64))
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
    stdout is not a terminal (a log file, CI) it writes one line per epoch
    and, in long epochs, a heartbeat line every `heartbeat_seconds`.

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
        print(f"{self.label + ': ' if self.label else ''}Epoch {epoch + 1}/{self.epochs}")
        stateful = self.keys + [f"val_{k}" for k in self.keys]
        self.progbar = keras.utils.Progbar(self.steps, stateful_metrics=stateful)
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.interactive:
            self.progbar.update(batch + 1, self._values(logs, ""), finalize=False)
        elif time.perf_counter() - self.last >= self.heartbeat_seconds:
            self.last = time.perf_counter()
            loss = (logs or {}).get("loss")
            print(f"  step {batch + 1}/{self.steps}, loss {float(loss):.4f}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        values = self._values(logs, "") + self._values(logs, "val_")
        self.progbar.update(self.steps, values, finalize=True)

    def _values(self, logs, prefix):
        logs = logs or {}
        return [(prefix + k, float(logs[prefix + k])) for k in self.keys if prefix + k in logs]
