"""A run directory during training: its files, and which worker writes them.

`fit_run(config, run_dir=...)` keeps there (see `mtl_keras.train` for what
`mtl-keras train` adds at the end):

    run_dir/
      checkpoints/      the training state (`checkpoints.TrainingCheckpoint`),
                        manifest.json, best.weights.h5 (best `training.monitor`)
      history.csv       per-epoch logs (`keras.callbacks.CSVLogger`)
      tensorboard/      the same logs for TensorBoard (`training.tensorboard`)
      diagnostics.csv   gradient diagnostics, if asked for
      dev_split.json    with `data.split`: the dev rows taken from each training source
      FAILED.json       written when a loss turned non-finite

With several workers (`mtl_keras.distribute`) only the chief writes these;
every other worker writes the same files to its own temporary directory
(`WorkerRole.write_dir`, deleted at the end) and resumes from the chief's
checkpoints.
"""

import csv
import hashlib
import json
import shutil

import keras

from mtl_keras import checkpoints
from mtl_keras.paths import check_run_directory

BEST_WEIGHTS = "checkpoints/best.weights.h5"
CHECKPOINTS = "checkpoints"
HISTORY = "history.csv"
DIAGNOSTICS = "diagnostics.csv"
TENSORBOARD = "tensorboard"
FAILED = "FAILED.json"
DEV_SPLIT = "dev_split.json"
# What a resumed run must share with the checkpoints (besides tasks and shapes).
RESUME_SETTINGS = (
    "epochs", "batch_size", "learning_rate", "encoder_learning_rate", "weight_decay",
    "warmup_fraction", "schedule", "seed", "steps_per_execution", "batching",
)


def prepare(run_dir, role, restart):
    """Creates the run directory (the chief; with `restart`, empties its training files).

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras.distribute import WorkerRole
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / HISTORY).write_text("epoch,loss\\n0,1.0\\n")
    >>> prepare(run, WorkerRole(write_dir=run), restart=True)
    >>> (run / HISTORY).exists()
    False
    """
    if not role.is_chief:
        return
    check_run_directory(run_dir)  # not through a symbolic link
    run_dir.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        for name in (HISTORY, FAILED, DIAGNOSTICS):
            (run_dir / name).unlink(missing_ok=True)


def training_checkpoint(config, data, model, run_dir, role, allow_changed):
    """The run's `TrainingCheckpoint`: read from `run_dir`, written to the worker's directory.

    With several workers every worker must save at the same steps (saving
    reads the metrics' sums across workers), so the time-based trigger,
    whose clock differs between workers, is replaced by the epoch ends and
    `checkpoint_every_steps`; a note says so.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras import TextPreprocessor
    >>> from mtl_keras.config import load_config
    >>> from mtl_keras.distribute import WorkerRole
    >>> from mtl_keras.pipeline import build_model, read_data
    >>> config, run = load_config(), Path(tempfile.mkdtemp())
    >>> preprocessor = TextPreprocessor.from_texts(["the match"], 20, sequence_length=32,
    ...                                            align_words=True)
    >>> model = build_model(config, preprocessor)
    >>> checkpoint = training_checkpoint(config, read_data(config), model, run,
    ...                                  WorkerRole(write_dir=run), allow_changed=False)
    >>> checkpoint.restore(), checkpoint.every_seconds  # a new run: start at the beginning
    ((0, 0), 300.0)
    """
    training = config.training
    settings = {k: getattr(training, k) for k in RESUME_SETTINGS}
    settings.update(precision=config.precision, sampler=repr(config.sampler),
                    weighting=repr(config.weighting))
    # The same data and vocabulary: a resume must continue the same epochs.
    vocabulary = "\n".join(model.preprocessor.tokenizer.get_vocabulary())
    epoch_data = {
        "examples_per_epoch": data.examples_per_epoch,
        "vocabulary_sha256": hashlib.sha256(vocabulary.encode("utf-8")).hexdigest(),
    }
    if data.split is not None:  # the same dev rows (so the same training rows)
        rows = json.dumps([entry["dev_rows"] for entry in data.split["sources"]])
        epoch_data["dev_split_sha256"] = hashlib.sha256(rows.encode("utf-8")).hexdigest()
    every_seconds = training.checkpoint_every_seconds
    if role.count > 1:
        every_seconds = None
    checkpoint = checkpoints.TrainingCheckpoint(
        run_dir / CHECKPOINTS,
        checkpoints.manifest(model, settings, epoch_data),
        every_steps=training.checkpoint_every_steps,
        every_seconds=every_seconds,
        max_to_keep=training.checkpoints_to_keep,
        allow_changed_hyperparameters=allow_changed,
        write_directory=role.write_dir / CHECKPOINTS,
    )
    if role.count > 1 and training.checkpoint_every_seconds:
        checkpoint.notes.append(
            f"{role.count} workers: checkpoints at each epoch end"
            + (f" and every {training.checkpoint_every_steps} steps"
               if training.checkpoint_every_steps else "")
            + " (not every_seconds: all workers must save at the same step)."
        )
    checkpoint.set_model(model)
    return checkpoint


