"""The training job: config in, run directory out.

`run_training(config, out_dir)` reads and checks the data, learns a
vocabulary, trains with `model.fit`, evaluates each task on its dev split
and writes the run directory:

    out_dir/
      model.keras        the preprocessor and the model in one file
                         (`mtl_keras.export.ModelBundle`)
      saved_model/       strings-in SavedModel (`export_saved_model`)
      vocabulary.txt     the WordPiece vocabulary, one token per line
      config.yaml        the resolved config (absolute data_root, precision)
      history.csv        per-epoch logs of `fit` (`CSVLogger`)
      metrics.json       final per-task dev metrics
      plots/             learning_curves.png, <task>_confusion.png (classes),
                         <task>_predictions.png (regression)

`run_evaluation(model_path, config)` evaluates a saved model on the dev
data of a config.
"""

import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import data as data_lib
from mtl_keras import plots
from mtl_keras.backbone import SharedEncoder
from mtl_keras.config import ConfigError, resolve_precision
from mtl_keras.export import (
    ModelBundle,
    export_saved_model,
    load_keras_model,
    save_model_bundle,
)
from mtl_keras.model import MultiTaskModel
from mtl_keras.preprocess import TextPreprocessor, learn_vocabulary, make_batches

# The metric shown for each kind in the progress bar and first in tables.
HEADLINE_METRIC = {
    "multiclass": "accuracy",
    "binary": "accuracy",
    "multilabel": "macro_f1",
    "regression": "mae",
    "tagging": "token_accuracy",
}
RUN_FILES = (
    "model.keras",
    "vocabulary.txt",
    "config.yaml",
    "history.csv",
    "metrics.json",
)


class RunError(ValueError):
    """A problem with a model path or a run directory; says what to fix."""


# --------------------------------------------------------------------------
# Data.


def build_source(source, config):
    """A `FileSource` or `TfdsSource` from a `SourceConfig`."""
    if source.file is not None:
        return data_lib.FileSource(
            config.path_of(source),
            source.text,
            source.tasks,
            text_pair_column=source.text_pair,
            format=source.format,
            quoting=source.quoting,
            header=source.header,
            column_names=None
            if source.column_names is None
            else list(source.column_names),
            label_map=source.label_map,
            max_rows=source.max_rows,
            name=source.name or source.file,
        )
    return data_lib.TfdsSource(
        source.tfds,
        source.split,
        source.text,
        {t: list(c) if isinstance(c, tuple) else c for t, c in source.tasks.items()},
        text_pair_key=source.text_pair,
        data_dir=source.data_dir,
        label_map=source.label_map,
        max_rows=source.max_rows,
        name_in_logs=source.name,
    )


def _unique_names(sources):
    """Mixture needs distinct source names; suffix repeats with #2, #3, ..."""
    seen = {}
    for source in sources:
        count = seen.get(source.name, 0) + 1
        seen[source.name] = count
        if count > 1:
            source.name = f"{source.name}#{count}"
    return sources


@dataclasses.dataclass
class PreparedData:
    """What `prepare_data` returns: checked sources and the training stream."""

    tasks: tuple
    train_sources: list
    dev_sources: list
    train_examples: list  # `data.Examples`, one per train source
    train_raw: tf.data.Dataset  # unbatched (features, labels, masks)
    examples_per_epoch: int
    pair: bool


def check_tfds(config):
    """Fails at once for a tfds source that is unknown or not prepared.

    Unless `data.download` is true, a dataset must already be in the tfds
    data directory: without network, tfds would retry its download for
    minutes before failing.
    """
    sources = [s for s in (*config.data.train, *config.data.dev) if s.tfds]
    if not sources:
        return
    import tensorflow_datasets as tfds

    for source in sources:
        try:
            builder = tfds.builder(source.tfds, data_dir=source.data_dir)
        except Exception as error:  # tfds raises several types for bad names
            raise ConfigError(
                f"Unknown tfds dataset {source.tfds!r} (tasks "
                f"{', '.join(source.tasks)}): {str(error).splitlines()[0]}"
            ) from None
        if not config.data.download and not builder.is_prepared():
            raise ConfigError(
                f"The tfds dataset {source.tfds!r} (tasks {', '.join(source.tasks)}) "
                f"is not prepared in {builder.data_dir}. Prepare it there, set "
                "`data_dir` of the source to where it is, or set `download: true` "
                "under `data:` to let tfds download it (needs network); local "
                "files work offline (see configs/glue_agnews_files.yaml)."
            )


