"""Tests of mtl_keras.data: sources, the two training modes, validation."""

import collections
import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import yaml

import mtl_keras.data
from mtl_keras.data import (
    GOEMOTIONS_LABELS,
    Annealed,
    DataValidationError,
    FileSource,
    Mixture,
    Proportional,
    Temperature,
    TfdsSource,
    Uniform,
    bundled_sample,
    eval_datasets,
    get_sampler,
    joint_dataset,
    largest_remainder,
    validate,
)
from mtl_keras.tasks import Task

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(
    os.environ.get(
        "MTL_KERAS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)
SENTIMENT = Task("sentiment", "binary", label_names=("negative", "positive"))


def shared(relative):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared dataset file {path} is absent")
    return path


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def examples(ds):
    return list(ds.as_numpy_iterator())


def labelled(ds, task):
    return sum(int(masks[task]) for _, _, masks in examples(ds))


# ---------------------------------------------------------------- real files


def test_sst2_dev_unquoted_glue_tsv():
    source = FileSource(
        shared("sst2/dev.tsv"), "sentence", {"sentiment": "label"}, quoting="none"
    )
    table = source.read([SENTIMENT])
    assert len(table) == 872  # PROVENANCE: 872 rows, 444 positive
    assert table.labels["sentiment"].sum() == 444
    assert table.text[0] == "it 's a charming and often affecting journey . "


def test_cola_dev_without_header():
    source = FileSource(
        shared("cola/in_domain_dev.tsv"),
        "sentence",
        {"acceptable": "label"},
        quoting="none",
        header=False,
        column_names=["source", "label", "original_label", "sentence"],
    )
    table = source.read([Task("acceptable", "binary")])
    assert len(table) == 527  # PROVENANCE: 527 rows, 365 acceptable
    assert table.labels["acceptable"].sum() == 365


def test_rte_dev_pairs_with_string_labels():
    task = Task("rte", "binary", label_names=("entailment", "not_entailment"))
    source = FileSource(
        shared("rte/dev.tsv"),
        "sentence1",
        {"rte": "label"},
        text_pair="sentence2",
    )
    rows = examples(joint_dataset([task], source, shuffle=False))
    assert len(rows) == 277  # PROVENANCE: 146 entailment (class 0), 131 not
    assert sum(labels["rte"] == 0 for _, labels, _ in rows) == 146
    features = rows[0][0]
    assert features["text"].startswith(b"Dana Reeve")
    assert features["text_pair"] == b"Christopher Reeve had an accident."


def test_ag_news_sample_label_map_and_name_column_agree():
    names = ("World", "Sports", "Business", "Sci/Tech")
    tasks = [
        Task("topic", "multiclass", 4, label_names=names),
        Task("topic_by_name", "multiclass", 4, label_names=names),
    ]
    source = FileSource(
        shared("ag_news/train_sample_10k.tsv"),
        "description",
        {"topic": "label", "topic_by_name": "label_name"},
        label_map={"topic": {"1": 0, "2": 1, "3": 2, "4": 3}},
        max_rows=300,
    )
    table = source.read(tasks)
    assert len(table) == 300
    np.testing.assert_array_equal(table.labels["topic"], table.labels["topic_by_name"])
    assert set(table.labels["topic"]) == {0, 1, 2, 3}


def test_ag_news_test_csv_without_header():
    source = FileSource(
        shared("ag_news/test.csv"),
        "description",
        {"topic": "label"},
        header=False,
        column_names=["label", "title", "description"],
        label_map={"topic": {"1": 0, "2": 1, "3": 2, "4": 3}},
        max_rows=100,
    )
    table = source.read([Task("topic", "multiclass", 4)])
    assert len(table) == 100 and table.masks["topic"].all()


def goemotions_tasks():
    def names(folder):
        return shared(f"goemotions/{folder}/labels.txt").read_text().split()

    return [
        Task("emotions", "multilabel", 28, label_names=names("original")),
        Task("group", "multilabel", 4, label_names=names("group")),
        Task("ekman", "multilabel", 7, label_names=names("ekman")),
    ]


def test_goemotions_three_label_sets_on_the_same_texts():
    tasks = goemotions_tasks()
    combined = FileSource(
        shared("goemotions/combined/dev.tsv"),
        "text",
        {"emotions": "emotions", "group": "sentiment_group", "ekman": "ekman"},
        max_rows=300,
    ).read(tasks)
    # The official file gives ids ("4,27") for the same rows in the same order.
    original = FileSource(
        shared("goemotions/original/dev.tsv"),
        "text",
        {"emotions": "ids"},
        header=False,
        column_names=["text", "ids", "comment_id"],
        max_rows=300,
    ).read(tasks[:1])
    np.testing.assert_array_equal(combined.text, original.text)
    np.testing.assert_array_equal(
        combined.labels["emotions"], original.labels["emotions"]
    )
    approval_neutral = combined.labels["emotions"][1]  # "approval,neutral"
    assert np.flatnonzero(approval_neutral).tolist() == [4, 27]
    for name in ("emotions", "group", "ekman"):
        assert combined.masks[name].all()
        assert (combined.labels[name].sum(axis=1) >= 1).all()


def test_rte_test_split_is_unlabelled_so_evaluation_refuses_it():
    task = Task("rte", "binary", label_names=("entailment", "not_entailment"))
    path = shared("rte/test.tsv")
    source = FileSource(
        path, "sentence1", {"rte": "label"}, text_pair="sentence2", max_rows=50
    )
    assert source.read([task]).masks["rte"].sum() == 0
    with pytest.raises(DataValidationError, match="empty") as error:
        eval_datasets([task], source)
    assert "'rte'" in str(error.value) and str(path) in str(error.value)


def test_ag_news_labels_without_label_map_are_out_of_range():
    path = shared("ag_news/train_sample_10k.tsv")
    source = FileSource(path, "description", {"topic": "label"}, max_rows=50)
    with pytest.raises(DataValidationError) as error:
        source.read([Task("topic", "multiclass", 4)])
    message = str(error.value)
    for part in ("'topic'", str(path), "line ", "'label'", "'4'", "out of range"):
        assert part in message


# ---------------------------------------------------------------- tfds


def mock_tfds(**kwargs):
    return tfds.testing.mock_data(
        num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE, **kwargs
    )


@pytest.mark.parametrize(
    "name, text, text_pair, task",
    [
        ("glue/sst2", "sentence", None, Task("sentiment", "binary")),
        ("glue/cola", "sentence", None, Task("acceptable", "binary")),
        ("glue/rte", "sentence1", "sentence2", Task("rte", "binary")),
        ("ag_news_subset", "description", None, Task("topic", "multiclass", 4)),
    ],
)
def test_tfds_class_label_datasets(name, text, text_pair, task):
    with mock_tfds():
        source = TfdsSource(name, "train", text, {task.name: "label"}, text_pair)
        assert source.name == f"{name}:train"
        ds = joint_dataset([task], source, shuffle=False)
    rows = examples(ds)
    assert len(rows) == 5
    assert ("text_pair" in rows[0][0]) == (text_pair is not None)
    assert all(masks[task.name] == 1.0 for _, _, masks in rows)


def test_tfds_goemotions_booleans_become_multi_hot():
    task = Task("emotions", "multilabel", 28, label_names=GOEMOTIONS_LABELS)
    with mock_tfds():
        source = TfdsSource(
            "goemotions", "train", "comment_text", {"emotions": GOEMOTIONS_LABELS}
        )
        table = source.read([task])
    assert source.tasks["emotions"] == tuple(GOEMOTIONS_LABELS)  # a list stays a tuple
    assert table.labels["emotions"].shape == (5, 28)
    assert set(np.unique(table.labels["emotions"])) <= {0.0, 1.0}


def test_tfds_glue_test_label_minus_one_is_masked():
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "sentence": ["a test sentence", "another one", "a labelled one"],
                "label": np.array([-1, -1, 1], "int64"),
                "idx": np.arange(3, dtype="int32"),
            }
        )

    with mock_tfds(as_dataset_fn=as_dataset):
        source = TfdsSource("glue/sst2", "test", "sentence", {"sentiment": "label"})
        table = source.read([SENTIMENT])
    assert table.masks["sentiment"].tolist() == [0.0, 0.0, 1.0]


