"""Where training runs: one device, the local devices, or several worker processes.

`make_strategy(name)` builds the `tf.distribute` strategy of
`mtl-keras train --strategy` (`none`, `mirrored`, `multi_worker`);
`fit_run(config, strategy=...)` takes any strategy. The training step is
the same on all of them (`mtl_keras.step`: global losses, gradients summed
over the replicas before clipping and before a weighting method combines
them), so N replicas on a global batch train like one device on it.

Several workers (`multi_worker`) follow TensorFlow's conventions: each
process is given the cluster and its own place in it by the `TF_CONFIG`
environment variable, and all of them run the same command. The chief
(the `chief` task, else worker 0) writes the run directory; each other
worker writes its checkpoints and logs (which TensorFlow needs every worker
to write, at the same steps) to a temporary directory that is deleted at
the end (`WorkerRole.write_dir`). A worker resumes from the chief's
checkpoints, so a resumed multi-worker run needs the run directory on a
filesystem every worker sees.

A worker that dies leaves the others waiting in a collective operation;
`collective_timeout` (seconds) makes them fail instead, with
`tf.errors.DeadlineExceededError` (or `UnavailableError` when TensorFlow's
peer health check notices first).
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker")


class StrategyError(ValueError):
    """A strategy that cannot be built here; the message says what to set."""


def make_strategy(name, collective_timeout=None):
    """The strategy `name` names (`None` for `"none"`: the default strategy).

    Args:
        name: `none`, `mirrored` (every local GPU, else the CPU) or
            `multi_worker` (the processes `TF_CONFIG` lists; build it
            before any other TensorFlow call of the program).
        collective_timeout: seconds a collective operation may wait for the
            other workers before failing (`multi_worker`); None waits.

    Example:
    >>> make_strategy("none") is None
    True
    >>> make_strategy("multi_worker")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mtl_keras.distribute.StrategyError: --strategy multi_worker needs the environment variable TF_CONFIG...
    """
    if name not in STRATEGIES:
        raise StrategyError(f"Unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}.")
    if name == "none":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    cluster_config(os.environ.get("TF_CONFIG"))
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def cluster_config(text):
    """Parses and checks a `TF_CONFIG` value; returns it as a dict.

    Example:
    >>> cluster_config('{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
    ...                '"task": {"type": "worker", "index": 1}}')["task"]
    {'type': 'worker', 'index': 1}
    >>> cluster_config('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}')
    Traceback (most recent call last):
    ...
    mtl_keras.distribute.StrategyError: TF_CONFIG: task index 3 is not in the cluster's 1 'worker' address(es).
    """
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\' (index 1 on the second worker)'
    )
    if not text:
        raise StrategyError(
            "--strategy multi_worker needs the environment variable TF_CONFIG in every "
            f"worker process, naming the cluster and this process's place in it: {example}."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise StrategyError(f"TF_CONFIG is not JSON ({error}): {example}.") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise StrategyError(f"TF_CONFIG needs a 'cluster' and a 'task' object: {example}.")
    kind, index = task.get("type"), task.get("index")
    addresses = cluster.get(kind)
    if not isinstance(addresses, list):
        raise StrategyError(
            f"TF_CONFIG: the task type {kind!r} has no addresses in the cluster "
            f"(it lists {', '.join(map(repr, cluster)) or 'nothing'})."
        )
    if not isinstance(index, int) or not 0 <= index < len(addresses):
        raise StrategyError(
            f"TF_CONFIG: task index {index} is not in the cluster's {len(addresses)} "
            f"{kind!r} address(es)."
        )
    return config


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's part in a run: which worker it is and where it writes.

    Attributes:
        index: the worker's number (0 for the chief).
        count: the workers training the model together.
        write_dir: the directory this worker writes (the run directory for
            the chief, a temporary one for the others), or None.

    Example:
    >>> role = worker_role(None, "runs/sample")
    >>> role.is_chief, role.count, str(role.write_dir)
    (True, 1, 'runs/sample')
    """

    index: int = 0
    count: int = 1
    write_dir: Path = None

    @property
    def is_chief(self):
        return self.index == 0

    def clean_up(self):
        """Deletes a non-chief worker's temporary directory (the chief's stays)."""
        if not self.is_chief and self.write_dir is not None:
            shutil.rmtree(self.write_dir, ignore_errors=True)


def worker_role(strategy, run_dir=None):
    """The `WorkerRole` of this process under `strategy` (None: one process).

    A non-chief worker gets a new temporary directory to write to (delete it
    with `clean_up()`).

    Example:
    >>> worker_role(tf.distribute.get_strategy(), "runs/sample")  # one process
    WorkerRole(index=0, count=1, write_dir=PosixPath('runs/sample'))
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = [(kind, i) for kind in ("chief", "worker") for i in range(len(cluster.get(kind, [])))]
    if len(workers) < 2:
        return WorkerRole(write_dir=None if run_dir is None else Path(run_dir))
    index = workers.index((resolver.task_type, resolver.task_id))
    write_dir = None if run_dir is None else Path(run_dir)
    if index and run_dir is not None:
        write_dir = Path(tempfile.mkdtemp(prefix=f"mtl-keras-worker{index}-"))
    return WorkerRole(index, len(workers), write_dir)


def barrier(strategy):
    """Waits until every worker of `strategy` gets here (a one-number all-reduce).

    Example:
    >>> barrier(tf.distribute.get_strategy())
    1.0
    """
    one = strategy.run(lambda: tf.constant(1.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None))


def local_copy(model):
    """`model` saved and loaded outside any strategy (safe mode), compiled for evaluation.

    After multi-worker training every worker evaluates its own copy: no
    collective operation, so the chief writes the run directory and the
    others finish without waiting for one another. The `.keras` round trip
    is the one `mtl-keras train` writes (weights, tasks, preprocessor).

    Example:
    >>> from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor
    >>> preprocessor = TextPreprocessor.from_texts(["good film"], 20, sequence_length=8)
    >>> encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1)
    >>> model = MultiTaskModel([Task("liked", "binary")], encoder, preprocessor)
    >>> copy = local_copy(model)
    >>> copy is not model and all((a == b).all() for a, b in zip(copy.get_weights(), model.get_weights()))
    True
    """
    from mtl_keras.export import load_keras_model

    with tempfile.TemporaryDirectory(prefix="mtl-keras-copy-") as directory:
        path = str(Path(directory) / "model.keras")
        model.save(path)
        copy = load_keras_model(path, compile=False)
    copy.compile()
    return copy