def prepare_data(config):
    """Builds and validates the sources, and the raw training stream."""
    check_tfds(config)
    tasks = tuple(config.tasks)
    empty_text = config.data.empty_text
    train_sources = _unique_names([build_source(s, config) for s in config.data.train])
    dev_sources = _unique_names([build_source(s, config) for s in config.data.dev])
    train_examples = data_lib.validate(tasks, train_sources, empty_text=empty_text)
    data_lib.validate(tasks, dev_sources, empty_text=empty_text, split="evaluation")
    pair = any(s.text_pair is not None for s in (*config.data.train, *config.data.dev))
    seed = config.training.seed
    if config.sampler.name == "joint":
        train_raw = data_lib.joint_dataset(
            tasks, train_sources, shuffle=True, seed=seed, empty_text=empty_text
        )
        examples = sum(_labelled_rows(table) for table in train_examples)
    else:
        sampler = (
            data_lib.Temperature(config.sampler.temperature)
            if config.sampler.name == "temperature"
            else config.sampler.name
        )
        mixture = data_lib.Mixture(
            tasks,
            train_sources,
            sampler=sampler,
            num_epochs=config.training.epochs,
            seed=seed,
            empty_text=empty_text,
        )
        train_raw = mixture.dataset()
        examples = mixture.epoch_size
    if pair:
        train_raw = train_raw.map(_with_pair)
    return PreparedData(
        tasks, train_sources, dev_sources, train_examples, train_raw, examples, pair
    )


def _labelled_rows(table):
    """Rows of a `data.Examples` that carry at least one label."""
    if not table.masks:
        return 0
    return int(np.any(np.stack(list(table.masks.values())) > 0, axis=0).sum())


def _with_pair(features, labels, masks):
    features = dict(features)
    features.setdefault("text_pair", tf.constant(""))
    return features, labels, masks


def vocabulary_texts(examples):
    """Every training text (and second text of pairs), for the vocabulary."""
    texts = []
    for table in examples:
        texts.extend(table.text.tolist())
        if table.text_pair is not None:
            texts.extend(table.text_pair.tolist())
    return texts


# --------------------------------------------------------------------------
# Model.


def build_model(config, vocabulary_size, precision):
    encoder = SharedEncoder.from_encoder_config(
        config.encoder_config(vocabulary_size), precision=precision, name="encoder"
    )
    return MultiTaskModel(config.tasks, encoder, name="multi_task_model")


def learning_rate(training, total_steps):
    """The learning rate (or schedule) of `TrainingConfig` over `total_steps`."""
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


