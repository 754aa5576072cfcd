"""A tiny learnable multi-task problem on token ids, one task of each kind.

Token ids 1..K-1 are random filler; each example hides cue tokens that
determine every task's label, so a small Transformer learns all of them in
a few hundred steps.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import MultiTaskModel, SharedEncoder, Task

VOCAB = 64
LENGTH = 12
TASKS = [
    Task("topic", "multiclass", num_classes=3),
    Task("positive", "binary"),
    Task("tags", "multilabel", num_classes=3),
    Task("score", "regression"),
    Task("pos", "tagging", num_classes=3),
]
# Cue tokens: topic c -> 40 + c; positive -> 50; tag j -> 55 + j.


def make_batch(n, seed=0, missing=0.0):
    """Returns `(x, y, sample_weight)` numpy dicts with `missing` labels masked."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 40, size=(n, LENGTH)).astype("int32")
    topic = rng.integers(0, 3, size=n)
    positive = rng.integers(0, 2, size=n)
    tags = rng.integers(0, 2, size=(n, 3))
    ids[:, 0] = 40 + topic
    ids[:, 1] = np.where(positive == 1, 50, 51)
    for j in range(3):
        ids[:, 2 + j] = np.where(tags[:, j] == 1, 55 + j, 60)
    score = (positive * 2.0 + topic * 0.5).astype("float32")
    pos = (ids % 3).astype("int32")  # per-token class readable from the token
    x = {"token_ids": ids, "padding_mask": np.ones((n, LENGTH), bool)}
    y = {
        "topic": topic.astype("int32"),
        "positive": positive.astype("float32"),
        "tags": tags.astype("float32"),
        "score": score,
        "pos": pos,
    }
    weights = {}
    for name in y:
        keep = (rng.random(n) >= missing).astype("float32")
        weights[name] = np.repeat(keep[:, None], LENGTH, 1) if name == "pos" else keep
    return x, y, weights


def make_model(precision="float32", hidden=16, tasks=TASKS, **kwargs):
    encoder = SharedEncoder(
        vocabulary_size=VOCAB,
        sequence_length=LENGTH,
        hidden_dim=hidden,
        num_layers=1,
        num_heads=2,
        dropout=0.0,
        dtype=precision,
    )
    return MultiTaskModel(tasks, encoder, **kwargs)


def two_replica_strategy():
    """MirroredStrategy on 2 logical CPUs with its default all-reduce (collective ops).

    One per process: each new MirroredStrategy numbers its collective ops from
    the same keys, and TensorFlow then matches an op of the new strategy with
    a different-shaped one of the old ("Shape mismatch in the collective
    instance"). A program makes one strategy; so do the tests.
    """
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set in conftest.py)")
    return _strategy(tuple(d.name for d in devices[:2]))


@functools.cache
def _strategy(devices):
    return tf.distribute.MirroredStrategy(list(devices))
