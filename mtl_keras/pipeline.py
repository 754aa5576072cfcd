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
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import checkpoints, distribute, guards, monitoring, run_files
from mtl_keras import data as data_lib
from mtl_keras.batching import make_batches, report_cut_words
from mtl_keras.data_report import check_overlap, data_report, format_report
from mtl_keras.diagnostics import GradientDiagnostics
from mtl_keras.epochs import (
    EpochBatches,
    check_every_task_in_every_batch,
    train_epochs,
    with_pair_feature,
)
from mtl_keras.model import MultiTaskModel
from mtl_keras.optimizers import EncoderAdamW
from mtl_keras.progress import BatchCounter, Progress, read_history
from mtl_keras.run_data import (  # noqa: F401 (read_data, training_texts: re-exported)
    make_preprocessor,
    read_data,
    training_texts,
)
from mtl_keras.weighting import get_weighting


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
        train_rows: `{task: training rows carrying its label}`.

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
    train_rows: dict = dataclasses.field(default_factory=dict)


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


def _budget_batches(config, data, preprocessor, examples):
    """The first `examples` examples of the training stream, batched (one pass)."""
    training = config.training
    if isinstance(data.rows, data_lib.JointRows):
        raw = data_lib.joint_dataset(config.tasks, data.train_sources, seed=training.seed,
                                     empty_text=config.data.empty_text)
        raw = raw.repeat().take(examples)
    else:
        raw = data.rows.dataset().take(examples)
    raw = with_pair_feature(preprocessor.pair)(raw)
    return make_batches(raw, preprocessor, training.batch_size, seed=training.seed,
                        keep_order=training.batching == "every_task")