class CompactProgress(keras.callbacks.Callback):
    """A progress bar with the loss and each task's headline metric only.

    Keras' own bar prints every log (three or more per task), which wraps
    over several lines; this one shows `loss` and `<task>_<headline>`
    while training, and the same keys on the dev data at the end of an epoch.
    When stdout is not a terminal (a log file, CI), it writes one line per
    epoch instead of a bar that is redrawn.
    """

    def __init__(self, tasks, epochs, steps):
        super().__init__()
        self.keys = ["loss"] + [f"{t.name}_{HEADLINE_METRIC[t.kind]}" for t in tasks]
        self.epochs = epochs
        self.steps = steps
        self.interactive = sys.stdout.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}")
        self.progbar = keras.utils.Progbar(
            self.steps, stateful_metrics=self.keys + [f"val_{k}" for k in self.keys]
        )
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        if self.interactive:
            self.progbar.update(self.seen, self._values(logs, ""), finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        values = self._values(logs, "") + self._values(logs, "val_")
        self.progbar.update(self.steps, values, finalize=True)

    def _values(self, logs, prefix):
        logs = logs or {}
        return [
            (prefix + k, float(logs[prefix + k]))
            for k in self.keys
            if prefix + k in logs
        ]


# --------------------------------------------------------------------------
# Evaluation.


def finite_batches(dataset, preprocessor, batch_size):
    """Cached evaluation batches with a known number of batches.

    Length bucketing hides the count from `tf.data`; Keras then warns that
    the input "ran out of data" after each pass, so it is counted once here
    (the pass also fills the cache).
    """
    batches = make_batches(dataset, preprocessor, batch_size).cache()
    count = sum(1 for _ in batches)
    return batches.apply(tf.data.experimental.assert_cardinality(count))


def evaluate_tasks(
    model,
    preprocessor,
    dev_sources,
    batch_size=64,
    empty_text="keep",
    with_predictions=True,
):
    """Each task's metrics on its own dev rows (and its labels and outputs).

    Returns `(metrics, predictions)`: `metrics[task]` holds `kind`,
    `examples` and `<metric>: value`; `predictions[task]` holds the
    `labels` and `outputs` (logits, or values) as numpy arrays.
    """
    tasks = model.tasks
    tables = data_lib.validate(
        tasks, dev_sources, empty_text=empty_text, split="evaluation"
    )
    datasets = data_lib.eval_datasets(tasks, dev_sources, empty_text=empty_text)
    metrics, predictions = {}, {}
    for task in tasks:
        dataset = datasets[task.name]
        if preprocessor.pair:
            dataset = dataset.map(_with_pair)
        batches = finite_batches(dataset, preprocessor, batch_size)
        logs = model.evaluate(batches, verbose=0, return_dict=True)
        prefix = task.name + "_"
        examples = int(sum(t.masks[task.name].sum() for t in tables))
        result = {"kind": task.kind, "examples": examples}
        result.update(
            {
                k[len(prefix) :]: float(v)
                for k, v in logs.items()
                if k.startswith(prefix)
            }
        )
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


def confusion_matrix(task, labels, logits):
    """`[C, C]` counts (rows true, columns predicted); multilabel: `[C, 4]`."""
    if task.kind == "binary":
        predicted = (logits.reshape(-1) > 0).astype("int64")
        truth = labels.reshape(-1).astype("int64")
        size = 2
    elif task.kind == "multiclass":
        predicted = logits.argmax(axis=-1)
        truth = labels.reshape(-1).astype("int64")
        size = task.num_classes
    elif task.kind == "multilabel":
        predicted = logits > 0
        truth = labels > 0.5
        return np.stack(
            [
                (~truth & ~predicted).sum(0),
                (~truth & predicted).sum(0),
                (truth & ~predicted).sum(0),
                (truth & predicted).sum(0),
            ],
            axis=1,
        )
    else:
        raise ValueError(f"No confusion matrix for a {task.kind} task.")
    matrix = np.zeros((size, size), "int64")
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def write_plots(directory, history, tasks, predictions):
    """Writes the run's PNGs; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in tasks]
    written = [
        plots.save_figure(
            plots.plot_learning_curves(history, names),
            directory / "learning_curves.png",
        )
    ]
    for task in tasks:
        if task.name not in predictions:
            continue
        labels = predictions[task.name]["labels"]
        outputs = predictions[task.name]["outputs"]
        if task.kind in ("binary", "multiclass"):
            figure = plots.plot_confusion_matrix(
                confusion_matrix(task, labels, outputs), task.classes, task.name
            )
            path = directory / f"{task.name}_confusion.png"
        elif task.kind == "multilabel":
            figure = plots.plot_multilabel_confusion(
                confusion_matrix(task, labels, outputs), task.classes, task.name
            )
            path = directory / f"{task.name}_confusion.png"
        elif task.kind == "regression":
            figure = plots.plot_regression(labels, outputs, task.name)
            path = directory / f"{task.name}_predictions.png"
        else:
            continue
        written.append(plots.save_figure(figure, path))
    return written


def format_metrics_table(metrics):
    """A plain-text table: one row per task, one column per metric."""
    columns = []
    for result in metrics.values():
        headline = HEADLINE_METRIC.get(result.get("kind"))
        ordered = ["loss", headline] + sorted(result)
        for key in ordered:
            if key in result and key not in ("kind", "examples") and key not in columns:
                columns.append(key)
    header = ["task", "kind", "examples", *columns]
    rows = [
        [
            name,
            result.get("kind", ""),
            str(result.get("examples", "")),
            *(f"{result[c]:.4f}" if c in result else "-" for c in columns),
        ]
        for name, result in metrics.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def read_history(path):
    """`{column: [values]}` of a `CSVLogger` file."""
    history = {}
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
# The jobs.


def run_training(config, out_dir, verbose=1):
    """Trains the model a `RunConfig` describes and writes a run directory.

    Args:
        config: a `RunConfig` (see `mtl_keras.config.load_config`).
        out_dir: the run directory (created; existing files are replaced).
        verbose: 0 silent, 1 progress bar and final table.

    Returns:
        The per-task dev metrics, as written to `metrics.json`:
        `{task: {"kind": ..., "examples": n, "<metric>": value, ...}}`.

    Example:
    >>> from mtl_keras.config import load_config
    >>> metrics = run_training(load_config(epochs=1), "/tmp/run")  # doctest: +SKIP
    >>> sorted(metrics)  # doctest: +SKIP
    ['rating', 'sentiment', 'topic']
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config.resolved()
    training = config.training
    keras.utils.set_random_seed(training.seed)

    prepared = prepare_data(config)
    vocabulary = learn_vocabulary(
        vocabulary_texts(prepared.train_examples),
        config.model.vocabulary_size,
        lowercase=config.model.lowercase,
    )
    (out / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    preprocessor = TextPreprocessor(
        vocabulary,
        sequence_length=config.model.sequence_length,
        lowercase=config.model.lowercase,
        pair=prepared.pair,
    )
    batch_size = training.batch_size
    steps_per_epoch = max(1, math.ceil(prepared.examples_per_epoch / batch_size))
    train_batches = make_batches(
        prepared.train_raw, preprocessor, batch_size, seed=training.seed
    ).repeat()
    dev_raw = data_lib.joint_dataset(
        prepared.tasks,
        prepared.dev_sources,
        shuffle=False,
        empty_text=config.data.empty_text,
    )
    if prepared.pair:
        dev_raw = dev_raw.map(_with_pair)
    dev_batches = finite_batches(dev_raw, preprocessor, batch_size)

    model = build_model(config, len(vocabulary), config.precision)
    model.compile(
        learning_rate=learning_rate(training, steps_per_epoch * training.epochs),
        weight_decay=training.weight_decay,
        steps_per_execution=training.steps_per_execution,
    )
    callbacks = [
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=training.backup),
        keras.callbacks.TerminateOnNaN(),
    ]
    best_weights = out / "checkpoints" / "best.weights.h5"
    if training.checkpoint:
        best_weights.parent.mkdir(exist_ok=True)
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(best_weights),
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
            )
        )
    if training.backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(out / "backup")))
    if verbose:
        callbacks.append(
            CompactProgress(prepared.tasks, training.epochs, steps_per_epoch)
        )
        print(
            f"Training {', '.join(t.name for t in prepared.tasks)} on "
            f"{prepared.examples_per_epoch} examples per epoch "
            f"({steps_per_epoch} steps of {batch_size}), vocabulary "
            f"{len(vocabulary)}, {model.count_params():,} parameters, "
            f"{config.precision}."
        )
    model.fit(
        train_batches,
        epochs=training.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=dev_batches,
        callbacks=callbacks,
        shuffle=False,  # the data pipeline shuffles
        verbose=0,
    )
    if training.checkpoint and best_weights.exists():
        model.load_weights(str(best_weights))

    metrics, predictions = evaluate_tasks(
        model,
        preprocessor,
        prepared.dev_sources,
        batch_size,
        empty_text=config.data.empty_text,
    )
    save_model_bundle(model, preprocessor, str(out / "model.keras"))
    export_saved_model(model, preprocessor, out / "saved_model")
    (out / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(metrics, indent=2) + "\n", encoding="utf-8"
    )
    write_plots(
        out / "plots", read_history(out / "history.csv"), prepared.tasks, predictions
    )
    if verbose:
        print()
        print(format_metrics_table(metrics))
        print(f"\nRun directory: {out} ({time.perf_counter() - start:.0f} s)")
    return metrics


