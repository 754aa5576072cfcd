"""Keras epoch k of `fit_run` consumes exactly data epoch k, counted as `fit` consumes it.

Every example has a unique text; the training step itself records the token
ids it receives (a `tf.py_function` inside `train_step`), so what is counted is
what `fit` trained on, after bucketing, batching and prefetching.
"""

import collections
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from mtl_keras.config import load_config
from mtl_keras.model import MultiTaskModel
from mtl_keras.pipeline import fit_run, read_data

EPOCHS, BATCH = 2, 16


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("epochs")
    words = ["alpha", "beta", "gamma", "delta"]
    # 60 rows of task a, 20 of task b; the joint file has both labels (b on every third row).
    (root / "a.tsv").write_text("text\ta\n" + "".join(
        f"{words[i % 4]} a{i}\t{i % 2}\n" for i in range(60)))
    (root / "b.tsv").write_text("text\tb\n" + "".join(
        f"{words[i % 4]} b{i}\t{i % 2}\n" for i in range(20)))
    (root / "joint.tsv").write_text("text\ta\tb\n" + "".join(
        f"{words[i % 4]} j{i}\t{i % 2}\t{i % 2 if i % 3 == 0 else ''}\n" for i in range(70)))
    return root


def _config(root, sampler, path):
    tasks = [{"name": "a", "kind": "binary"}, {"name": "b", "kind": "binary"}]
    if sampler == "joint":
        train = [{"file": "joint.tsv", "tasks": ["a", "b"]}]
    else:
        train = [{"file": "a.tsv", "tasks": ["a"]}, {"file": "b.tsv", "tasks": ["b"]}]
    mapping = {
        "tasks": tasks,
        "data_root": str(root),
        "data": {"train": train, "dev": [{"file": "joint.tsv", "tasks": ["a", "b"], "max_rows": 12}]},
        "preprocessor": {"vocabulary_size": 300, "sequence_length": 16},
        "encoder": {"hidden_dim": 8, "num_layers": 1, "num_heads": 2},
        "sampler": sampler,
        "training": {"epochs": EPOCHS, "batch_size": BATCH, "seed": 5},
    }
    path.write_text(yaml.safe_dump(mapping))
    return load_config(path)


class _EpochMarker(keras.callbacks.Callback):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append([])


@pytest.mark.parametrize("sampler", ["joint", "proportional", "temperature", "uniform", "annealed"])
def test_each_keras_epoch_trains_on_exactly_its_data_epoch(data_root, tmp_path, monkeypatch, sampler):
    config = _config(data_root, sampler, tmp_path / "config.yaml")
    seen = []  # one list of token-id rows per Keras epoch
    train_step = MultiTaskModel.train_step

    def recording_step(self, data):
        def record(token_ids):
            seen[-1].extend(tuple(t for t in row if t) for row in token_ids.numpy().tolist())
            return 0

        tf.py_function(record, [data[0]["token_ids"]], tf.int32)
        return train_step(self, data)

    monkeypatch.setattr(MultiTaskModel, "train_step", recording_step)
    result = fit_run(config, callbacks=[_EpochMarker(seen)], verbose=0, with_predictions=False)

    rows = read_data(config).rows
    preprocessor = result.model.preprocessor
    assert len(seen) == EPOCHS
    for epoch in range(EPOCHS):
        planned = [f["text"] for f, _, _ in rows.epoch_dataset(epoch).batch(1000)][0]
        ids = preprocessor(planned)["token_ids"].numpy().tolist()
        expected = collections.Counter(tuple(t for t in row if t) for row in ids)
        assert len(expected) == len(set(planned.numpy().tolist()))  # texts tokenize apart
        got = collections.Counter(seen[epoch])
        assert got == expected, f"epoch {epoch}: {sum((got - expected).values())} extra, " \
                                f"{sum((expected - got).values())} missing"
        assert sum(got.values()) == rows.epoch_size
    if sampler != "joint":
        sizes = [sum(1 for _ in rows.epoch_dataset(e)) for e in range(EPOCHS)]
        assert sizes == [80] * EPOCHS
        counts = [rows.counts(e) for e in range(EPOCHS)]
        if sampler == "annealed":
            assert counts[0] != counts[-1]  # annealing by the true epoch
    assert result.compute["examples"] == EPOCHS * rows.epoch_size
    assert int(result.model.optimizer.iterations.numpy()) == EPOCHS * int(np.ceil(rows.epoch_size / BATCH))


