"""Before training: truncated texts and dev texts copied from train, counted and reported."""

import json

import pytest
import yaml
from tiny_config import write_tiny_config

from mtl_keras import cli
from mtl_keras.config import load_config


def sample_copy(tmp_path, copied):
    """The bundled sample with `copied` dev rows replaced by training rows."""
    config = load_config()
    train = config.path_of(config.data.train[0]).read_text().splitlines()
    dev = config.path_of(config.data.dev[0]).read_text().splitlines()
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "train.tsv").write_text("\n".join(train[:601]) + "\n")
    copies = [row.split("\t", 1)[0].upper() + "\t" + row.split("\t", 1)[1]
              for row in train[1:1 + copied]]  # the text in capitals: the same normalized
    dev = dev[:1] + copies + dev[1 + copied:61]
    (tmp_path / "sample" / "dev.tsv").write_text("\n".join(dev) + "\n")


def test_dev_texts_copied_from_train_are_counted_warned_and_refused_on_request(
        tmp_path, capsys, caplog):
    sample_copy(tmp_path, copied=30)  # 30 of 60 dev rows are training rows (upper-cased)
    config = write_tiny_config(tmp_path, epochs=1, batch_size=64)
    out = tmp_path / "run"
    arguments = ["train", "--config", str(config), "--data-root", str(tmp_path), "--out",
                 str(out), "--set", "preprocessor.sequence_length=12"]
    assert cli.main(arguments + ["--set", "data.overlap=error"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "dev texts of task 'topic'" in err and "also occur in the training data" in err
    assert "data.max_overlap=0.01" in err and not out.exists()

    assert cli.main(arguments) == 0  # the default: a warning, and the counts
    assert "also occur in the training data" in caplog.text
    printed = capsys.readouterr().out
    report = json.loads((out / "data_report.json").read_text())
    dev = next(iter(report["dev"].values()))
    labelled = dev["topic"]["labelled"]
    assert 0 < dev["topic"]["in_train"] <= 30 and labelled <= 60
    train = next(iter(report["train"].values()))
    assert train["topic"]["truncated"] > 0  # sequence_length 12 cuts the longer templates
    assert f"also in train: topic {dev['topic']['in_train']} of {labelled} (" in printed
    assert "truncated at 12 word pieces: topic " in printed


def test_overlap_settings_are_checked(tmp_path):
    mapping = yaml.safe_load(write_tiny_config(tmp_path).read_text())
    mapping["data"]["overlap"] = "panic"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(mapping))
    with pytest.raises(ValueError, match="overlap must be one of"):
        load_config(tmp_path / "bad.yaml")