def test_tfds_unknown_feature_is_named():
    with mock_tfds():
        source = TfdsSource("glue/sst2", "train", "sentense", {"sentiment": "label"})
        with pytest.raises(DataValidationError, match="did you mean 'sentence'"):
            source.read([SENTIMENT])


# ---------------------------------------------------------------- joint mode


def test_joint_mode_masks_missing_labels_and_uncarried_tasks(tmp_path):
    tasks, train, _ = bundled_sample()
    extra = Task("extra", "binary")
    other = FileSource(
        write_tsv(tmp_path / "extra.tsv", ["text", "y"], [["one", "1"], ["two", "0"]]),
        "text",
        {"extra": "y"},
    )
    rows = examples(joint_dataset([*tasks, extra], [train, other], shuffle=False))
    assert len(rows) == 2000 + 2  # every sample row carries one of its five labels at least
    sample_rows, extra_rows = rows[:-2], rows[-2:]
    assert all(masks["extra"] == 0 for _, _, masks in sample_rows)
    assert all(
        masks["topic"] == 0 and masks["extra"] == 1 for _, _, masks in extra_rows
    )
    for task in tasks:  # about 15% of each task's labels are missing, 90% of rating's (small)
        missing = sum(masks[task.name] == 0 for _, _, masks in sample_rows) / len(sample_rows)
        assert (0.85 < missing < 0.95) if task.name == "rating" else (0.10 < missing < 0.20)


