"""Install as users do: the built wheel carries its configs and the sample,
and the main job runs from it outside the checkout."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and a fresh venv (CI runs them: .ci/run)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (path,) = out.glob("mtl_keras-*.whl")
    return path


def test_the_wheel_holds_the_sample_and_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("train.tsv", "dev.tsv"):
        assert f"mtl_keras/data/bundled/sample/{name}" in names
    assert "mtl_keras/configs/sample.yaml" in names
    assert "mtl_keras/configs/glue_agnews_minilm.yaml" in names


def test_the_main_job_runs_from_the_installed_wheel(wheel, tmp_path):
    """`mtl-keras train` (the README's first command) from the wheel's files,
    in a directory that is not the checkout."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(site))
    run = tmp_path / "work"
    run.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import mtl_keras.cli as c; print(c.__file__)"],
        cwd=run, env=env, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site))  # not the checkout
    result = subprocess.run(
        [sys.executable, "-m", "mtl_keras.cli", "train", "--epochs", "1", "--out", "run", "--quiet",
         "--set", "data.train.0.max_rows=600"],  # the sample, fewer rows: a quicker test
        cwd=run, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "run" / "metrics.json").is_file()
    assert (run / "run" / "saved_model" / "saved_model.pb").is_file()
