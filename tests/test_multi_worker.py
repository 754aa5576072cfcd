"""MultiWorkerMirroredStrategy across processes: 2 local workers on loopback ports
train like one process on the same global batches, read disjoint halves of every
batch, leave the run directory to the chief, and a lost worker fails the other
loudly; both restarted resume from the chief's checkpoint.

The workers are separate Python processes given `TF_CONFIG`, as users start
them (README, "Several machines"). Tolerances: losses 1e-5, weights 1e-5 (the
attention key bias excepted: its gradient is exactly zero, and Adam turns
round-off into +-lr steps).
"""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtl_keras.config import DEFAULT_CONFIG, load_config
from mtl_keras.pipeline import read_data

pytestmark = pytest.mark.slow  # worker processes: minutes on 2 cores (CI runs them: .ci/run)

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("multi_worker_driver.py")
TIMEOUT = 240  # seconds a worker process may take
EPOCHS = 2  # 16 steps each


def _config(directory, **training):
    """The sample with two tasks and a tiny dropout-free model (dropout masks are
    drawn per replica, so with dropout N replicas match one device in law only)."""
    mapping = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mapping["tasks"] = [t for t in mapping["tasks"] if t["name"] in ("topic", "sentiment")]
    for split in ("train", "dev"):
        for entry in mapping["data"][split]:
            entry["tasks"] = ["topic", "sentiment"]
    mapping["data_root"] = str((ROOT / "mtl_keras" / "data" / "bundled").resolve())
    mapping["preprocessor"] = {"vocabulary_size": 200, "sequence_length": 24}
    mapping["encoder"] = {"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0}
    mapping["training"].update(batch_size=128, **training)
    path = Path(directory) / "two_tasks.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _environment(tmp_path, index=None, ports=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path / "tmp"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if index is not None:
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env


def _start(command, env, log):
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _finish(process, log):
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{log.name} did not finish in {TIMEOUT} s:\n{log.read_text()[-3000:]}")
    return process.returncode


def _weights(path):
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two workers and one process on the same config, run side by side."""
    tmp_path = tmp_path_factory.mktemp("multi_worker")
    config = _config(tmp_path, epochs=EPOCHS)
    ports = _free_ports(2)
    runs = {}
    for name, index in (("worker0", 0), ("worker1", 1), ("single", None)):
        command = [sys.executable, str(DRIVER), str(config), str(tmp_path / name),
                   "--run-dir", str(tmp_path / ("run" if index is not None else "single_run"))]
        if index is not None:
            command += ["--strategy", "multi_worker", "--timeout", "60"]
        log = tmp_path / f"{name}.log"
        runs[name] = (_start(command, _environment(tmp_path, index, ports), log), log)
    for process, log in runs.values():
        assert _finish(process, log) == 0, log.read_text()[-3000:]
    return tmp_path


def _read(directory):
    return (json.loads((directory / "history.json").read_text()),
            json.loads((directory / "seen.json").read_text()),
            _weights(directory / "weights.npz"),
            json.loads((directory / "metrics.json").read_text()))


def test_two_workers_train_like_one_process(reference):
    history, _, weights, metrics = _read(reference / "single")
    for worker in ("worker0", "worker1"):
        history_w, _, weights_w, metrics_w = _read(reference / worker)
        assert set(history_w) == set(history)
        for key, values in history.items():  # every per-task loss and metric, train and dev
            np.testing.assert_allclose(history_w[key], values, atol=1e-5, err_msg=key)
        for name, value in weights.items():
            if not name.endswith("key|bias"):
                np.testing.assert_allclose(weights_w[name], value, atol=1e-5, err_msg=name)
        for task, result in metrics.items():  # each worker evaluates every dev example once
            assert metrics_w[task]["examples"] == result["examples"]
            assert metrics_w[task]["accuracy"] == pytest.approx(result["accuracy"], abs=1e-5)


def test_each_worker_reads_its_own_half_of_every_epoch(reference):
    _, seen, _, _ = _read(reference / "single")
    _, seen_0, _, _ = _read(reference / "worker0")
    _, seen_1, _, _ = _read(reference / "worker1")
    assert len(seen) == len(seen_0) == len(seen_1) == EPOCHS
    for epoch in range(EPOCHS):
        single = collections.Counter(map(tuple, seen[epoch]))
        halves = [collections.Counter(map(tuple, s[epoch])) for s in (seen_0, seen_1)]
        assert halves[0] + halves[1] == single  # together: every example once
        total = read_data(load_config(reference / "two_tasks.yaml")).examples_per_epoch
        assert sum(single.values()) == total
        # Each worker's replica takes half of every global batch.
        # (an odd epoch: one of them takes the extra example)
        assert sorted(sum(h.values()) for h in halves) == [total // 2, total - total // 2]


def test_only_the_chief_writes_the_run_directory(reference):
    run = reference / "run"
    assert (run / "history.csv").exists() and (run / "checkpoints" / "manifest.json").exists()
    assert list((reference / "tmp").iterdir()) == []  # the other worker's files are gone


def _cli(config, run_dir, timeout=None):
    command = [sys.executable, "-m", "mtl_keras.cli", "train", "--config", str(config),
               "--out", str(run_dir), "--strategy", "multi_worker", "--quiet"]
    return command + (["--collective-timeout", str(timeout)] if timeout else [])


def test_a_lost_worker_fails_the_other_and_both_resume(reference, tmp_path):
    config = _config(tmp_path, epochs=EPOCHS, checkpoint_every_steps=4)
    run = tmp_path / "run"
    ports = _free_ports(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [_start(_cli(config, run, timeout=20), _environment(tmp_path, i, ports), logs[i])
               for i in range(2)]
    deadline = time.monotonic() + TIMEOUT
    while not list((run / "checkpoints").glob("ckpt-8.index")):
        assert time.monotonic() < deadline and workers[0].poll() is None, logs[0].read_text()
        time.sleep(0.2)
    workers[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    code = _finish(workers[0], logs[0])
    waited = time.monotonic() - killed
    print(f"worker 0 exited {waited:.1f} s after worker 1 was killed")
    assert code == 1, logs[0].read_text()[-3000:]
    assert waited < 60
    assert "another worker was lost" in logs[0].read_text()
    assert not (run / "model.keras").exists()

    logs = [tmp_path / f"worker{i}_resumed.log" for i in range(2)]
    workers = [_start(_cli(config, run, timeout=60), _environment(tmp_path, i, ports), logs[i])
               for i in range(2)]
    codes = [_finish(w, log) for w, log in zip(workers, logs)]
    assert codes == [0, 0], logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
    assert "Resuming" in logs[0].read_text() and "Resuming" in logs[1].read_text()
    # The resumed run is the uninterrupted one: each example once per epoch.
    metrics = json.loads((run / "metrics.json").read_text())["tasks"]
    uninterrupted = json.loads((reference / "single" / "metrics.json").read_text())
    for task, result in uninterrupted.items():
        assert metrics[task]["loss"] == pytest.approx(result["loss"], abs=1e-4), task
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + EPOCHS  # the header and one row per epoch
    assert (run / "saved_model").is_dir()