def test_joint_dataset_reshuffles_every_epoch_deterministically():
    tasks, train, _ = bundled_sample()
    ds = joint_dataset(tasks, train, seed=3)
    first = [f["text"] for f, _, _ in examples(ds)]
    second = [f["text"] for f, _, _ in examples(ds)]
    again = [f["text"] for f, _, _ in examples(joint_dataset(tasks, train, seed=3))]
    assert first != second and sorted(first) == sorted(second)
    assert first == again


def test_jsonl_lists_nulls_and_absent_keys(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"text": "a b", "tags": [0, 2], "score": 1.5}\n'
        '{"text": "c", "tags": null}\n'
        "\n"
        '{"text": "d", "tags": "1,2", "score": 3}\n'
    )
    tasks = [Task("tags", "multilabel", 3), Task("score", "regression")]
    table = FileSource(path, "text", {"tags": "tags", "score": "score"}).read(tasks)
    assert table.labels["tags"].tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 1]]
    assert table.masks["tags"].tolist() == [1, 0, 1]
    assert table.masks["score"].tolist() == [1, 0, 1]


def test_tagging_column_gives_one_tag_per_word(tmp_path):
    path = write_tsv(
        tmp_path / "ner.tsv",
        ["text", "tags"],
        [["John lives here", "1 0 0"], ["Hi", ""]],
    )
    task = Task("ner", "tagging", 2)
    table = FileSource(path, "text", {"ner": "tags"}).read([task])
    rows = examples(table.to_dataset())
    assert rows[0][1]["ner"].tolist() == [1, 0, 0]
    assert rows[1][1]["ner"].tolist() == [0] and rows[1][2]["ner"] == 0
    bad = write_tsv(
        tmp_path / "bad.tsv", ["text", "tags"], [["John lives here", "1 0"]]
    )
    with pytest.raises(DataValidationError, match="2 tags for 3 words"):
        FileSource(bad, "text", {"ner": "tags"}).read([task])


# ---------------------------------------------------------------- mixing


@pytest.fixture
def three_sources(tmp_path):
    """Three single-task sources of 30, 5 and 12 rows, every row labelled."""
    tasks = [Task("a", "binary"), Task("b", "multiclass", 3), Task("c", "regression")]
    sizes = {"a": 30, "b": 5, "c": 12}
    values = {"a": "1", "b": "2", "c": "0.5"}
    sources = []
    for name, size in sizes.items():
        rows = [[f"{name} text {i}", values[name]] for i in range(size)]
        path = write_tsv(tmp_path / f"{name}.tsv", ["text", "y"], rows)
        sources.append(FileSource(path, "text", {name: "y"}, name=name))
    return tasks, sources, sizes


def per_task_counts(ds, tasks):
    counts = collections.Counter()
    for _, _, masks in examples(ds):
        assert sum(masks[t.name] for t in tasks) == 1  # one source, one task
        counts.update(t.name for t in tasks if masks[t.name] == 1)
    return dict(counts)


