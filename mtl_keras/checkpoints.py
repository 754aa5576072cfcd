"""Training state on disk: checkpoints, resume, preemption.

`TrainingCheckpoint` is a Keras callback that saves the *whole* training
state with `tf.train.Checkpoint` + `tf.train.CheckpointManager`: every
weight (the dropout layers' seed-generator states included), the
optimizer's slots and counters (a `LossScaleOptimizer`'s scale too), the
metrics' running sums, the model's step counter and the data position
`(epoch, batch)`. It
saves every `every_steps` steps and/or `every_seconds` seconds, at each
epoch end, and when SIGTERM or SIGINT arrives (then it stops training and
`fit` returns; the caller raises `Preempted`). TensorFlow writes a
checkpoint's data first and its index last, and the manager keeps the last
`max_to_keep`.

`restore()` reads the newest readable checkpoint (a damaged newest one is
reported and the previous one used) after checking the run's manifest (the
tasks, the variables' shapes, the hyper-parameters); it returns the position
to resume from. Why not `keras.callbacks.BackupAndRestore`: it restores at
epoch granularity only, keeps no data position or metric state, and fails
with a raw h5py error on a damaged file.
"""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

MANIFEST = "manifest.json"
# Exit codes of a run stopped by a signal after saving: 128 + the signal.
PREEMPTED_EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class CheckpointError(RuntimeError):
    """The saved state cannot be resumed; the message says why and what to do."""


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint at `step`.

    Example:
    >>> Preempted(signal.SIGTERM, 12).exit_code
    143
    """

    def __init__(self, signum, step):
        self.signum, self.step = signum, step
        self.exit_code = PREEMPTED_EXIT_CODES.get(signum, 128 + int(signum))
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: saved a checkpoint at step {step}; run the same "
            f"command again to resume (exit code {self.exit_code})."
        )


def manifest(model, hyperparameters, data=None):
    """What a checkpoint must match to be resumed: tasks, variables, settings.

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> model = MultiTaskModel([Task("spam", "binary")], SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> manifest(model, {"learning_rate": 0.001})["tasks"]
    [{'name': 'spam', 'kind': 'binary', 'units': 1}]
    """
    return {
        "tasks": [
            {"name": t.name, "kind": t.kind, "units": t.head_units} for t in model.tasks
        ],
        "variables": [[v.path, list(v.shape)] for v in model.variables],
        "hyperparameters": dict(hyperparameters),
        "data": dict(data or {}),
    }


def check_manifest(saved, current, allow_changed_hyperparameters=False):
    """Raises `CheckpointError` naming what differs; returns notes on allowed changes.

    Example:
    >>> old = {"tasks": [{"name": "topic", "kind": "multiclass", "units": 4}],
    ...        "variables": [], "hyperparameters": {}, "data": {}}
    >>> new = dict(old, tasks=[{"name": "subject", "kind": "multiclass", "units": 4}])
    >>> check_manifest(old, new)
    Traceback (most recent call last):
    ...
    mtl_keras.checkpoints.CheckpointError: The checkpoints were saved for other tasks: task 'topic' is missing, task 'subject' is new. Resume with the same tasks, or start over with --restart.
    """
    problems = []
    old_tasks = {t["name"]: t for t in saved["tasks"]}
    new_tasks = {t["name"]: t for t in current["tasks"]}
    problems += [f"task {n!r} is missing" for n in old_tasks if n not in new_tasks]
    problems += [f"task {n!r} is new" for n in new_tasks if n not in old_tasks]
    for name in old_tasks.keys() & new_tasks.keys():
        for key in ("kind", "units"):
            if old_tasks[name][key] != new_tasks[name][key]:
                problems.append(
                    f"task {name!r} had {key} {old_tasks[name][key]!r}, now "
                    f"{new_tasks[name][key]!r}"
                )
    if not problems and list(old_tasks) != list(new_tasks):
        problems.append(f"the task order was {list(old_tasks)}, now {list(new_tasks)}")
    if problems:
        raise CheckpointError(
            f"The checkpoints were saved for other tasks: {', '.join(problems)}. "
            "Resume with the same tasks, or start over with --restart."
        )
    old_vars, new_vars = saved["variables"], current["variables"]
    problems = [
        f"{new[0]}: shape {old[1]} saved, {new[1]} now"
        for old, new in zip(old_vars, new_vars)
        if old[1] != new[1]
    ]
    if len(old_vars) != len(new_vars):
        problems.append(f"{len(old_vars)} variables saved, {len(new_vars)} now")
    if problems:
        raise CheckpointError(
            "The checkpoints were saved for another model: "
            + "; ".join(problems[:5])
            + ". Resume with the same encoder settings, or start over with --restart."
        )
    if saved.get("data", {}) != current.get("data", {}):
        raise CheckpointError(
            f"The training data changed since the checkpoints were saved "
            f"({saved.get('data')} then, {current.get('data')} now): resuming would "
            "not continue the same epochs. Start over with --restart."
        )
    changed = [
        f"{key}: {saved['hyperparameters'].get(key)!r} -> {value!r}"
        for key, value in current["hyperparameters"].items()
        if saved["hyperparameters"].get(key) != value
    ]
    if changed and not allow_changed_hyperparameters:
        raise CheckpointError(
            "The training settings changed since the checkpoints were saved ("
            + ", ".join(changed)
            + "). Resume with the same settings, pass --allow-changed-settings to "
            "resume with the new ones, or start over with --restart."
        )
    return [f"Resuming with a changed setting: {c}." for c in changed]


def _values(variables):
    """The variables as a list, matched by position: Keras makes a layer's path
    unique per process (`dropout_3`), so paths differ between the run that
    saved and a resume in a notebook that built other models first. The
    manifest check guarantees the same tasks, order and shapes."""
    return [getattr(v, "value", v) for v in variables]


def _write_atomically(path, text):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _steps_of(directory):
    """The step numbers of the checkpoints in `directory`, newest first."""
    found = []
    for index in Path(directory).glob("ckpt-*.index"):
        match = re.fullmatch(r"ckpt-(\d+)\.index", index.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found, reverse=True)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state regularly; restores the newest readable one.

    Args:
        directory: where the checkpoints (`ckpt-<step>.*`) and the manifest go.
        manifest: the run's `manifest(...)`; checked on `restore`.
        every_steps: also save every this many training steps.
        every_seconds: also save when this many seconds have passed.
        max_to_keep: checkpoints kept (the oldest are deleted).
        allow_changed_hyperparameters: resume although settings changed.
        handle_signals: save and stop on SIGTERM / SIGINT.
        write_directory: save there instead (a worker other than the chief
            writes a temporary copy; it restores, and reads the manifest,
            from `directory`).

    Example:
    >>> import tempfile, numpy as np
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> model = MultiTaskModel([Task("spam", "binary")], SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> model.compile()
    >>> checkpoint = TrainingCheckpoint(tempfile.mkdtemp(), manifest(model, {}), every_steps=2)
    >>> checkpoint.set_model(model)
    >>> checkpoint.restore()  # nothing saved yet: start at epoch 0, batch 0
    (0, 0)
    >>> x = {"token_ids": np.ones((8, 8), "int32"), "padding_mask": np.ones((8, 8), bool)}
    >>> _ = model.fit(x, {"spam": np.ones(8)}, batch_size=2, verbose=0, callbacks=[checkpoint])
    >>> checkpoint.saved_steps()
    [4, 2]
    """

    def __init__(
        self,
        directory,
        manifest,
        every_steps=None,
        every_seconds=None,
        max_to_keep=3,
        allow_changed_hyperparameters=False,
        handle_signals=True,
        write_directory=None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.write_directory = Path(write_directory or directory)
        self.manifest = manifest
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.max_to_keep = max_to_keep
        self.allow_changed_hyperparameters = allow_changed_hyperparameters
        self.handle_signals = handle_signals
        self.epoch_offset = 0  # batches of the current epoch done before this `fit`
        self.signal = None
        self._previous_handlers = {}
        self._steps = None
        self.notes = []
        self._checkpoint = self._manager = None
        self._restored_metrics = None

    # --- The state -----------------------------------------------------------

    def _state(self):
        if self._checkpoint is None:
            model = self.model
            self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._batch = tf.Variable(0, dtype=tf.int64, trainable=False)

            self._checkpoint = tf.train.Checkpoint(
                model=_values(model.variables),
                optimizer=_values(model.optimizer.variables),
                metrics=_values(model.metrics_variables),
                position={"epoch": self._epoch, "batch": self._batch},
            )
            self._manager = tf.train.CheckpointManager(
                self._checkpoint, str(self.write_directory), max_to_keep=self.max_to_keep
            )
        return self._checkpoint

    def saved_steps(self):
        """Steps of the checkpoints on disk, newest first."""
        return _steps_of(self.directory)

    def step(self):
        """The model's training step count (read from the model)."""
        return int(self.model.train_step_counter.numpy())

    def _step_now(self):
        # Counted in Python during `fit`: reading the variable every step
        # would force a device sync per step.
        return self._steps if self._steps is not None else self.step()

    def save(self, epoch, batch):
        """Saves the state now, at data position `(epoch, batch)`; returns its path."""
        self._state()
        self._epoch.assign(epoch)
        self._batch.assign(batch)
        path = self._manager.save(checkpoint_number=self._step_now())
        self._last_save = time.monotonic()
        return path

    def restore(self):
        """Restores the newest readable checkpoint; returns `(epoch, batch)` to resume at.

        `(0, 0)` when there is none. Checks the manifest first (raises
        `CheckpointError` naming a mismatch); writes it when absent.
        """
        self.write_directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / MANIFEST
        steps = self.saved_steps()
        # Checkpoints the manager recorded whose files are gone count as unreadable.
        listed = tf.train.get_checkpoint_state(str(self.directory))
        listed = [Path(p).name for p in (listed.all_model_checkpoint_paths if listed else [])]
        newest = steps[0] if steps else -1
        failed = [
            f"{name} (its files are missing)"
            for name in reversed(listed)
            if re.fullmatch(r"ckpt-\d+", name) and int(name[5:]) > newest
        ]
        if steps and path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.notes += check_manifest(
                saved, self.manifest, self.allow_changed_hyperparameters
            )
        elif steps:
            self.notes.append(f"No {MANIFEST} in {self.directory}: the tasks were not checked.")
        if self.write_directory == self.directory:
            _write_atomically(path, json.dumps(self.manifest, indent=1) + "\n")
        if not steps and failed:
            raise CheckpointError(
                f"No checkpoint in {self.directory} could be read: {'; '.join(failed)}. "
                "Start over with --restart."
            )
        if not steps:
            return 0, 0
        state = self._state()
        for step in steps:
            prefix = str(self.directory / f"ckpt-{step}")
            try:
                state.read(prefix).assert_existing_objects_matched()
            except Exception as error:  # noqa: BLE001 (any unreadable checkpoint is reported)
                reason = str(error).strip().splitlines()[0][:200]
                failed.append(f"ckpt-{step} ({type(error).__name__}: {reason})")
                continue
            if failed:
                self.notes.append(
                    f"Could not read checkpoint {', '.join(failed)}; resumed from "
                    f"the previous one, ckpt-{step}, instead."
                )
            self._restored_metrics = [v.numpy() for v in self.model.metrics_variables]
            return int(self._epoch.numpy()), int(self._batch.numpy())
        raise CheckpointError(
            f"No checkpoint in {self.directory} could be read: {'; '.join(failed)}. "
            "Start over with --restart."
        )

    # --- Callback --------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._state()
        self._steps, self._seen = self.step(), 0
        self._last_save = time.monotonic()
        self.signal = None
        self._previous_handlers = {}
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for signum in PREEMPTED_EXIT_CODES:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        self.signal = signum  # acted on at the end of the current step

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch, self._epoch_complete, self._seen = epoch, False, 0
        if self._restored_metrics is not None and self.epoch_offset:
            # `fit` reset the metrics; the epoch goes on with the saved sums.
            for variable, value in zip(self.model.metrics_variables, self._restored_metrics):
                variable.assign(value)
        self._restored_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        position = self.epoch_offset + batch + 1
        self._steps += batch + 1 - self._seen  # one step per batch (steps_per_execution too)
        self._seen = batch + 1
        steps = (self.params or {}).get("steps")
        last = steps is not None and batch + 1 >= steps
        due = self.signal is not None
        if self.every_steps and self._steps % self.every_steps == 0:
            due = True
        if self.every_seconds and time.monotonic() - self._last_save >= self.every_seconds:
            due = True
        self._epoch_complete = last
        if due and not last:  # the epoch end saves after the validation
            self.save(self._current_epoch, position)
        if self.signal is not None:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_offset = 0
        if self._epoch_complete:  # not after a stop inside the epoch (saved there)
            self.save(epoch + 1, 0)
        if self.signal is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self._steps = None
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}


def load_latest_weights(model, directory):
    """Loads the model weights of the newest readable checkpoint in `directory`.

    Returns its step, or None when there is none. (Used to restore the last
    finite state after a failure.)

    Example:
    >>> import tempfile
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task
    >>> model = MultiTaskModel([Task("spam", "binary")], SharedEncoder(20, 8, hidden_dim=8, num_layers=1))
    >>> load_latest_weights(model, tempfile.mkdtemp()) is None
    True
    """
    for step in _steps_of(directory):
        state = tf.train.Checkpoint(model=_values(model.variables))
        try:
            state.read(str(Path(directory) / f"ckpt-{step}")).expect_partial()
        except (tf.errors.OpError, ValueError):
            continue
        if all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables):
            return step
    return None
