"""Resume equals the uninterrupted run, bit for bit, after SIGKILL or SIGTERM.

Real processes are killed from outside at a random step, once a checkpoint at
or after that step exists (`tests/resume_driver.py` runs `fit_run` with a run
directory, as `mtl-keras train` does; the SIGTERM test runs the CLI itself).
The resume then runs in this process, like a notebook kernel that built other
models before, against an uninterrupted run computed here too.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from tiny_config import write_tiny_config

from mtl_keras import checkpoints
from mtl_keras.checkpoints import CheckpointError
from mtl_keras.config import load_config
from mtl_keras.pipeline import fit_run

pytestmark = pytest.mark.slow  # trains, kills and resumes runs: minutes (CI runs them: .ci/run)

DRIVER = Path(__file__).with_name("resume_driver.py")
ROOT = Path(__file__).resolve().parents[1]
# 600 training rows (each with a label), 2 epochs of 10 batches, a checkpoint every 3 steps.
TRAINING = dict(epochs=2, batch_size=64, checkpoint_every_steps=3, checkpoint_every_seconds=None)
ROWS, EXAMPLES, STEPS = 600, 600, 20


def _interrupt(config, run_dir, signum, *flags, cli=False):
    """Runs training in a new process; sends `signum` once a checkpoint at a random step >= 9 exists.

    (At step 9 or later, three checkpoints exist: 3, 6, 9, ...)
    """
    if cli:
        command = [sys.executable, "-m", "mtl_keras.cli", "train", "--config", str(config),
                   "--out", str(run_dir), "--quiet"]
    else:
        command = [sys.executable, str(DRIVER), str(config), str(run_dir), *flags]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{DRIVER.parent}", TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    at = random.randint(9, STEPS - 6)
    directory = Path(run_dir) / "checkpoints"
    while process.poll() is None:
        steps = [int(p.name[5:-6]) for p in directory.glob("ckpt-*.index")] if directory.exists() else []
        if steps and max(steps) >= at:
            process.send_signal(signum)
            break
        time.sleep(0.01)
    output = process.communicate(timeout=600)[0]
    return process.returncode, output, at


def _weights(model):
    return [v.numpy() for v in model.weights]


def _differing(a, b):
    assert len(a) == len(b)
    return sum(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("configs")
    joint = write_tiny_config(directory, **TRAINING)
    mapping = yaml.safe_load(joint.read_text())
    mapping["data"]["train"][0]["max_rows"] = ROWS
    mapping["data"]["dev"][0]["max_rows"] = 64
    joint.write_text(yaml.safe_dump(mapping))
    mixed = directory / "temperature.yaml"
    mapping["sampler"] = {"name": "temperature", "temperature": 2.0}
    # A stateful weighting method: DWA's loss history must resume too (its
    # periods of 4 steps end mid-epoch; from step 9 its weights are not 1).
    mapping["weighting"] = {"method": "dwa", "period_steps": 4}
    mixed.write_text(yaml.safe_dump(mapping))
    return {"joint": joint, "temperature": mixed}


@pytest.fixture(scope="module")
def uninterrupted(configs, tmp_path_factory):
    """`get(sampler, loop)`: the uninterrupted run's (weights, counts), computed once."""
    found = {}

    def get(sampler, loop=False):
        if (sampler, loop) not in found:
            run_dir = tmp_path_factory.mktemp("full")
            result = fit_run(load_config(configs[sampler]), run_dir=run_dir, explicit_loop=loop,
                             verbose=0, with_predictions=False)
            found[sampler, loop] = (_weights(result.model), _counts(result))
        return found[sampler, loop]

    return get


def _counts(result):
    model = result.model
    return {
        "iterations": int(model.optimizer.iterations.numpy()),
        "steps": int(model.train_step_counter.numpy()),
        "examples": result.compute["examples"],
        "batches": result.compute["batches"],
    }


@pytest.fixture(scope="module")
def killed(configs, tmp_path_factory):
    """`get(sampler, loop)`: a fresh copy of a run directory killed (SIGKILL) mid-run."""
    found = {}

    def get(sampler="joint", loop=False):
        if (sampler, loop) not in found:
            run_dir = tmp_path_factory.mktemp("killed")
            code, output, at = _interrupt(configs[sampler], run_dir, signal.SIGKILL,
                                          *(["--loop"] if loop else []))
            assert code == -signal.SIGKILL, f"not killed (step {at}): {output}"
            found[sampler, loop] = run_dir
        copy = tmp_path_factory.mktemp("resumed") / "run"
        shutil.copytree(found[sampler, loop], copy)
        return copy

    return get