@pytest.mark.parametrize(
    "sampler", [Proportional(), Temperature(2.0), Uniform(), Annealed()]
)
def test_each_epoch_holds_exactly_the_counts_the_sampler_defines(
    three_sources, sampler
):
    tasks, sources, sizes = three_sources
    mix = Mixture(tasks, sources, sampler=sampler, num_epochs=3, seed=1)
    total = sum(sizes.values())
    assert mix.epoch_size == total
    for epoch in range(3):
        p = sampler.probabilities(list(sizes.values()), epoch, 3)
        expected = dict(zip(sizes, largest_remainder(total, p).tolist()))
        assert mix.counts(epoch) == expected == mix.task_counts(epoch)
        assert sum(expected.values()) == total
        for name, count in expected.items():  # floor or ceil of N * p_i
            exact = total * p[list(sizes).index(name)]
            assert np.floor(exact) <= count <= np.ceil(exact)
        assert per_task_counts(mix.epoch_dataset(epoch), tasks) == expected
    whole = per_task_counts(mix.dataset(), tasks)
    assert whole == {t: sum(mix.counts(e)[t] for e in range(3)) for t in sizes}


def test_sampler_probabilities():
    sizes = [100, 25]
    np.testing.assert_allclose(Proportional().probabilities(sizes, 0, 1), [0.8, 0.2])
    np.testing.assert_allclose(
        Temperature(2.0).probabilities(sizes, 0, 1), [2 / 3, 1 / 3]
    )
    np.testing.assert_allclose(Uniform().probabilities(sizes, 0, 1), [0.5, 0.5])
    annealed = Annealed()
    np.testing.assert_allclose(annealed.probabilities(sizes, 0, 5), [0.8, 0.2])
    last = np.array([100, 25], float) ** 0.2  # alpha = 1 - 0.8 in the last epoch
    np.testing.assert_allclose(annealed.probabilities(sizes, 4, 5), last / last.sum())


def test_small_sources_repeat_and_large_ones_continue_across_epochs(three_sources):
    tasks, sources, _ = three_sources
    mix = Mixture(tasks, sources, sampler=Uniform(), num_epochs=2, seed=0)
    assert mix.counts(0) == {"a": 16, "b": 16, "c": 15}
    texts = [
        [f["text"].decode() for f, _, _ in examples(mix.epoch_dataset(e))]
        for e in range(2)
    ]
    small = collections.Counter(t for t in texts[0] if t.startswith("b "))
    assert sorted(small.values()) == [3, 3, 3, 3, 4]  # 16 = 3 full passes + 1
    large = [t for epoch in texts for t in epoch if t.startswith("a ")]
    assert len(set(large[:30])) == 30  # epoch 1 continues epoch 0's pass


def test_mixture_is_seeded_and_logs_counts(three_sources, caplog):
    tasks, sources, _ = three_sources
    with caplog.at_level(logging.INFO, logger="mtl_keras.data"):
        first = [
            f["text"] for f, _, _ in examples(Mixture(tasks, sources, seed=5).dataset())
        ]
    again = [
        f["text"] for f, _, _ in examples(Mixture(tasks, sources, seed=5).dataset())
    ]
    other = [
        f["text"] for f, _, _ in examples(Mixture(tasks, sources, seed=6).dataset())
    ]
    assert first == again != other
    assert "Mixture epoch 0: 47 examples" in caplog.text
    assert "'a': 30, 'b': 5, 'c': 12" in caplog.text


def test_mixing_single_texts_with_pairs_fills_empty_pairs(tmp_path):
    single = FileSource(
        write_tsv(tmp_path / "s.tsv", ["t", "y"], [["x", "1"]]), "t", {"s": "y"}
    )
    pair = FileSource(
        write_tsv(tmp_path / "p.tsv", ["t", "u", "y"], [["x", "z", "0"]]),
        "t",
        {"p": "y"},
        text_pair="u",
    )
    tasks = [Task("s", "binary"), Task("p", "binary")]
    rows = examples(Mixture(tasks, [single, pair]).dataset())
    assert sorted(f["text_pair"] for f, _, _ in rows) == [b"", b"z"]


# ---------------------------------------------------------------- evaluation


