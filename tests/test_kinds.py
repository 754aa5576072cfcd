"""Task kinds: each kind's contract, and a new kind added from a test alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor, kinds
from mtl_keras.data import FileSource
from mtl_keras.export import export_saved_model, load_for_serving
from mtl_keras.kinds import KINDS, TaskKind, get_kind, register_kind


class Share(TaskKind):
    """A test-only kind: a share in [0, 1], one sigmoid output, soft cross-entropy."""

    name = "share"
    single_output = True
    headline_metric = "mae"

    def label_count(self, task):
        return 0

    def loss(self):
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def metrics(self, task):
        return {"mae": ShareError(name=f"{task.name}_mae")}

    def loss_inputs(self, labels, logits):
        return tf.reshape(tf.cast(labels, "float32"), (-1, 1)), logits

    def parse(self, task, value, label_map, num_words):
        share = float(value)
        if not 0.0 <= share <= 1.0:
            raise ValueError("a share must be in [0, 1]")
        return share

    def serving_outputs(self, task, logits, padding_mask):
        return {f"{task.name}_share": tf.sigmoid(tf.reshape(logits, [-1]))}

    def output_names(self, task):
        return [f"{task.name}_share"]

    def format(self, task, outputs, row, top_k=None):
        return {"share": round(float(outputs[f"{task.name}_share"][row]), 6)}


class ShareError(keras.metrics.MeanMetricWrapper):
    def __init__(self, name="mae", **kwargs):
        super().__init__(
            lambda y, z: keras.ops.abs(y - keras.ops.sigmoid(z)), name=name, **kwargs
        )


@pytest.fixture
def share_kind():
    register_kind(Share)
    yield KINDS["share"]
    del KINDS["share"]


def test_every_kind_has_a_headline_metric_among_its_metrics():
    for name, kind in KINDS.items():
        task = Task("t", name, num_classes=3)
        assert kind.headline_metric == task.metric_names()[0], name
        assert all(m.name.startswith("t_") for m in task.metrics())


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
def test_every_kind_but_tagging_plots_its_dev_predictions(kind):
    import matplotlib

    matplotlib.use("Agg")
    task = Task("t", kind, num_classes=3)
    labels = task.task_kind.label_array(task, [task.task_kind.placeholder(task, 1)] * 4)
    figure, suffix = task.task_kind.plot(task, labels, np.zeros((4, task.head_units)))
    assert figure.axes and suffix in ("confusion", "predictions")
    assert get_kind("tagging").plot(Task("t", "tagging", 3), labels, None) is None


def test_unknown_kind_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'binary'"):
        get_kind("binarry")


@pytest.mark.parametrize(
    "kind, cell, expected",
    [
        ("multiclass", "politics", 1),
        ("binary", "1", 1),
        ("multilabel", "sports,tech", [1.0, 0.0, 1.0]),
        ("regression", "2.5", 2.5),
        ("tagging", "tech sports", [2, 0]),
    ],
)
def test_kinds_parse_their_cells(kind, cell, expected):
    names = None if kind in ("binary", "regression") else ("sports", "politics", "tech")
    task = Task("t", kind, num_classes=3, label_names=names)
    parsed = task.task_kind.parse(task, cell, None, num_words=2)
    np.testing.assert_allclose(parsed, expected)


def test_binary_metrics_include_positive_class_f1_and_mcc():
    task = Task("spam", "binary")
    metrics = dict(zip(task.metric_names(), task.metrics()))
    labels = np.array([1, 1, 0, 0, 1, 0], "float32")
    logits = np.array([[1], [-1], [-1], [-1], [1], [1]], "float32")  # tp 2 fn 1 tn 2 fp 1
    for metric in metrics.values():
        metric.update_state(labels.reshape(-1, 1), logits)
    assert float(metrics["precision"].result()) == pytest.approx(2 / 3)
    assert float(metrics["recall"].result()) == pytest.approx(2 / 3)
    assert float(metrics["f1"].result()) == pytest.approx(2 / 3)
    assert float(metrics["mcc"].result()) == pytest.approx((2 * 2 - 1) / 9)


def test_multiclass_mcc_is_gorodkins():
    task = Task("topic", "multiclass", num_classes=3)
    mcc = dict(zip(task.metric_names(), task.metrics()))["mcc"]
    truth = np.array([0, 1, 2, 2])
    mcc.update_state(truth, np.eye(3)[truth])
    assert float(mcc.result()) == pytest.approx(1.0)
    mcc.reset_state()
    mcc.update_state(truth, np.eye(3)[[0, 0, 0, 0]])
    assert float(mcc.result()) == 0.0


def test_a_new_kind_needs_only_the_kinds_module(share_kind, tmp_path):
    """Registered in this test: read from a file, trained, saved, exported, served."""
    task = Task("liked", "share")
    assert task.head_units == 1 and task.classes == ()
    rows = ["text\tliked"] + [f"{'good ' * (i % 4)}film\t{(i % 4) / 3:.3f}" for i in range(64)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    examples = FileSource(tmp_path / "train.tsv", "text", {"liked": "liked"}).read([task])
    assert examples.labels["liked"].max() == pytest.approx(1.0)
    preprocessor = TextPreprocessor.from_texts(list(examples.text), 30, sequence_length=8)
    encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1, dropout=0.0)
    model = MultiTaskModel([task], encoder, preprocessor)
    model.compile(learning_rate=1e-2)
    x = preprocessor(list(examples.text))
    y = {"liked": examples.labels["liked"]}
    before = model.evaluate(x, y, verbose=0, return_dict=True)["liked_mae"]
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["liked_mae"]
    assert after < 0.5 * before
    rows = model.predict_labels(["good good good film", "film"])
    assert rows[0]["liked"]["share"] > rows[1]["liked"]["share"]
    model.save(tmp_path / "share.keras")
    served = load_for_serving(tmp_path / "share.keras").predict(["good good good film", "film"])
    assert served == rows
    export_saved_model(model, tmp_path / "export")
    exported = load_for_serving(tmp_path / "export").predict(["good good good film", "film"])
    for a, b in zip(exported, rows):
        assert a["liked"]["share"] == pytest.approx(b["liked"]["share"], abs=1e-5)


def test_format_rows_uses_each_kinds_format():
    tasks = [Task("s", "binary", label_names=("no", "yes")), Task("r", "regression")]
    outputs = {
        "num_tokens": np.array([2]),
        "s_probabilities": np.array([0.75], "float32"),
        "s_label": np.array([b"yes"]),
        "r_value": np.array([1.5], "float32"),
    }
    assert kinds.format_rows(tasks, outputs) == [
        {"s": {"label": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}, "r": {"value": 1.5}}
    ]
    top = kinds.format_rows(tasks, outputs, top_k=1)[0]["s"]["probabilities"]
    assert top == {"yes": 0.75}