@pytest.mark.parametrize(
    "sampler, loop",
    [("joint", False), pytest.param("temperature", True, marks=pytest.mark.slow)],
    ids=["fit-joint", "loop-temperature"],
)
def test_sigkill_then_resume_equals_the_uninterrupted_run(configs, uninterrupted, killed, capsys,
                                                          sampler, loop):
    run_dir = killed(sampler, loop)
    result = fit_run(load_config(configs[sampler]), run_dir=run_dir, explicit_loop=loop,
                     verbose=0, with_predictions=False)
    assert "Resuming" in capsys.readouterr().out
    weights, counts = uninterrupted(sampler, loop)
    assert _differing(_weights(result.model), weights) == 0
    assert _counts(result) == counts
    assert counts["iterations"] == counts["steps"] == STEPS
    assert counts["examples"] == 2 * EXAMPLES  # each example once per epoch


def test_a_resume_that_forgets_the_data_position_is_detected(configs, uninterrupted, killed, monkeypatch):
    restore = checkpoints.TrainingCheckpoint.restore
    monkeypatch.setattr(checkpoints.TrainingCheckpoint, "restore", lambda self: (restore(self), (0, 0))[1])
    result = fit_run(load_config(configs["joint"]), run_dir=killed(), verbose=0, with_predictions=False)
    assert _differing(_weights(result.model), uninterrupted("joint")[0]) > 0


@pytest.mark.slow  # a training process stopped and restarted
def test_sigterm_saves_exits_143_and_the_rerun_resumes_to_the_same_weights(
    configs, uninterrupted, tmp_path, capsys
):
    code, output, at = _interrupt(configs["joint"], tmp_path, signal.SIGTERM, cli=True)
    assert code == 143, output
    assert "SIGTERM received: saved a checkpoint at step" in output
    assert not (tmp_path / "model.keras").exists()
    result = fit_run(load_config(configs["joint"]), run_dir=tmp_path, verbose=0,
                     with_predictions=False)
    assert "Resuming" in capsys.readouterr().out
    assert _differing(_weights(result.model), uninterrupted("joint")[0]) == 0


def test_damaged_newest_checkpoints_fall_back_to_an_older_one(configs, uninterrupted, killed, capsys):
    run_dir = killed()
    directory = run_dir / "checkpoints"
    # The checkpoints the manager recorded (a kill can land between writing
    # one and recording it; an unrecorded one is not a committed checkpoint).
    state = tf.train.get_checkpoint_state(str(directory))
    steps = sorted((int(Path(p).name[5:]) for p in state.all_model_checkpoint_paths), reverse=True)
    assert len(steps) >= 3  # checkpoints_to_keep (4 if killed between recording one and deleting the oldest)
    for path in directory.glob("ckpt-*.*"):
        if int(path.name[5:].split(".")[0]) >= steps[0]:
            path.unlink()  # the newest: deleted
    for path in (run_dir / "checkpoints").glob(f"ckpt-{steps[1]}.data-*"):
        path.write_bytes(path.read_bytes()[:100])  # the one before: truncated
    result = fit_run(load_config(configs["joint"]), run_dir=run_dir, verbose=0, with_predictions=False)
    output = " ".join(capsys.readouterr().out.split())
    assert f"Could not read checkpoint ckpt-{steps[0]} (its files are missing), ckpt-{steps[1]} (" in output
    assert f"resumed from the previous one, ckpt-{steps[2]}, instead" in output
    assert f"Resuming {run_dir} at step {steps[2]} " in output
    assert _differing(_weights(result.model), uninterrupted("joint")[0]) == 0


@pytest.mark.slow
def test_resuming_with_a_renamed_task_or_a_changed_setting_fails_before_any_step(
    configs, killed, tmp_path
):
    run_dir = killed()
    mapping = yaml.safe_load(configs["joint"].read_text())
    mapping["tasks"][0]["name"] = "subject"
    for split in ("train", "dev"):
        for entry in mapping["data"][split]:
            entry["tasks"] = {"subject": "topic", "sentiment": "sentiment", "rating": "rating",
                              "aspects": "aspects", "mentions": "mentions"}
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump(mapping))
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="task 'topic' is missing, task 'subject' is new"):
        fit_run(load_config(renamed), run_dir=run_dir, verbose=0)
    config = load_config(configs["joint"])
    with pytest.raises(CheckpointError, match=r"learning_rate: 0.003 -> 0.01.*--allow-changed-settings"):
        fit_run(config.replace(learning_rate=0.01), run_dir=run_dir, verbose=0)
    with pytest.raises(CheckpointError, match=r"token_embedding/embeddings: shape \[\d+, 16\] saved"):
        fit_run(config.replace(), run_dir=run_dir, verbose=0, preprocessor=_bigger_vocabulary(config))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == saved  # nothing ran
    # What the message offers: --restart (restart=True) starts over with the new settings.
    result = fit_run(config.replace(learning_rate=0.01), run_dir=run_dir, restart=True, verbose=0,
                     with_predictions=False)
    assert int(result.model.optimizer.iterations.numpy()) == STEPS


def _bigger_vocabulary(config):
    from mtl_keras import TextPreprocessor

    words = [f"w{i}" for i in range(400)]
    return TextPreprocessor.from_texts(words, vocabulary_size=300, sequence_length=24, align_words=True)
