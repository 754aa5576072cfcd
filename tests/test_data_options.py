"""Vocabulary control, the seeded stratified dev split, `evaluate --data`, progress lines."""

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import yaml
from tiny_config import write_tiny_config

from mtl_keras import cli
from mtl_keras.config import ConfigError, load_config, parse_config
from mtl_keras.data import BUNDLED_DIR
from mtl_keras.pipeline import build_model, fit_run, make_preprocessor, read_data
from mtl_keras.preprocess import RESERVED_TOKENS, read_vocabulary
from mtl_keras.train import RunError, run_evaluation, save_run_model

SAMPLE_DEV = BUNDLED_DIR / "sample" / "dev.tsv"
TASKS = [{"name": "topic", "kind": "multiclass", "num_classes": 3},
         {"name": "score", "kind": "regression"}]


def write_tsv(path, rows, header=("text", "topic", "score")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def topic_rows(n=300, seed=0):
    """Unbalanced classes (1/2, 1/3, 1/6), some rows without a topic."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = "" if i % 10 == 9 else str([0, 0, 0, 1, 1, 2][i % 6])
        rows.append([f"text number {i} word{rng.integers(50)}", topic, f"{rng.random():.3f}"])
    return rows


def split_mapping(directory, split=None, **data):
    write_tsv(directory / "train.tsv", topic_rows())
    entry = {"file": "train.tsv", "text": "text", "tasks": ["topic", "score"]}
    return {
        "tasks": TASKS,
        "data_root": str(directory),
        "data": {"train": [entry], "split": split or {"dev_fraction": 0.2, "seed": 0}, **data},
        "preprocessor": {"vocabulary_size": 100, "sequence_length": 16},
        "encoder": {"hidden_dim": 8, "num_layers": 1, "num_heads": 2},
        "precision": "float32",
    }


def dev_rows(config):
    _, _, record = config.train_and_dev()
    return [entry["dev_rows"] for entry in record["sources"]]


# --------------------------------------------------------------------------
# Vocabulary control.


def test_min_count_is_a_preprocessor_key_and_changes_the_learned_size(capsys):
    texts = [f"the film number{i} was fine{i % 7}" for i in range(200)]  # rare words
    sizes = {}
    for min_count in (10, 1):
        config = load_config(overrides=[f"preprocessor.min_count={min_count}"])
        assert config.preprocessor["min_count"] == min_count
        sizes[min_count] = make_preprocessor(config, texts, verbose=1).vocabulary_size
    assert sizes[1] > sizes[10]
    printed = capsys.readouterr().out
    assert f"Learning the vocabulary from {len(texts)} texts" in printed
    assert f"Vocabulary: {sizes[10]} tokens learned (1000 asked; words seen fewer than 10" in printed
    assert "lower preprocessor.min_count" in printed


def test_a_vocabulary_file_is_used_exactly(tmp_path):
    tokens = [*RESERVED_TOKENS, "text", "number", "word", "##s", "1"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    mapping = split_mapping(tmp_path)
    mapping["preprocessor"] = {"vocabulary": "vocab.txt", "sequence_length": 8}  # from data_root
    config = parse_config(mapping)
    preprocessor = make_preprocessor(config, ["ignored text"])
    assert preprocessor.tokenizer.get_vocabulary() == tokens
    ids = preprocessor(["text number words"])["token_ids"].numpy().tolist()
    assert ids == [[2, 5, 6, 7, 8, 3, 0, 0]]  # [CLS] text number word ##s [SEP] [PAD]...
    mapping["preprocessor"]["min_count"] = 2
    with pytest.raises(ConfigError, match="min_count would do nothing"):
        parse_config(mapping)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["[UNK]", "[PAD]", "[CLS]", "[SEP]"], r"line 1: the first token must be '\[PAD\]'"),
        (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "", "b"], "line 6: an empty line"),
        (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "a"], "line 6: 'a' is already on line 5"),
        (["[PAD]", "[UNK]", "[CLS]", "a b"], "line 4: 'a b' holds whitespace"),
        (["[PAD]", "[UNK]", "a"], r"has no line '\[CLS\]' or '\[SEP\]'"),
    ],
)
def test_bad_vocabulary_files_are_rejected_with_file_and_line(tmp_path, lines, message):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        read_vocabulary(path)
    assert str(path) in str(error.value)
    mapping = split_mapping(tmp_path)
    mapping["preprocessor"] = {"vocabulary": str(path)}
    with pytest.raises(ConfigError, match=message):  # when the config is loaded
        parse_config(mapping)


# --------------------------------------------------------------------------
# The dev split.


def test_the_dev_split_is_stratified_seeded_and_disjoint(tmp_path):
    config = parse_config(split_mapping(tmp_path))
    train, dev, record = config.train_and_dev()
    (entry,) = record["sources"]
    assert entry["stratify"] == "topic" and entry["dev"] == 60 and entry["train"] == 240
    rows = np.asarray(entry["dev_rows"])
    assert not set(rows) & set(train[0].rows)
    assert sorted([*rows, *train[0].rows]) == list(range(300))
    topics = np.asarray([row[1] or "-1" for row in topic_rows()])
    for label in ("0", "1", "2", "-1"):  # missing labels are a stratum too
        exact = 0.2 * (topics == label).sum()
        assert abs((topics[rows] == label).sum() - exact) <= 1, label
    assert dev_rows(parse_config(split_mapping(tmp_path))) == [entry["dev_rows"]]
    other = parse_config(split_mapping(tmp_path, split={"dev_fraction": 0.2, "seed": 1}))
    assert dev_rows(other) != [entry["dev_rows"]]
    # The training and dev parts are what the pipeline reads.
    data = read_data(config)
    assert data.examples_per_epoch == 240 and len(data.dev_sources[0].read(config.tasks)) == 60
    # A config of fewer tasks keeps the whole config's dev rows.
    assert dev_rows(config.with_tasks(["score"])) == [entry["dev_rows"]]


def test_the_split_is_rejected_with_dev_sources_and_checked(tmp_path):
    dev = [{"file": "train.tsv", "tasks": ["topic", "score"]}]
    with pytest.raises(ConfigError, match="either dev sources or split"):
        parse_config(split_mapping(tmp_path, dev=dev))
    with pytest.raises(ConfigError, match=r"dev_fraction must be a number in \(0, 1\), got 1"):
        parse_config(split_mapping(tmp_path, split={"dev_fraction": 1}))
    with pytest.raises(ConfigError, match="Unknown key 'fraction' in data.split"):
        parse_config(split_mapping(tmp_path, split={"fraction": 0.1}))
    mapping = split_mapping(tmp_path)
    del mapping["data"]["split"]
    with pytest.raises(ConfigError, match=r"needs dev sources \(data.dev\) or split"):
        parse_config(mapping)


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """The sample, tiny, 300 training rows, no dev file: a 20 % dev split; trained once."""
    directory = tmp_path_factory.mktemp("split")
    path = write_tiny_config(directory, epochs=1, batch_size=64)
    mapping = yaml.safe_load(path.read_text())
    del mapping["data"]["dev"]
    mapping["data"]["train"][0]["max_rows"] = 300
    mapping["data"]["split"] = {"dev_fraction": 0.2, "seed": 4}
    path.write_text(yaml.safe_dump(mapping))
    out, printed = directory / "run", io.StringIO()
    with contextlib.redirect_stdout(printed):  # the run directory without export and plots
        result = fit_run(load_config(path), run_dir=out, verbose=1, with_predictions=False)
    save_run_model(result.model, out)  # model.keras and its manifest
    (out / "config.yaml").write_text(result.config.to_yaml())
    return out, result, printed.getvalue()


def test_a_split_run_records_its_dev_rows_and_says_what_it_read(split_run):
    out, result, printed = split_run
    record = json.loads((out / "dev_split.json").read_text())
    (entry,) = record["sources"]
    assert (record["dev_fraction"], record["seed"]) == (0.2, 4)
    assert (entry["dev"], entry["train"], entry["stratify"]) == (60, 240, "topic")
    assert len(entry["dev_rows"]) == 60
    labelled = 60 - entry["dev_per_class"].get("-1", 0)
    assert result.metrics["topic"]["examples"] == labelled
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["split"] == {
        "dev_fraction": 0.2, "seed": 4}
    lines = printed.splitlines()
    assert any(line.startswith("Read train data sample/train.tsv: 300 rows; labelled: topic ")
               for line in lines)
    assert "Dev split of sample/train.tsv: 60 rows for dev, 240 for training (stratified by " \
           "topic, seed 4)." in lines
    assert "Data checked: 240 training rows in 1 source(s), 240 examples per epoch; 60 dev " \
           "rows." in lines
    assert any(line.startswith("Learning the vocabulary from 240 texts") for line in lines)
    assert any(line.startswith("Vocabulary: ") for line in lines)


def test_evaluate_run_uses_the_recorded_dev_rows(split_run, capsys):
    out, result, _ = split_run
    assert cli.main(["evaluate", str(out), "--json", "-"]) == 0
    text = capsys.readouterr().out
    metrics = json.loads(text[text.index("{"):])
    for task, found in metrics.items():
        assert found["examples"] == result.metrics[task]["examples"]
    assert metrics["topic"]["accuracy"] == pytest.approx(result.metrics["topic"]["accuracy"])
    train = run_evaluation(out, load_config(out / "config.yaml"), split="train")
    for task, count in result.compute["labelled_examples"].items():  # one epoch: each row once
        assert train[task]["examples"] == count
    # Other dev rows than the recorded ones (the data changed): a clear error.
    record = json.loads((out / "dev_split.json").read_text())
    changed = dict(record, sources=[dict(record["sources"][0], dev_rows=[0, 1, 2])])
    (out / "dev_split.json").write_text(json.dumps(changed))
    try:
        with pytest.raises(RunError, match="differ from those recorded in"):
            run_evaluation(out, load_config(out / "config.yaml"))
    finally:
        (out / "dev_split.json").write_text(json.dumps(record))


# --------------------------------------------------------------------------
# evaluate --data FILE.


def test_evaluate_data_counts_the_files_rows_once(split_run, tmp_path, capsys):
    out, _, _ = split_run
    with open(SAMPLE_DEV, encoding="utf-8") as f:
        header, *rows = list(csv.reader(f, delimiter="\t"))
    small = write_tsv(tmp_path / "small.tsv", rows[:7], header)
    assert cli.main(["evaluate", str(out), "--data", str(small), "--json", "-"]) == 0
    text = capsys.readouterr().out
    metrics = json.loads(text[text.index("{"):])
    for task in ("topic", "sentiment", "rating", "mentions"):
        column = header.index(task)
        assert metrics[task]["examples"] == sum(bool(r[column].strip()) for r in rows[:7])


def test_evaluate_data_evaluates_the_tasks_of_the_entry_it_fits(tmp_path):
    write_tsv(tmp_path / "topic.tsv", [["a b", "1"], ["c", "2"]], ("text", "topic"))
    write_tsv(tmp_path / "score.tsv", [["a b", "0.5"]], ("sentence", "score"))
    mapping = split_mapping(tmp_path)
    del mapping["data"]["split"]
    mapping["data"]["dev"] = [{"file": "topic.tsv", "tasks": ["topic"]},
                              {"file": "score.tsv", "text": "sentence", "tasks": ["score"]}]
    mapping["data"]["train"] = mapping["data"]["dev"]
    config = parse_config(mapping)
    run = tmp_path / "run"
    run.mkdir()
    save_run_model(build_model(config, make_preprocessor(config, ["a b c"])), run)
    rows = [["x y", "0"], ["z", ""], ["x", "2"], ["y", "1"]]
    small = write_tsv(tmp_path / "new.csv", rows, ("text", "topic"))  # CSV: from the suffix
    metrics = run_evaluation(run, config, data_file=small)
    assert list(metrics) == ["topic"] and metrics["topic"]["examples"] == 3


def test_evaluate_data_rejects_a_file_that_fits_no_entry(split_run, tmp_path, capsys):
    out, _, _ = split_run
    bad = write_tsv(tmp_path / "bad.tsv", [["a text", "1"]], ("sentence", "label"))
    assert cli.main(["evaluate", str(out), "--data", str(bad)]) == cli.EXIT_USAGE
    error = " ".join(capsys.readouterr().err.split())
    assert "fits no source entry" in error and "Column 'text' is not in" in error