def build_model(config, preprocessor, strategy=None, total_steps=1):
    """The config's model, compiled (inside `strategy`'s scope if given).

    Example:
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras import TextPreprocessor
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["a b c"], 20, sequence_length=32, align_words=True)
    >>> build_model(config, preprocessor).task_names
    ['topic', 'sentiment', 'rating', 'aspects', 'mentions']
    """
    training = config.training
    with (strategy or tf.distribute.get_strategy()).scope():
        encoder = config.build_encoder(preprocessor, config.precision)
        weighting = get_weighting(config.weighting, config.tasks)
        weighting.set_steps_per_epoch(max(1, total_steps // training.epochs))
        model = MultiTaskModel(config.tasks, encoder, preprocessor, weighting=weighting,
                               name="multi_task_model")
        rate = learning_rate(training, total_steps)
        optimizer = None
        if training.encoder_learning_rate is not None:
            optimizer = EncoderAdamW(
                rate,
                encoder_learning_rate_multiplier=training.encoder_learning_rate
                / training.learning_rate,
                weight_decay=training.weight_decay,
                global_clipnorm=1.0,
            )
        model.compile(
            optimizer=optimizer,
            learning_rate=rate,
            weight_decay=training.weight_decay,
            steps_per_execution=training.steps_per_execution,
        )
    return model


def evaluate_tasks(model, dev_sources, batch_size=64, empty_text="keep", with_predictions=True,
                   needed=None):
    """Each task's metrics on its own dev rows, each row counted once.

    Returns `(metrics, predictions)`: `metrics[task]` holds `kind`,
    `examples` and `<metric>: value`; `predictions[task]` the `labels` and
    `outputs` (logits, or values) as numpy arrays, in file order. One pass
    over the dev rows evaluates every task (of `needed`, default all: `data.validate`).

    Example:
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> config = load_config()
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32,
    ...                                            align_words=True)  # for the tagging task
    >>> model = build_model(config, preprocessor)  # untrained
    >>> metrics, predictions = evaluate_tasks(model, config.sources("dev"))
    >>> metrics["topic"]["examples"] == len(predictions["topic"]["labels"])
    True
    """
    dataset, counts = data_lib.eval_dataset(model.tasks, dev_sources, empty_text=empty_text,
                                            needed=needed)
    # One pass for all tasks: the masks keep each task's metrics to its own rows;
    # batches of consecutive rows keep the predictions in file order.
    batches = make_batches(
        with_pair_feature(model.preprocessor.pair)(dataset), model.preprocessor, batch_size,
        keep_order=True,
    ).cache()
    logs = model.evaluate(batches, verbose=0, return_dict=True)
    metrics = {}
    for task in [t for t in model.tasks if needed is None or t.name in needed]:
        prefix = task.name + "_"
        result = {"kind": task.kind, "examples": counts[task.name]}
        result.update({k[len(prefix):]: float(v) for k, v in logs.items() if k.startswith(prefix)})
        result.update(task.task_kind.evaluation_details(task, model))
        metrics[task.name] = result
    if not with_predictions:
        return metrics, {}
    # Under several replicas `predict_on_batch` gives every replica the whole
    # batch and concatenates their outputs (each row N times): call the model.
    several = model.distribute_strategy.num_replicas_in_sync > 1
    predict = (lambda x: model(x, training=False)) if several else model.predict_on_batch
    found = {task.name: ([], []) for task in model.tasks}
    for x, y, w in batches:
        outputs = predict(x)
        for task in model.tasks:
            truth, logits = task.task_kind.evaluation_rows(
                y[task.name].numpy(), np.asarray(outputs[task.name]), w[task.name].numpy()
            )
            found[task.name][0].append(truth)
            found[task.name][1].append(logits)
    predictions = {
        name: {"labels": np.concatenate(labels), "outputs": np.concatenate(outputs)}
        for name, (labels, outputs) in found.items()
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
    restart=False,
    allow_changed_settings=False,
    explicit_loop=False,
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
        strategy: a `tf.distribute.Strategy` to build and train under
            (`distribute.make_strategy`); with several workers each one
            evaluates a local copy of the trained model, which is returned.
        callbacks: more Keras callbacks for `fit`.
        run_dir: if set, `fit` writes `history.csv` and the checkpoints
            there (see `run_files`), and a rerun on the same directory
            resumes from the newest checkpoint. With several workers only
            the chief writes it (see `distribute`).
        restart: with `run_dir`, delete its checkpoints and start over.
        allow_changed_settings: resume although the training settings differ
            from the checkpoints' (reported); else that is an error.
        explicit_loop: train with `loop.train_loop` instead of `fit`.
        label: a name for progress lines.
        verbose: 0 silent, 1 a line per epoch (and a heartbeat each minute).
        with_predictions: also return the dev labels and outputs.

    Returns:
        A `RunResult`; its `compute` holds `steps` (batches trained),
        `examples`, `padded_tokens`, `tokens`, `labelled_examples` per task,
        `parameters`, and `prepare_seconds`, `vocabulary_seconds`,
        `train_seconds`, `train_cpu_seconds`, `evaluate_seconds`,
        `total_seconds`.

    Raises:
        guards.NonFiniteLossError: a task's loss was not finite (the run
            directory is marked failed; the last finite checkpoint is kept).
        checkpoints.Preempted: SIGTERM or SIGINT; a checkpoint was saved.
        checkpoints.CheckpointError: the run directory's checkpoints cannot
            be resumed with this config.

    Example:
    >>> from mtl_keras.config import load_config
    >>> config = load_config(epochs=1, batch_size=64, overrides=["data.train.0.max_rows=600"])
    >>> result = fit_run(config, verbose=0)
    >>> result.compute["examples"] == result.examples_per_epoch
    True
    >>> result.model.predict_labels(["the match was great"])[0]["topic"]["label"] in (
    ...     "sports", "politics", "tech", "food")
    True
    """
    role = distribute.worker_role(strategy, run_dir)
    try:
        return _fit_run(config, role, examples, preprocessor, strategy, callbacks,
                        None if run_dir is None else Path(run_dir), restart,
                        allow_changed_settings, explicit_loop, label, verbose, with_predictions)
    finally:
        role.clean_up()


def _fit_run(config, role, examples, preprocessor, strategy, callbacks, run_dir, restart,
             allow_changed_settings, explicit_loop, label, verbose, with_predictions):
    start = time.perf_counter()
    config = config.resolved()
    training = config.training
    monitoring.check_monitor(training.monitor, config.tasks)  # before any work
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(training.seed)
    data = read_data(config, verbose)
    prepared = time.perf_counter()
    if preprocessor is None:
        preprocessor = make_preprocessor(config, training_texts(data.tables), verbose)
    report_cut_words(preprocessor, training_texts(data.tables))
    report = data_report(preprocessor, data.tables, {"dev": data.dev_tables})
    check_overlap(report, config.data.max_overlap, config.data.overlap)
    if verbose:
        print(format_report(report, preprocessor.sequence_length), flush=True)
    vocabulary_seconds = time.perf_counter() - prepared
    counter = BatchCounter([t.name for t in config.tasks])
    epochs = 1 if examples is not None else training.epochs
    count = examples or data.examples_per_epoch
    total_steps = math.ceil(count / training.batch_size) * epochs
    model = build_model(config, preprocessor, strategy, total_steps)
    dev_raw = data_lib.joint_dataset(
        config.tasks, data.dev_sources, shuffle=False, empty_text=config.data.empty_text
    )
    dev_batches = make_batches(
        with_pair_feature(preprocessor.pair)(dev_raw), preprocessor, training.batch_size
    ).cache()
    callbacks = [guards.FailOnNonFinite(), *callbacks]
    checkpoint, position = None, (0, 0)
    write_dir = role.write_dir
    if run_dir is not None:
        run_files.prepare(run_dir, role, restart)
        if role.is_chief:
            (run_dir / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
        if data.split is not None and role.is_chief:
            run_files.write_dev_split(run_dir, data.split)
        checkpoint = run_files.training_checkpoint(config, data, model, run_dir, role,
                                                   allow_changed_settings)
        if role.count > 1:
            distribute.barrier(strategy)  # the chief has prepared the directory
        position = checkpoint.restore()
        run_files.keep_history_before(write_dir / run_files.HISTORY, position[0])
    if training.diagnostics_every_steps:  # before the CSVLogger: it adds epoch means
        probe = EpochBatches(data.rows, preprocessor, training.batch_size, seed=training.seed,
                             keep_order=training.batching == "every_task").epoch(0).take(8)
        callbacks.append(GradientDiagnostics(
            probe.cache(), training.diagnostics_every_steps,
            csv_path=None if run_dir is None else write_dir / run_files.DIAGNOSTICS,
            log_dir=write_dir / run_files.TENSORBOARD / "diagnostics"
            if run_dir and training.tensorboard
            else None))
    # The epochs before a resume, from the chief's history (the same on every worker).
    previous = {} if run_dir is None else {
        k: v[:position[0]] for k, v in read_history(run_dir / run_files.HISTORY).items()}
    best = None if run_dir is None else write_dir / run_files.BEST_WEIGHTS
    monitors = monitoring.callbacks(training, best, previous)
    callbacks += monitors  # before the CSVLogger: a weighted mean is logged too
    stopped = any(getattr(c, "stopped_before", False) for c in monitors)
    if run_dir is not None:
        callbacks += run_files.callbacks(write_dir, training)
        for note in checkpoint.notes:
            print(note, flush=True)
        if position[0] >= epochs:
            print(f"{run_dir} already holds the finished run (step {checkpoint.step()}): "
                  "evaluating it again; --restart trains anew.", flush=True)
        elif stopped:
            print(f"{run_dir} stopped early at epoch {position[0]} (no better "
                  f"{monitoring.monitor_key(training.monitor)} for "
                  f"{training.early_stopping_patience} epochs): evaluating it again; "
                  "--restart trains anew.", flush=True)
        elif position != (0, 0):
            print(f"Resuming {run_dir} at step {checkpoint.step()} (epoch "
                  f"{position[0] + 1}, batch {position[1]}).", flush=True)
    if verbose:
        callbacks.append(Progress(config.tasks, epochs, total_steps // epochs, label))
        print(
            f"{label or 'Training'}: {', '.join(t.name for t in config.tasks)} on "
            f"{count} examples{'' if examples else ' per epoch'} ({total_steps} steps of "
            f"{training.batch_size}), vocabulary {preprocessor.vocabulary_size}, "
            f"{model.count_params():,} parameters, {config.precision}.",
            flush=True,
        )
    fit_start, fit_cpu = time.perf_counter(), time.process_time()
    if examples is not None:
        check_every_task_in_every_batch(model, training.batching)
        budget = _budget_batches(config, data, preprocessor, examples).map(counter)
        history = model.fit(budget, epochs=1, callbacks=callbacks, shuffle=False,
                            verbose=0).history
    else:
        batches = EpochBatches(data.rows, preprocessor, training.batch_size, seed=training.seed,
                               map_fn=counter, keep_order=training.batching == "every_task")
        check_every_task_in_every_batch(model, training.batching, batches, epochs)
        if position != (0, 0):  # count what the checkpointed steps consumed
            done = position[0] * batches.steps_per_epoch + position[1]
            for _ in batches.stream(0, 0, epochs).take(done):
                pass
        try:
            history = {} if stopped else train_epochs(
                model, batches, epochs, start=position, checkpoint=checkpoint,
                explicit_loop=explicit_loop, validation_data=dev_batches, callbacks=callbacks,
            )
        except guards.NonFiniteLossError as error:
            if run_dir is not None and role.is_chief:
                run_files.mark_failed(run_dir, model, error)
            raise
        if checkpoint is not None and checkpoint.signal is not None:
            raise checkpoints.Preempted(checkpoint.signal, checkpoint.step())
        if run_dir is not None:
            history = read_history(write_dir / run_files.HISTORY)
    train_seconds, train_cpu = time.perf_counter() - fit_start, time.process_time() - fit_cpu
    if training.checkpoint and best is not None and best.exists():
        model.load_weights(str(best))
    if role.count > 1:  # each worker evaluates on its own; only the chief writes
        model = distribute.local_copy(model)
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
    train_rows = {t.name: sum(table.labelled_counts()[t.name] for table in data.tables)
                  for t in config.tasks}
    return RunResult(model, dict(history), metrics, predictions, compute,
                     data.examples_per_epoch, config, train_rows)