def test_eval_datasets_give_each_labelled_row_exactly_once():
    tasks, _, dev = bundled_sample()
    with open(dev.path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    datasets = eval_datasets(tasks, dev)
    for task in tasks:
        got = examples(datasets[task.name])
        expected = [r["text"].encode() for r in rows if r[task.name] != ""]
        assert [f["text"] for f, _, _ in got] == expected
        for _, _, masks in got:  # the other tasks are masked
            assert {n: float(m) for n, m in masks.items()} == {
                t.name: float(t.name == task.name) for t in tasks
            }


def test_bundled_sample_files():
    tasks, train, dev = bundled_sample()
    assert [t.kind for t in tasks] == ["multiclass", "binary", "regression", "multilabel", "tagging"]
    sample = REPO / "mtl_keras" / "data" / "bundled" / "sample"  # package data
    assert train.path == sample / "train.tsv"
    assert dev.path == sample / "dev.tsv"
    assert len(train.read(tasks)) == 2000 and len(dev.read(tasks)) == 400
    size = sum(p.stat().st_size for p in sample.iterdir())
    assert size < 300_000
    with pytest.raises(FileNotFoundError, match="make_sample.py"):
        bundled_sample(REPO / "no_such_dir")


def test_make_sample_reproduces_the_committed_files(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "data" / "make_sample.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / name).read_bytes() == (
            REPO / "mtl_keras" / "data" / "bundled" / "sample" / name
        ).read_bytes()


# ---------------------------------------------------------------- validation


def one_row_source(tmp_path, value, task_column="y", name="bad.tsv", text="some text"):
    path = write_tsv(tmp_path / name, ["text", "y"], [["fine", ""], [text, value]])
    return FileSource(path, "text", {task_column: "y"}), path


def assert_names(error, *parts):
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "task, value, problem",
    [
        (Task("y", "multiclass", 3), "3", "out of range"),
        (Task("y", "multiclass", 3), "-1", "out of range"),
        (Task("y", "binary"), "2", "out of range"),
        (Task("y", "multiclass", 3), "1.0", "float in a class column"),
        (
            Task("y", "binary", label_names=("negative", "positive")),
            "positve",
            "did you mean 'positive'?",
        ),
        (
            Task("y", "multilabel", 3, label_names=("a", "b", "c")),
            "a,d",
            "unknown label",
        ),
        (Task("y", "regression"), "nan", "NaN"),
        (Task("y", "regression"), "-inf", "NaN or Inf"),
        (Task("y", "regression"), "high", "must be a number"),
    ],
)
def test_bad_label_names_task_file_line_column_and_value(
    tmp_path, task, value, problem
):
    source, path = one_row_source(tmp_path, value)
    with pytest.raises(DataValidationError) as error:
        validate([task], source)
    assert_names(
        error, "Task 'y'", str(path), "line 3", "column 'y'", repr(value), problem
    )


def test_data_task_the_model_lacks(tmp_path):
    source, path = one_row_source(tmp_path, "1", task_column="sentimnt")
    with pytest.raises(DataValidationError) as error:
        validate([SENTIMENT], source)
    assert_names(error, "'sentimnt'", str(path), "did you mean 'sentiment'")


def test_model_task_that_no_source_provides(tmp_path):
    source, path = one_row_source(tmp_path, "1", task_column="sentiment")
    with pytest.raises(DataValidationError) as error:
        validate([SENTIMENT, Task("sentiments_fine", "multiclass", 5)], source)
    assert_names(
        error,
        "'sentiments_fine'",
        "no train source",
        str(path),
        "did you mean 'sentiment'",
    )


def test_empty_eval_split(tmp_path):
    source, path = one_row_source(tmp_path, "", task_column="sentiment")
    with pytest.raises(DataValidationError) as error:
        eval_datasets([SENTIMENT], source)
    assert_names(error, "'sentiment'", "evaluation split is empty", str(path))


def test_missing_column_is_named(tmp_path):
    path = write_tsv(tmp_path / "d.tsv", ["text", "label"], [["x", "1"]])
    with pytest.raises(DataValidationError) as error:
        FileSource(path, "text", {"sentiment": "lable"}).read([SENTIMENT])
    assert_names(error, "'lable'", str(path), "did you mean 'label'")


def test_empty_text_policy(tmp_path, caplog):
    source, path = one_row_source(tmp_path, "1", task_column="sentiment", text="  ")
    with caplog.at_level(logging.WARNING, logger="mtl_keras.data"):
        table = source.read([SENTIMENT], empty_text="keep")
    assert (
        table.text[1] == "  "
        and "1 empty text(s) kept (first at line 3)" in caplog.text
    )
    with pytest.raises(DataValidationError) as error:
        source.read([SENTIMENT], empty_text="error")
    assert_names(error, "Empty text", "column 'text'", str(path), "line 3")


