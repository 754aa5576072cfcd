import keras
import numpy as np
import pytest

from mtl_keras.kinds import KINDS
from mtl_keras.metrics import LogitF1Score
from mtl_keras.tasks import Task, validate_tasks


@pytest.mark.parametrize(
    "kind, num_classes, units, metrics",
    [
        ("multiclass", 4, 4, ["accuracy", "macro_f1", "mcc"]),
        ("binary", 2, 1, ["accuracy", "auc", "precision", "recall", "f1", "mcc"]),
        ("multilabel", 5, 5, ["macro_f1", "accuracy", "auc"]),
        ("regression", 2, 1, ["mae", "mse"]),
        ("tagging", 7, 7, ["token_accuracy"]),
    ],
)
def test_each_kind_defines_head_and_metrics(kind, num_classes, units, metrics):
    task = Task("t", kind, num_classes=num_classes)
    assert task.head_units == units
    assert task.metric_names() == metrics
    assert all(m.name.startswith("t_") for m in task.metrics())


@pytest.mark.parametrize("kind", list(KINDS))
def test_losses_take_logits(kind):
    loss = Task("t", kind, num_classes=3).loss()
    assert loss.reduction is None
    if kind != "regression":
        assert loss.get_config()["from_logits"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="a b", kind="binary"), "not valid"),
        (dict(name="../x", kind="binary"), "not valid"),
        (dict(name="1st", kind="binary"), "not valid"),
        (dict(name="loss", kind="binary"), "reserved"),
        (dict(name="t", kind="ranking"), "unknown kind 'ranking'"),
        (dict(name="t", kind="multiclass", num_classes=1), "num_classes >= 2"),
        (dict(name="t", kind="multilabel", num_classes=1), "num_classes >= 2"),
        (dict(name="t", kind="binary", loss_weight=-1), "loss_weight must be a number >= 0"),
        (dict(name="t", kind="binary", loss_weight=float("nan")), "loss_weight"),
        (dict(name="t", kind="multiclass", num_classes=3, label_names=["a"]), "1 label names given for 3"),
    ],
)
def test_bad_specs_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Task(**kwargs)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="Duplicate task name 'a'"):
        validate_tasks([Task("a", "binary"), Task("a", "regression")])
    with pytest.raises(ValueError, match="at least one task"):
        validate_tasks([])


def test_config_round_trip_and_classes():
    task = Task("topic", "multiclass", 3, label_names=["w", "s", "b"], loss_weight=0.5)
    assert Task.from_config(task.get_config()) == task
    assert task.classes == ("w", "s", "b")
    assert Task("p", "binary").classes == ("0", "1")
    assert validate_tasks([task.get_config()]) == (task,)


def test_macro_f1_from_logits():
    sparse = LogitF1Score(3, sparse=True)
    sparse.update_state([0, 1, 2, 2], [[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])
    # class 0: P=1/2 R=1 F=2/3; class 1: 1; class 2: P=1 R=1/2 F=2/3.
    assert float(sparse.result()) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3, 1e-5)
    multi = LogitF1Score(2, sparse=False)
    multi.update_state(np.array([[1, 0], [0, 1]], "float32"), np.array([[5, -5], [-5, 5]], "float32"))
    assert float(multi.result()) == pytest.approx(1.0)
    restored = LogitF1Score.from_config(sparse.get_config())
    assert restored.num_classes == 3 and restored.sparse
    assert keras.metrics.deserialize(keras.metrics.serialize(sparse)).sparse