def load_run_model(path, vocabulary=None, config=None):
    """`(model, preprocessor)` from a run directory or a `.keras` file.

    A `.keras` file written by `run_training` holds both (a `ModelBundle`).
    A `.keras` file of a bare `MultiTaskModel` needs its vocabulary file
    (default: `vocabulary.txt` beside it); the preprocessor then takes the
    encoder's sequence length and `config`'s `lowercase` (default true).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise RunError(
            f"No model at {path}: pass a run directory (with model.keras) or a "
            ".keras file."
        )
    try:
        loaded = load_keras_model(str(path), compile=False)
    except ValueError as error:
        raise RunError(str(error)) from None
    if isinstance(loaded, ModelBundle):
        return loaded.multitask_model, loaded.preprocessor
    if not isinstance(loaded, MultiTaskModel):
        raise RunError(f"{path} holds a {type(loaded).__name__}, not a MultiTaskModel.")
    vocabulary = Path(vocabulary) if vocabulary else path.parent / "vocabulary.txt"
    if not vocabulary.is_file():
        raise RunError(
            f"{path} holds a model without its preprocessor, and there is no "
            f"vocabulary at {vocabulary}; pass the vocabulary file it was trained with."
        )
    tokens = vocabulary.read_text(encoding="utf-8").splitlines()
    lowercase = True if config is None else config.model.lowercase
    pair = (
        False
        if config is None
        else any(
            s.text_pair is not None for s in (*config.data.train, *config.data.dev)
        )
    )
    preprocessor = TextPreprocessor(
        tokens,
        sequence_length=loaded.encoder.get_config()["sequence_length"],
        lowercase=lowercase,
        pair=pair,
    )
    return loaded, preprocessor


def run_evaluation(model_path, config, verbose=0):
    """Evaluates a saved model on the dev data of `config`, task by task.

    Args:
        model_path: a run directory or a `.keras` file.
        config: a `RunConfig` whose dev sources carry the model's tasks.
        verbose: 1 prints the metrics table.

    Returns:
        `{task: {"kind": ..., "examples": n, "<metric>": value}}`.
    """
    model, preprocessor = load_run_model(model_path, config=config)
    config_tasks = {t.name: t for t in config.tasks}
    for task in model.tasks:
        if task.name not in config_tasks:
            raise ConfigError(
                f"The model has a task {task.name!r} that the config "
                f"{config.source or ''} does not define (config tasks: "
                f"{', '.join(config_tasks)}). Use the config the model was "
                "trained with (its run directory has config.yaml)."
            )
        if config_tasks[task.name] != task:
            raise ConfigError(
                f"Task {task.name!r} differs between the model ({task}) and the "
                f"config ({config_tasks[task.name]})."
            )
    model.compile()
    sources = _unique_names([build_source(s, config) for s in config.data.dev])
    tasks = model.tasks
    sources = [s for s in sources if any(name in s.tasks for name in model.task_names)]
    data_lib.validate(
        tasks, sources, empty_text=config.data.empty_text, split="evaluation"
    )
    metrics, _ = evaluate_tasks(
        model,
        preprocessor,
        sources,
        config.training.batch_size,
        empty_text=config.data.empty_text,
        with_predictions=False,
    )
    if verbose:
        print(format_metrics_table(metrics))
    return metrics


__all__ = [
    "RunError",
    "evaluate_tasks",
    "format_metrics_table",
    "load_run_model",
    "prepare_data",
    "resolve_precision",
    "run_evaluation",
    "run_training",
]