def write_dev_split(run_dir, record):
    """Writes `dev_split.json`: a `data.split_sources` record (fraction, seed, rows per source).

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp())
    >>> write_dev_split(run, {"dev_fraction": 0.1, "seed": 0, "sources": []})
    >>> json.loads((run / DEV_SPLIT).read_text())["dev_fraction"]
    0.1
    """
    (run_dir / DEV_SPLIT).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def keep_history_before(path, epoch):
    """Drops the rows of `epoch` and later from a `history.csv` (they are retrained).

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / HISTORY
    >>> _ = path.write_text("epoch,loss\\n0,1.0\\n1,0.5\\n")
    >>> keep_history_before(path, 1)
    >>> path.read_text().splitlines()
    ['epoch,loss', '0,1.0']
    """
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < epoch]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept if len(kept) > 1 else [])


def mark_failed(run_dir, model, error):
    """Restores the newest finite checkpoint into `model`; writes `FAILED.json`.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> run = Path(tempfile.mkdtemp())
    >>> model = MultiTaskModel([Task("spam", "binary")], SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> mark_failed(run, model, ValueError("the loss became nan"))
    >>> json.loads((run / FAILED).read_text())  # no checkpoint to restore
    {'error': 'the loss became nan', 'restored_step': None}
    """
    step = checkpoints.load_latest_weights(model, run_dir / CHECKPOINTS)
    report = {"error": str(error), "restored_step": step}
    (run_dir / FAILED).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` writing per-epoch scalars, with no per-batch cost.

    Keras's callback calls `summary.scalar` for every log entry after every
    batch even with `update_freq="epoch"`, where no writer is active and
    nothing is written: about 5 ms a batch with five tasks' metrics, a sixth
    of a step of the bundled sample's model. This subclass skips that hook
    when it can write nothing: epoch updates, no profiling, no graph.

    Example:
    >>> import tempfile
    >>> callback = EpochTensorBoard(tempfile.mkdtemp())
    >>> callback.update_freq, callback.write_graph
    ('epoch', False)
    """

    def __init__(self, log_dir, **kwargs):
        kwargs.setdefault("write_graph", False)
        super().__init__(log_dir, update_freq="epoch", **kwargs)
        self.batch_work = bool(self.write_graph or self.write_steps_per_second
                               or kwargs.get("profile_batch"))

    def on_train_batch_end(self, batch, logs=None):
        if self.batch_work:
            super().on_train_batch_end(batch, logs)


def callbacks(write_dir, training):
    """`CSVLogger` (appending) and, with `training.tensorboard`, `TensorBoard` logs.

    Every logged scalar per epoch (each task's losses and metrics, train and
    dev, and the learning rate) goes to `tensorboard/` in the run directory:
    `tensorboard --logdir RUN/tensorboard`.

    Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mtl_keras.config import Training
    >>> run = Path(tempfile.mkdtemp())
    >>> [type(c).__name__ for c in callbacks(run, Training())]
    ['CSVLogger', 'EpochTensorBoard']
    """
    write_dir.mkdir(parents=True, exist_ok=True)
    found = [keras.callbacks.CSVLogger(str(write_dir / HISTORY), append=True)]
    if training.tensorboard:
        found.append(EpochTensorBoard(str(write_dir / TENSORBOARD)))
    return found