def test_invalid_utf8_is_replaced_and_logged(tmp_path, caplog):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"text\ty\ncaf\xe9 ok\t1\n")
    with caplog.at_level(logging.WARNING, logger="mtl_keras.data"):
        table = FileSource(path, "text", {"sentiment": "y"}).read([SENTIMENT])
    assert table.text[0] == "caf\ufffd ok"
    assert "1 row(s) with invalid UTF-8" in caplog.text


def test_label_map_with_integer_keys_matches_file_cells(tmp_path):
    topic = Task("topic", "multiclass", 2, label_names=["World", "Sports"])
    source = FileSource(
        write_tsv(tmp_path / "news.tsv", ["text", "y"], [["a", "1"], ["b", "2"]]),
        "text",
        {"topic": "y"},
        label_map={"topic": {1: "World", 2: "Sports"}},
    )
    rows = examples(joint_dataset([topic], source, shuffle=False))
    assert [int(labels["topic"]) for _, labels, _ in rows] == [0, 1]


# ---------------------------------------------------------------- constructors


def test_file_source_from_a_config_entry_with_task_names():
    tasks, train, _ = bundled_sample()
    entry = {
        "file": str(train.path),
        "text": "text",
        "tasks": ["topic", "sentiment", "rating", "aspects", "mentions"],  # column = task name
        "max_rows": 50,
        "name": "train",
    }
    source = FileSource(**entry)
    assert source.tasks == {t.name: t.name for t in tasks}
    assert (source.name, source.max_rows, source.path) == ("train", 50, train.path)
    table, full = source.read(tasks), train.read(tasks)
    assert len(table) == 50
    np.testing.assert_array_equal(table.text, full.text[:50])
    for task in tasks:  # tags are one array per row
        for got, want in zip(table.labels[task.name], full.labels[task.name][:50]):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            table.masks[task.name], full.masks[task.name][:50]
        )


def test_tfds_source_from_a_config_entry():
    entry = {
        "tfds": "glue/rte",
        "split": "train",
        "text": "sentence1",
        "tasks": {"rte": "label"},
        "text_pair": "sentence2",
        "max_rows": 3,
        "name": "rte",
    }
    source = TfdsSource(**entry)  # nothing is loaded yet
    assert source.get_config() == entry
    with mock_tfds():
        table = source.read([Task("rte", "binary")])
    assert len(table) == 3 and table.source == "rte" and table.text_pair is not None
    with pytest.raises(ValueError, match="max_rows must be an integer >= 1"):
        TfdsSource("glue/rte", "train", tasks=["label"], max_rows=0)