def test_every_task_batching_puts_each_task_in_every_batch_and_keeps_the_epochs(
    data_root, tmp_path, monkeypatch
):
    config = _config(data_root, "uniform", tmp_path / "config.yaml")
    config = dataclasses.replace(config, weighting="pcgrad").replace(batching="every_task")
    batches = []  # per batch: (token-id rows, labelled count per task)
    train_step = MultiTaskModel.train_step

    def recording_step(self, data):
        def record(token_ids, mask_a, mask_b):
            rows = [tuple(t for t in row if t) for row in token_ids.numpy().tolist()]
            batches.append((rows, float(mask_a.numpy().sum()), float(mask_b.numpy().sum())))
            return 0

        tf.py_function(record, [data[0]["token_ids"], data[2]["a"], data[2]["b"]], tf.int32)
        return train_step(self, data)

    monkeypatch.setattr(MultiTaskModel, "train_step", recording_step)
    result = fit_run(config, verbose=0, with_predictions=False)
    rows = read_data(config).rows
    steps = int(np.ceil(rows.epoch_size / BATCH))
    assert len(batches) == EPOCHS * steps
    assert all(a > 0 and b > 0 for _, a, b in batches)  # both tasks in every batch
    for epoch in range(EPOCHS):  # the sampler's counts, each example once
        counts = rows.counts(epoch)
        labelled_a = sum(a for _, a, _ in batches[epoch * steps : (epoch + 1) * steps])
        assert labelled_a == counts["a.tsv"]
        per_batch = [a for _, a, _ in batches[epoch * steps : (epoch + 1) * steps - 1]]
        share = counts["a.tsv"] * BATCH / rows.epoch_size
        assert all(abs(a - share) <= 1 for a in per_batch)  # each batch holds its share
        planned = [f["text"] for f, _, _ in rows.epoch_dataset(epoch).batch(1000)][0]
        ids = result.model.preprocessor(planned)["token_ids"].numpy().tolist()
        expected = collections.Counter(tuple(t for t in row if t) for row in ids)
        got = collections.Counter(r for rs, _, _ in batches[epoch * steps : (epoch + 1) * steps] for r in rs)
        assert got == expected


def test_a_method_that_needs_every_task_refuses_batches_without_one(data_root, tmp_path):
    config = _config(data_root, "uniform", tmp_path / "config.yaml")
    with pytest.raises(ValueError, match="needs every task in every batch.*batching: every_task"):
        fit_run(dataclasses.replace(config, weighting="famo"), verbose=0)
    joint = _config(data_root, "joint", tmp_path / "joint.yaml")  # b on every third row
    joint = dataclasses.replace(joint, weighting="pcgrad").replace(batching="every_task", batch_size=2)
    with pytest.raises(ValueError, match=r"batch \d+ of epoch 1 has no labels for task 'b'"):
        fit_run(joint, verbose=0)


def test_fully_joint_rows_need_no_every_task_batching(data_root, tmp_path):
    """Every row labelled for every task: any batch has them all; bucketing stays."""
    from mtl_keras import TextPreprocessor
    from mtl_keras.backbone import SharedEncoder
    from mtl_keras.data import JointRows
    from mtl_keras.epochs import EpochBatches, check_every_task_in_every_batch
    from mtl_keras.model import MultiTaskModel
    from mtl_keras.tasks import Task

    tasks = [Task("a", "binary"), Task("b", "binary")]
    encoder = SharedEncoder(vocabulary_size=50, sequence_length=16, hidden_dim=8,
                            num_layers=1, num_heads=2)
    model = MultiTaskModel(tasks, encoder, weighting="pcgrad")
    preprocessor = TextPreprocessor.from_texts(["alpha beta"], 50, sequence_length=16)
    (tmp_path / "full.tsv").write_text("text\ta\tb\n" + "".join(
        f"row {i}\t{i % 2}\t{i % 3 % 2}\n" for i in range(20)))
    from mtl_keras.data import FileSource

    full = EpochBatches(JointRows(tasks, FileSource(tmp_path / "full.tsv", tasks=["a", "b"])),
                        preprocessor, 4)
    check_every_task_in_every_batch(model, "length", full, 2)  # no error
    partial = EpochBatches(JointRows(tasks, FileSource(data_root / "joint.tsv", tasks=["a", "b"])),
                           preprocessor, 4)
    with pytest.raises(ValueError, match="set `training: {batching: every_task}`"):
        check_every_task_in_every_batch(model, "length", partial, 2)
