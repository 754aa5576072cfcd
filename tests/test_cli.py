import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_config import write_tiny_config

from mtl_keras import cli, plots
from mtl_keras.config import DEFAULT_CONFIG, load_config
from mtl_keras.diagnostics import read_diagnostics
from mtl_keras.pipeline import read_history

TASKS = {"topic", "sentiment", "rating", "aspects", "mentions"}
RUN_FILES = [
    "model.keras",
    "saved_model/saved_model.pb",
    "vocabulary.txt",
    "config.yaml",
    "history.csv",
    "history.json",
    "metrics.json",
    "README.md",
    "plots/learning_curves.png",
    "plots/topic_confusion.png",
    "plots/sentiment_confusion.png",
    "plots/rating_predictions.png",
    "plots/aspects_confusion.png",
    "plots/mentions_confusion.png",
]


def tiny_config(directory):
    """The bundled sample with a tiny model and one short epoch."""
    return write_tiny_config(directory, epochs=3, batch_size=64, diagnostics_every_steps=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    config = tiny_config(directory)
    out = directory / "run"
    printed = io.StringIO()  # not a terminal: the progress lines a log file gets
    with contextlib.redirect_stdout(printed):
        code = cli.main(
            [
                "train",
                "--config",
                str(config),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--seed",
                "5",
                "--set",
                "training.warmup_fraction=0.2",
            ]
        )
    assert code == 0
    (directory / "train_stdout.txt").write_text(printed.getvalue())
    return out


def test_train_prints_a_first_line_at_once_and_plain_progress_to_a_file(run_dir):
    lines = (run_dir.parent / "train_stdout.txt").read_text().splitlines()
    assert lines[0] == (f"mtl-keras train: config {run_dir.parent / 'tiny.yaml'}, run directory "
                        f"{run_dir}; starting TensorFlow...")
    epoch = [line for line in lines if line.startswith("Epoch 1/1: ")]
    assert len(epoch) == 1 and "val_topic_accuracy: " in epoch[0], lines
    assert not any("\x1b" in line or "\r" in line for line in lines)  # no bar, no colours


def test_wrong_arguments_are_reported_before_tensorflow_loads(tmp_path):
    """The checks that need no TensorFlow answer without importing it."""
    (tmp_path / "broken.yaml").write_text("tasks: [unclosed\n")
    calls = [
        ["train", "--config", str(tmp_path / "nothing.yaml")],
        ["train", "--config", str(tmp_path / "broken.yaml")],
        ["train", "--set", "encoder.hidden_dim"],  # no '='
        ["train", "--set", "data.train.7.max_rows=5"],  # no such source
        ["compare", "--config", str(tmp_path / "nothing.yaml")],
        ["evaluate", str(tmp_path / "no-run")],
        ["evaluate", str(tmp_path)],  # a directory without config.yaml
        ["export", str(tmp_path / "no-run"), str(tmp_path / "out")],
        ["predict", str(tmp_path / "no-run"), "a text"],
        ["predict", str(DEFAULT_CONFIG.parent), "--file", "x"],  # not a model directory
    ]
    script = (
        "import sys; sys.argv[0] = 'mtl-keras'\n"  # as the console script: names load lazily
        "from mtl_keras.cli import main\n"
        f"codes = [main(call) for call in {calls!r}]\n"
        "print(codes, 'tensorflow' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"{[2] * len(calls)} False", ran.stderr
    errors = ran.stderr.split("mtl-keras: error: ")[1:]
    assert len(errors) == len(calls) and not any("Traceback" in e for e in errors)
    assert "nothing.yaml does not exist" in " ".join(errors[0].split())
    assert "is not valid YAML" in " ".join(errors[1].split())


def test_flags_and_set_assignments_are_recorded_in_the_run_config(run_dir):
    recorded = load_config(run_dir / "config.yaml", check_files=False).training
    assert (recorded.epochs, recorded.seed, recorded.warmup_fraction) == (1, 5, 0.2)


def test_version_and_a_bad_assignment(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's version action exits 0
        cli.build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("mtl-keras ")
    assert cli.main(["train", "--set", "training.epoch=1", "--quiet"]) == 2
    assert "Did you mean 'epochs'?" in " ".join(capsys.readouterr().err.split())


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_train_writes_the_run_directory(run_dir):
    for name in RUN_FILES:
        path = run_dir / name
        assert path.exists(), name
    for png in (run_dir / "plots").glob("*.png"):
        assert png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run_dir / "metrics.json").read_text())["tasks"]
    assert set(metrics) == TASKS
    assert metrics["topic"]["kind"] == "multiclass"
    assert {"accuracy", "macro_f1", "loss", "examples"} <= set(metrics["topic"])
    assert {"accuracy", "auc"} <= set(metrics["sentiment"])
    assert {"mae", "mse"} <= set(metrics["rating"])
    assert all(m["examples"] > 300 for m in metrics.values())
    history = read_history(run_dir / "history.csv")
    assert len(history["loss"]) == 1  # --epochs 1 overrides the config's 3
    assert "val_topic_accuracy" in history
    vocabulary = (run_dir / "vocabulary.txt").read_text().splitlines()
    assert vocabulary[0] == "[PAD]" and len(vocabulary) <= 200


def test_train_writes_gradient_diagnostics(run_dir):
    rows = read_diagnostics(run_dir / "diagnostics.csv")
    assert rows["step"] == [1.0, 10.0, 20.0, 30.0]  # 32 steps, every 10 and the first
    for task in TASKS:
        assert all(v > 0 for v in rows[f"{task}_grad_norm"])
        assert rows[f"{task}_weight"] == [1.0] * 4  # static weights
    assert all(-1 <= v <= 1 for v in rows["cosine_topic_sentiment"])
    history = read_history(run_dir / "history.csv")
    assert history["topic_grad_norm"] == pytest.approx([np.mean(rows["topic_grad_norm"])])
    assert (run_dir / "plots" / "diagnostics.png").stat().st_size > 1000


def test_run_config_is_the_resolved_config(run_dir):
    config = load_config(run_dir / "config.yaml")
    assert config.training.epochs == 1
    assert config.precision == "float32"
    assert config.encoder["hidden_dim"] == 16
    assert Path(config.data_root).is_absolute()


def test_plots_have_labelled_axes(run_dir):
    history = read_history(run_dir / "history.csv")
    figure = plots.plot_learning_curves(history, sorted(TASKS))
    assert len(figure.axes) >= 4  # loss, accuracy, macro_f1, auc, mae, mse
    for ax in figure.axes:
        assert ax.get_xlabel() == "epoch"
        assert ax.get_ylabel()
        labels = {line.get_label() for line in ax.get_lines()}
        assert any("(train)" in label for label in labels)
        assert any("(dev)" in label for label in labels)
    loss_axes = figure.axes[0]
    assert {line.get_label() for line in loss_axes.get_lines()} == {
        f"{task} ({split})" for task in TASKS for split in ("train", "dev")
    }
    matrix = plots.plot_confusion_matrix(
        [[5, 1], [0, 4]], ["negative", "positive"], "s"
    )
    ax = matrix.axes[0]
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["negative", "positive"]
    for each in (figure, matrix):
        plots.save_figure(each, run_dir / "check.png")


def test_evaluate_prints_a_table_and_writes_json(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = cli.main(
        [
            "evaluate",
            str(run_dir),
            "--config",
            str(run_dir / "config.yaml"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for task in TASKS:
        assert task in printed
    metrics = json.loads(out.read_text())
    assert set(metrics) == TASKS
    trained = json.loads((run_dir / "metrics.json").read_text())["tasks"]
    assert metrics["topic"]["accuracy"] == pytest.approx(trained["topic"]["accuracy"])
    assert metrics["rating"]["mae"] == pytest.approx(trained["rating"]["mae"], rel=1e-4)


def test_evaluate_split_test_uses_the_configs_test_data_only(run_dir, tmp_path, capsys):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["test"] == []
    code = cli.main(["evaluate", str(run_dir), "--split", "test"])
    assert code == cli.EXIT_USAGE
    assert "has no data.test sources" in " ".join(capsys.readouterr().err.split())
    held_out = dict(config["data"]["dev"][0], max_rows=50)
    config["data"]["test"] = [held_out]
    (tmp_path / "with_test.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "test.json"
    code = cli.main(["evaluate", str(run_dir), "--config", str(tmp_path / "with_test.yaml"),
                     "--split", "test", "--json", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == TASKS
    assert all(0 < m["examples"] <= 50 for m in metrics.values())  # rows with that task's label


def test_evaluate_defaults_to_the_run_config(run_dir, capsys):
    assert cli.main(["evaluate", str(run_dir / "model.keras"), "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert set(json.loads(out[out.index("{") :])) == TASKS


def test_export_and_predict(run_dir, tmp_path, capsys):
    exported = tmp_path / "exported"
    assert cli.main(["export", str(run_dir), str(exported)]) == 0
    assert (exported / "saved_model.pb").is_file()
    capsys.readouterr()
    texts = ["the pizza was superb", "what an awful election"]
    assert cli.main(["predict", str(exported), *texts]) == 0
    rows = json_lines(capsys.readouterr().out)
    assert len(rows) == 2
    for row, text in zip(rows, texts):
        assert set(row) == {"text", *TASKS} and row["text"] == text
        assert row["topic"]["label"] in ("sports", "politics", "tech", "food")
        assert row["sentiment"]["label"] in ("negative", "positive")
        assert isinstance(row["rating"]["value"], float)


def test_the_run_model_is_self_contained(run_dir, tmp_path, capsys):
    """model.keras carries its preprocessor: it predicts raw text on its own,
    and a model saved without one is refused with a clear message."""
    from mtl_keras import MultiTaskModel
    from mtl_keras.export import predict_texts
    from mtl_keras.train import load_run_model

    model = load_run_model(run_dir)
    texts = ["the pizza was superb", "what an awful election"]
    from_keras = predict_texts(str(run_dir / "model.keras"), texts)
    from_saved_model = predict_texts(str(run_dir / "saved_model"), texts)
    for a, b in zip(from_keras, from_saved_model):
        assert a["topic"]["label"] == b["topic"]["label"]
        assert a["rating"]["value"] == pytest.approx(b["rating"]["value"], abs=1e-5)
    assert model.predict_labels(texts) == from_keras
    bare = MultiTaskModel(model.tasks, model.encoder)
    bare.save(tmp_path / "bare.keras")
    assert cli.main(["export", str(tmp_path / "bare.keras"), str(tmp_path / "out")]) == 2
    assert "without its preprocessor" in capsys.readouterr().err


def test_predict_reads_stdin_and_files(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("the soup was good\nthe match was dull\n")
    )
    assert cli.main(["predict", str(run_dir), "-"]) == 0
    assert len(json_lines(capsys.readouterr().out)) == 2
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\nthree\n")
    assert (
        cli.main(["predict", str(run_dir / "model.keras"), "--file", str(texts)]) == 0
    )
    rows = json_lines(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["one", "two", "three"]
    assert all(set(r) == {"text", *TASKS} for r in rows)


def test_bad_config_exits_2_with_a_clear_message(tmp_path, capsys):
    mapping = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mapping["encoder"]["hiden_dim"] = 8
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mapping))
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Unknown key 'hiden_dim'" in err and "hidden_dim" in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_multi_worker_without_a_cluster_exits_2_naming_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "r"
    assert cli.main(["train", "--strategy", "multi_worker", "--out", str(out)]) == 2
    assert "needs the environment variable TF_CONFIG" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief"}}')
    assert cli.main(["train", "--strategy", "multi_worker", "--out", str(out)]) == 2
    assert "the task type 'chief' has no addresses" in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_file_exits_2(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--config",
            str(DEFAULT_CONFIG),
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "sample" / "train.tsv") in err and "topic" in err


def test_bad_data_exits_2(tmp_path, capsys):
    (tmp_path / "sample").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "sample" / name).write_text(
            "text\ttopic\tsentiment\trating\taspects\tmentions\nthe game\tsport\tpositive\t5\tprice\tO B-item\n"
        )
    code = cli.main(
        [
            "train",
            "--config",
            str(DEFAULT_CONFIG),
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'sport'" in err and "topic" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # a failed check leaves no run directory


def test_predict_bad_path_and_usage_errors(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "nothing"), "hello"]) == 2
    assert "No model at" in capsys.readouterr().err
    assert cli.main(["train", "--precision", "fp8"]) == 2
    assert cli.main([]) == 2


def test_console_script_predicts(run_dir):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(
        [sys.executable, "-m", "mtl_keras.cli", "predict", str(run_dir), "-"],
        input="the chef was brilliant\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)  # stdout holds only the JSON lines
    assert len(rows) == 1 and set(rows[0]) == {"text", *TASKS}


# --- Run records (metrics.json's run record, history.json, the model card) and predict --top-k.


def test_metrics_json_records_versions_seed_command_and_config(run_dir):
    import datetime
    import platform
    import shlex
    from importlib import metadata

    report = json.loads((run_dir / "metrics.json").read_text())
    assert set(report) == {"tasks", "run"} and set(report["tasks"]) == TASKS
    run = report["run"]
    for name in ("mtl_keras", "keras", "keras-hub", "tensorflow", "tensorflow-text", "numpy"):
        assert run["versions"][name] == metadata.version(name), name
    assert run["versions"]["python"] == platform.python_version()
    assert run["seed"] == 5  # --seed 5 overrode the config's
    command = shlex.split(run["command"])
    assert command[:2] == ["mtl-keras", "train"] and str(run_dir) in command
    assert command[command.index("--seed") + 1] == "5"
    assert "training.warmup_fraction=0.2" in command
    date = datetime.datetime.fromisoformat(run["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - date) < datetime.timedelta(hours=2)
    assert run["config"] == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (run["epochs"], run["epochs_run"], run["stopped_early"]) == (1, 1, False)
    vocabulary = (run_dir / "vocabulary.txt").read_text().splitlines()
    assert run["vocabulary"] == {"asked": run["config"]["preprocessor"]["vocabulary_size"],
                                 "learned": len(vocabulary)}
    assert run["dev_examples"] == {t: m["examples"] for t, m in report["tasks"].items()}
    assert set(run["train_rows"]) == TASKS and all(n > 0 for n in run["train_rows"].values())
    assert 0 < run["train_seconds"] <= run["wall_seconds"]
    assert run["parameters"] > 0


def test_history_json_is_history_csv(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    assert history == read_history(run_dir / "history.csv")
    assert len(history["loss"]) == 1 and "val_topic_accuracy" in history


def test_the_model_card_names_tasks_labels_sizes_metrics_and_use(run_dir):
    from mtl_keras.train import load_run_model

    card = (run_dir / "README.md").read_text()
    report = json.loads((run_dir / "metrics.json").read_text())
    for task in load_run_model(run_dir).tasks:
        row = next(line for line in card.splitlines() if line.startswith(f"| {task.name} | "))
        assert task.kind in row
        assert all(label in row for label in task.classes), (task.name, row)
        assert str(report["run"]["train_rows"][task.name]) in row
    assert f"{report['tasks']['topic']['accuracy']:.4f}" in card
    assert f"{report['tasks']['rating']['mae']:.4f}" in card
    for needed in ("import mtl_keras", "keras.saving.load_model", f"mtl-keras predict {run_dir}",
                   "import tensorflow_text", "serving_default", "topic_probabilities",
                   f"keras {report['run']['versions']['keras']}", report["run"]["date"]):
        assert needed in card, needed


def test_predict_top_k_keeps_k_classes_and_echoes_the_text(run_dir, capsys):
    texts = ["the pizza was superb", "what an awful election"]
    assert cli.main(["predict", str(run_dir), "--top-k", "1", *texts]) == 0
    rows = json_lines(capsys.readouterr().out)
    assert [row["text"] for row in rows] == texts
    for row in rows:
        assert list(row)[0] == "text"
        for task in ("topic", "sentiment"):  # multiclass, binary: the label alone
            assert list(row[task]["probabilities"]) == [row[task]["label"]]
        assert set(row["rating"]) == {"value"}  # regression: unchanged
        tags = row["mentions"]  # tagging: each tagged word's best tag
        assert len(tags["probabilities"]) == len(tags["words"])
        assert all(p is None or len(p) == 1 for p in tags["probabilities"])
    assert cli.main(["predict", str(run_dir), "--top-k", "0", "hello"]) == cli.EXIT_USAGE
    assert "top_k must be 1 or more, got 0" in capsys.readouterr().err


def test_predict_echoes_both_texts_of_a_pair_model(tmp_path, capsys):
    from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor

    preprocessor = TextPreprocessor(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "rain", "wet"], 8,
                                    pair=True)
    model = MultiTaskModel([Task("entails", "binary")], SharedEncoder(6, 8, hidden_dim=4),
                           preprocessor)
    model.save(tmp_path / "pair.keras")
    assert cli.main(["predict", str(tmp_path / "pair.keras"), "rain\twet"]) == 0
    (row,) = json_lines(capsys.readouterr().out)
    assert list(row)[:2] == ["text", "text_pair"] and (row["text"], row["text_pair"]) == (
        "rain", "wet")
    assert cli.main(["predict", str(tmp_path / "pair.keras"), "rain\twet", "dry"]) == 2
    assert "input line 2 ('dry') has no tab" in " ".join(capsys.readouterr().err.split())
