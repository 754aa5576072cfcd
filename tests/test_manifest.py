"""Verified exports: nothing of a SavedModel runs, and no `.keras` file of a run
directory loads, before its files match the SHA-256 manifest written at export."""

import json
import os
import shutil
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras import MultiTaskModel, SharedEncoder, Task, TextPreprocessor, cli  # noqa: E402
from mtl_keras import export as mtl_export  # noqa: E402
from mtl_keras.manifest import (  # noqa: E402
    MANIFEST_FILE,
    ManifestError,
    verify_manifest,
    write_manifest,
)
from mtl_keras.train import RunError, load_run_model, save_run_model  # noqa: E402

TEXTS = ["good film", "bad film", "a good plot", "a bad plot"]


class _WritesOnLoad(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer writes a file: it runs inside tf.saved_model.load."""

    def __init__(self, target):
        self._target = str(target)
        super().__init__()

    def _create_resource(self):
        return tf.raw_ops.HashTableV2(
            key_dtype=tf.string, value_dtype=tf.int64, shared_name="",
            use_node_name_sharing=True,
        )

    def _initialize(self):
        tf.io.write_file(self._target, "written while loading")
        return tf.no_op()


def _crafted_saved_model(directory, target):
    """A foreign SavedModel that writes `target` when loaded, with a fake
    `metadata` signature (as an attacker would give it)."""
    module = tf.Module()
    module.writer = _WritesOnLoad(target)
    metadata = tf.function(lambda: {"metadata": tf.constant("{}")}, input_signature=[])
    tf.saved_model.save(module, str(directory), signatures={"metadata": metadata})
    return directory


def _stderr(capsys):
    return " ".join(capsys.readouterr().err.split())  # the CLI wraps its messages


def _edit_metadata(keras_file):
    with zipfile.ZipFile(keras_file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["metadata.json"] += b" "
    with zipfile.ZipFile(keras_file, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


@pytest.fixture(scope="module")
def model():
    preprocessor = TextPreprocessor.from_texts(TEXTS, 30, sequence_length=8)
    encoder = SharedEncoder.for_preprocessor(preprocessor, hidden_dim=8, num_layers=1, num_heads=2)
    return MultiTaskModel([Task("liked", "binary")], encoder, preprocessor)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "saved_model"
    mtl_export.export_saved_model(model, path)
    return path


@pytest.fixture
def copy(exported, tmp_path):
    """A fresh copy of the export, to tamper with."""
    return Path(shutil.copytree(exported, tmp_path / "copy"))


def test_export_lists_every_file_but_the_manifest(exported):
    manifest = json.loads((exported / MANIFEST_FILE).read_text())
    on_disk = sorted(
        p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()
    )
    assert manifest["complete"] and MANIFEST_FILE not in manifest["files"]
    assert sorted(manifest["files"]) == [n for n in on_disk if n != MANIFEST_FILE]
    assert {"saved_model.pb", "assets/mtl_keras.json"} <= set(manifest["files"])
    assert any(name.startswith("variables/") for name in manifest["files"])
    assert verify_manifest(exported) == manifest
    predictor = mtl_export.load_for_serving(exported)
    assert set(predictor.predict(["good film"])[0]) == {"liked"}


def test_a_crafted_saved_model_runs_code_on_load_but_mtl_keras_refuses_it(tmp_path, capsys):
    target = tmp_path / "written.txt"
    crafted = _crafted_saved_model(tmp_path / "crafted", target)
    assert not target.exists()
    tf.saved_model.load(str(crafted))  # what plain TensorFlow does: runs its initializer
    assert target.read_text() == "written while loading"
    target.unlink()

    with pytest.raises(ManifestError, match=f"crafted has no {MANIFEST_FILE}.*trust_unverified"):
        mtl_export.load_for_serving(crafted)
    with pytest.raises(ManifestError, match="refusing to load"):
        mtl_export.load_saved_model(crafted)
    assert cli.main(["predict", str(crafted), "a text"]) == 2
    assert f"has no {MANIFEST_FILE}" in _stderr(capsys)
    assert not target.exists()  # nothing of it ran
    # Trusted anyway, it runs; its fake metadata is still refused (no `{}` output).
    with pytest.raises(ValueError, match="not written by mtl_keras"):
        mtl_export.load_for_serving(crafted, trust_unverified=True)
    assert target.exists()


def test_a_tampered_byte_is_refused_naming_the_file(copy):
    data = next((copy / "variables").glob("variables.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match=f"{data.name} changed since it was exported"):
        mtl_export.load_for_serving(copy)


def test_an_extra_or_missing_file_or_manifest_is_refused(copy):
    added = copy / "assets.extra" / "more_warmup_requests"
    added.write_bytes(b"added later")
    with pytest.raises(ManifestError, match="more_warmup_requests is not in"):
        mtl_export.load_for_serving(copy)
    added.unlink()
    (copy / "fingerprint.pb").unlink()
    with pytest.raises(ManifestError, match="fingerprint.pb is listed .* but missing"):
        mtl_export.load_for_serving(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ManifestError, match=f"has no {MANIFEST_FILE}"):
        mtl_export.load_for_serving(copy)


def test_trust_unverified_loads_a_foreign_saved_model(copy, capsys):
    (copy / MANIFEST_FILE).unlink()  # as if written by other code
    (copy / "notes.txt").write_text("not in any manifest")
    predictor = mtl_export.load_for_serving(copy, trust_unverified=True)
    assert set(predictor.predict(["good film"])[0]) == {"liked"}
    assert cli.main(["predict", str(copy), "good film"]) == 2
    assert cli.main(["predict", str(copy), "good film", "--trust-unverified"]) == 0
    assert '"liked"' in capsys.readouterr().out


def test_a_manifest_path_outside_the_directory_is_refused(copy):
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["complete"] = False
    manifest["files"] = {"../outside": "0" * 64}
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="a path outside its directory"):
        verify_manifest(copy)


def test_a_symbolic_link_is_refused(copy, tmp_path):
    (tmp_path / "elsewhere").write_bytes(b"x")
    (copy / "assets" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ManifestError, match="link is a symbolic link"):
        mtl_export.load_for_serving(copy)


def test_run_directory_model_is_verified(model, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert list(save_run_model(model, run)["files"]) == ["model.keras"]
    (run / "history.csv").write_text("epoch\n0\n")  # other run files may change
    assert load_run_model(run).task_names == ["liked"]
    keras_file = run / "model.keras"
    _edit_metadata(keras_file)  # still a valid .keras file, other bytes
    with pytest.raises(RunError, match="model.keras changed since it was exported"):
        load_run_model(run)
    with pytest.raises(ManifestError, match="model.keras changed"):
        mtl_export.load_for_serving(keras_file)
    assert cli.main(["predict", str(run), "good film"]) == 2
    assert "model.keras changed" in _stderr(capsys)
    assert load_run_model(run, trust_unverified=True).task_names == ["liked"]
    assert cli.main(["predict", str(run), "good film", "--trust-unverified"]) == 0
    (run / MANIFEST_FILE).unlink()
    with pytest.raises(RunError, match=f"run has no {MANIFEST_FILE}"):
        load_run_model(run)
    # A .keras file alone (no manifest beside it) is Keras's safe_mode's to judge.
    assert mtl_export.load_keras_model(keras_file, compile=False).task_names == ["liked"]


def test_a_keras_file_not_in_the_manifest_beside_it_is_refused(model, tmp_path):
    model.save(tmp_path / "other.keras")
    write_manifest(tmp_path, [])
    with pytest.raises(ManifestError, match="other.keras is not listed"):
        mtl_export.load_keras_model(tmp_path / "other.keras")


def test_evaluate_and_export_take_the_flag():
    parser = cli.build_parser()
    for command in (["evaluate", "run"], ["export", "run", "out"], ["predict", "run"]):
        assert parser.parse_args([*command, "--trust-unverified"]).trust_unverified
        assert not parser.parse_args(command).trust_unverified