def test_get_config_round_trip(tmp_path):
    path = tmp_path / "news.txt"  # no known suffix: `format` is needed
    path.write_text('1\t"a" b\tfirst pair\n2\tc d\tsecond\n1\te\tthird\n')
    tasks = [Task("topic", "multiclass", 2, label_names=("World", "Sports"))]
    source = FileSource(
        path,
        "body",
        ["topic"],
        text_pair="pair",
        format="tsv",
        quoting="none",
        header=False,
        column_names=("topic", "body", "pair"),
        label_map={"topic": {"1": "World", "2": "Sports"}},
        max_rows=2,
        name="news",
    )
    config = source.get_config()
    assert config == {
        "file": str(path),
        "text": "body",
        "tasks": {"topic": "topic"},
        "text_pair": "pair",
        "format": "tsv",
        "quoting": "none",
        "header": False,
        "column_names": ["topic", "body", "pair"],
        "label_map": {"topic": {"1": "World", "2": "Sports"}},
        "max_rows": 2,
        "name": "news",
    }
    assert yaml.safe_load(yaml.safe_dump(config)) == config  # writable to a config
    again = FileSource(**config)
    assert again.get_config() == config
    first, second = source.read(tasks), again.read(tasks)
    assert first.text.tolist() == second.text.tolist() == ['"a" b', "c d"]
    assert first.text_pair.tolist() == second.text_pair.tolist()
    np.testing.assert_array_equal(first.labels["topic"], second.labels["topic"])
    assert second.labels["topic"].tolist() == [0, 1]
    # Only the required and the non-default arguments are written.
    plain = FileSource(tmp_path / "d.tsv", tasks={"multi": ["a", "b"]})
    assert plain.tasks == {"multi": ("a", "b")}
    assert plain.get_config() == {
        "file": str(tmp_path / "d.tsv"),
        "tasks": {"multi": ["a", "b"]},
    }


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"quoting": "minimal"}, "quoting must be 'csv' or 'none', got 'minimal'."),
        ({"max_rows": 0}, "max_rows must be an integer >= 1, got 0."),
        ({"max_rows": 2.5}, "max_rows must be an integer >= 1, got 2.5."),
        ({"max_rows": True}, "max_rows must be an integer >= 1, got True."),
        ({"format": "xlsx"}, "'jsonl', 'conll' or 'conllu', got 'xlsx'."),
        ({"file": "data.xlsx"}, "cannot tell the format from the suffix"),
        ({"header": "yes"}, "header must be True or False, got 'yes'."),
        ({"column_names": "a,b"}, "column_names must be a list of strings"),
        ({"column_names": ["a", 1]}, "column_names must be a list of strings"),
        ({"tasks": {}}, "`tasks` maps no task to a column."),
        ({"tasks": None}, "`tasks` maps no task to a column."),
        ({"tasks": "y"}, "`tasks` must map task names to columns"),
        ({"tasks": ["y", 1]}, "`tasks` lists names"),
        ({"label_map": {"other": {"1": 0}}}, "label_map for unmapped tasks"),
    ],
)
def test_file_source_constructor_checks_its_arguments(tmp_path, arguments, message):
    arguments = {"file": tmp_path / "absent.tsv", "tasks": ["y"], **arguments}
    with pytest.raises(ValueError, match=re.escape(message)):
        FileSource(**arguments)


def test_file_source_constructor_reads_nothing(tmp_path):
    source = FileSource(tmp_path / "absent.tsv", tasks=["sentiment"])
    assert source.location == str(tmp_path / "absent.tsv")
    with pytest.raises(DataValidationError, match="does not exist"):
        source.read([SENTIMENT])


def test_get_sampler_by_name_with_arguments():
    assert get_sampler("temperature", temperature=4).temperature == 4.0
    assert isinstance(get_sampler("annealed"), Annealed)
    sampler = Uniform()
    assert get_sampler(sampler) is sampler
    with pytest.raises(ValueError, match="did you mean 'uniform'"):
        get_sampler("unifrom")
    with pytest.raises(ValueError, match="need a sampler name"):
        get_sampler(sampler, temperature=2)


# ---------------------------------------------------------------- layout


PUBLIC = (
    "FileSource TfdsSource Mixture Temperature Proportional Uniform Annealed "
    "Examples joint_dataset eval_datasets validate bundled_sample "
    "DataValidationError GOEMOTIONS_LABELS SAMPLERS get_sampler "
    "largest_remainder SAMPLE_TASKS EMPTY_TEXT_POLICIES"
).split()


def test_data_package_reexports_every_public_name():
    from mtl_keras.data import examples as examples_module
    from mtl_keras.data import mixing, sample, sources

    for name in PUBLIC:
        assert name in mtl_keras.data.__all__ and hasattr(mtl_keras.data, name)
    assert mtl_keras.data.FileSource is sources.FileSource
    assert mtl_keras.data.Examples is examples_module.Examples
    assert mtl_keras.data.Mixture is mixing.Mixture
    assert mtl_keras.data.bundled_sample is sample.bundled_sample
    assert sources.DataValidationError is DataValidationError


def test_data_modules_are_small_and_leave_kinds_to_kinds_py():
    package = REPO / "mtl_keras" / "data"
    assert not (REPO / "mtl_keras" / "data.py").exists()
    modules = sorted(p.name for p in package.glob("*.py"))
    assert modules == [
        "__init__.py",
        "conll.py",
        "examples.py",
        "mixing.py",
        "sample.py",
        "sources.py",
        "split.py",
        "tfds_source.py",
    ]
    switch = re.compile(r"\bkind\s*(==|!=|\bin\b|\bnot in\b)")
    for name in modules:
        text = (package / name).read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 500, name
        assert not switch.search(text), f"{name} switches on a kind name"
