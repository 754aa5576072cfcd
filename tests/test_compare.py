"""`mtl-keras compare`: multi-task vs single-task on the bundled sample (tiny sizes)."""

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from tiny_config import write_tiny_config

from mtl_keras import MultiTaskModel, SharedEncoder, cli
from mtl_keras import compare as compare_lib
from mtl_keras.batching import make_batches
from mtl_keras.compare_report import build_report, format_report
from mtl_keras.config import DEFAULT_CONFIG, load_config
from mtl_keras.config_checks import ConfigError
from mtl_keras.data import FileSource, eval_datasets, joint_dataset
from mtl_keras.preprocess import TextPreprocessor

pytestmark = pytest.mark.slow  # trains multi- and single-task models over seeds (CI runs them: .ci/run)

TASKS = ["topic", "sentiment", "rating", "aspects", "mentions"]
SEEDS = 1
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def tiny_config(directory):
    """The bundled sample, a tiny model, one epoch, a constant learning rate."""
    return write_tiny_config(
        directory,
        epochs=1,
        batch_size=64,
        learning_rate=0.003,
        schedule="constant",
        warmup_fraction=0.0,
    )


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    directory = tmp_path_factory.mktemp("compare")
    config = tiny_config(directory)
    out = directory / "out"
    code = cli.main(
        [
            "compare",
            "--config",
            str(config),
            "--seeds",
            str(SEEDS),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "compare.json").read_text())
    return config, out, report


def test_report_has_every_task_for_both_models(compared):
    _, out, report = compared
    assert list(report["tasks"]) == TASKS
    assert report["completed_seeds"] == list(range(SEEDS))
    expected = {"topic": "accuracy", "sentiment": "mcc", "rating": "mae", "aspects": "macro_f1", "mentions": "entity_f1"}
    for name in TASKS:
        metrics = report["tasks"][name]["metrics"]
        assert expected[name] in metrics
        for summary in metrics.values():
            for key in ("multi_task", "single_task", "difference"):
                assert len(summary[key]["values"]) == SEEDS
                assert all(math.isfinite(v) for v in summary[key]["values"])
    models = {(r["seed"], r["model"]) for r in report["runs"]}
    assert models == {(s, m) for s in range(SEEDS) for m in ["multi_task", *TASKS]}
    table = (out / "compare.md").read_text()
    for name in TASKS:
        assert f"| {name} |" in table
    assert "multi / sum of single" in table
    for model in ["multi_task", *TASKS]:
        assert (out / "configs" / f"{model}.yaml").is_file()
    # A written single-task config is a valid config of that task alone.
    single = load_config(out / "configs" / "topic.yaml")
    assert [t.name for t in single.tasks] == ["topic"]


def test_compute_accounting_adds_up(compared):
    config_path, _, report = compared
    budget = report["budget"]
    config = load_config(config_path)
    sizes = compare_lib.task_sizes(config)
    assert budget["train_rows"] == sizes
    # Single-task model t: E passes over its n_t labelled rows.
    epochs = config.training.epochs
    assert budget["single_task_examples"] == {t: epochs * n for t, n in sizes.items()}
    total = sum(budget["single_task_examples"].values())
    assert budget["multitask_fraction"] == pytest.approx(1 / len(TASKS))
    assert budget["multitask_examples"] == round(total / len(TASKS))
    batch_size = config.training.batch_size
    for run in report["runs"]:
        c = run["compute"]
        model = run["model"]
        wanted = (
            budget["multitask_examples"]
            if model == "multi_task"
            else budget["single_task_examples"][model]
        )
        assert c["examples"] == wanted, run  # the whole stream, nothing more
        assert c["steps"] == c["batches"]  # one training step per batch
        assert c["steps"] >= math.ceil(wanted / batch_size)
        assert c["tokens"] <= c["padded_tokens"] <= c["examples"] * 24
        assert c["train_seconds"] > 0 and c["train_cpu_seconds"] > 0
        labelled = c["labelled_examples"]
        if model == "multi_task":
            assert set(labelled) == set(TASKS)
            assert max(labelled.values()) <= c["examples"]
        else:  # a single-task run only sees rows labelled for its task
            assert labelled == {model: c["examples"]}
    compute = report["compute"]
    for key in ("examples", "steps", "padded_tokens", "train_seconds"):
        single_sum = sum(compute[t]["mean"][key] for t in TASKS)
        assert compute["single_task_sum"]["mean"][key] == pytest.approx(single_sum)
        assert compute["ratio"][key] == pytest.approx(
            compute["multi_task"]["mean"][key] / single_sum
        )
    assert compute["ratio"]["examples"] == pytest.approx(1 / len(TASKS), abs=1e-3)
    for name in TASKS:
        seen = report["tasks"][name]["examples_seen"]
        assert seen["single_task"] == budget["single_task_examples"][name]
        per_seed = [
            c["labelled_examples"][name] for c in compute["multi_task"]["per_seed"]
        ]
        assert seen["multi_task"] == pytest.approx(np.mean(per_seed))


def test_single_task_result_equals_direct_training(compared):
    """The topic single-task numbers = a topic-only model trained by hand."""
    config_path, _, report = compared
    config = load_config(config_path)
    seed = 0
    task = next(t for t in config.tasks if t.name == "topic")
    data = Path(config.data_root) / "sample"

    keras.utils.set_random_seed(seed)
    # The shared vocabulary: every training text of the multi-task data.
    all_columns = {t.name: t.name for t in config.tasks}
    texts = FileSource(data / "train.tsv", "text", all_columns).read(config.tasks).text
    preprocessor = TextPreprocessor.from_texts(list(texts), **config.preprocessor)
    source = FileSource(data / "train.tsv", "text", {"topic": "topic"})
    examples = report["budget"]["single_task_examples"]["topic"]
    raw = joint_dataset([task], [source], shuffle=True, seed=seed)
    batches = make_batches(
        raw.repeat().take(examples), preprocessor, config.training.batch_size, seed=seed
    )
    encoder = SharedEncoder.for_preprocessor(preprocessor, name="encoder", **config.encoder)
    model = MultiTaskModel([task], encoder, preprocessor)
    model.compile(learning_rate=config.training.learning_rate)
    model.fit(batches, epochs=1, shuffle=False, verbose=0)
    dev = FileSource(data / "dev.tsv", "text", {"topic": "topic"})
    dev_batches = make_batches(eval_datasets([task], [dev])["topic"], preprocessor, 64)
    logs = model.evaluate(dev_batches, verbose=0, return_dict=True)

    run = next(r for r in report["runs"] if r["seed"] == seed and r["model"] == "topic")
    reported = run["metrics"]["topic"]
    assert logs["topic_accuracy"] == pytest.approx(reported["accuracy"], abs=0.01)
    assert logs["topic_loss"] == pytest.approx(reported["loss"], rel=0.02)
    assert logs["topic_mcc"] == pytest.approx(reported["mcc"], abs=0.02)
    assert (
        reported["accuracy"]
        == report["tasks"]["topic"]["metrics"]["accuracy"]["single_task"]["values"][
            seed
        ]
    )


def test_report_pairs_seeds_and_sums_compute():
    """Mean ± sd per model, Δ paired by seed, compute sums and ratios."""
    tasks = TASKS[:3]
    config = load_config().with_tasks(tasks)
    budget = compare_lib.Budget(1, {"topic": 10, "sentiment": 10, "rating": 10}, 0.5)
    runs = []
    accuracy = {("multi_task", 0): 0.8, ("multi_task", 1): 0.6}
    accuracy.update({("topic", 0): 0.7, ("topic", 1): 0.7})
    for seed in (0, 1):
        for model in ["multi_task", *tasks]:
            metrics = {
                "topic": {
                    "kind": "multiclass",
                    "accuracy": accuracy.get((model, seed)),
                },
                "sentiment": {"kind": "binary", "accuracy": 0.5, "mcc": 0.1},
                "rating": {"kind": "regression", "mae": 1.0},
            }
            compute = dict.fromkeys(
                ["steps", "examples", "padded_tokens", "tokens"], 10
            )
            compute.update(train_seconds=2.0 + seed, train_cpu_seconds=1.0)
            compute["labelled_examples"] = dict.fromkeys(tasks, 4)
            runs.append(
                {"seed": seed, "model": model, "metrics": metrics, "compute": compute}
            )
    report = build_report(config, budget, [0, 1, 2], runs)
    assert report["completed_seeds"] == [0, 1]  # seed 2 never ran
    topic = report["tasks"]["topic"]["metrics"]["accuracy"]
    assert topic["multi_task"]["mean"] == pytest.approx(0.7)
    assert topic["multi_task"]["sd"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert topic["difference"]["values"] == pytest.approx([0.1, -0.1])
    compute = report["compute"]
    assert compute["single_task_sum"]["mean"]["examples"] == 30
    assert compute["single_task_sum"]["mean"]["train_seconds"] == pytest.approx(7.5)
    assert compute["ratio"]["examples"] == pytest.approx(1 / 3)
    table = format_report(report)
    assert "| +0.00 ± 14.14 |" in table  # Δ accuracy ×100, sd of the paired Δ
    assert "| **multi / sum of single** | 0.333 |" in table


def test_single_task_config_keeps_only_its_task():
    config = load_config("glue_agnews_files", check_files=False)
    single = compare_lib.single_task_config(config, "ag_news")
    assert [t.name for t in single.tasks] == ["ag_news"]
    assert [s["file"] for s in single.data.train] == ["ag_news/train_sample_10k.tsv"]
    assert [s["file"] for s in single.data.dev] == ["ag_news/test.csv"]
    assert single.data.train[0]["label_map"] == config.data.train[2]["label_map"]
    assert single.sampler == "joint"
    assert single.encoder == config.encoder and single.training == config.training
    joint = compare_lib.single_task_config(load_config(), "rating")
    assert joint.data.train[0]["tasks"] == {"rating": "rating"}
    # A mixture covers the multi-task budget with whole mixture epochs.
    budget = compare_lib.Budget(3, {"sst2": 100, "cola": 50, "ag_news": 50}, 0.4)
    assert budget.single_task_total == 600 and budget.multitask_examples == 240
    assert compare_lib.multitask_config(config, budget).training.epochs == 2
    with pytest.raises(ValueError, match="No task"):
        compare_lib.single_task_config(config, "topic")


def test_mcc_is_the_matthews_correlation():
    """The logged `mcc` metric (what compare reports) on hand-checked cases."""
    from mtl_keras.tasks import Task

    def mcc(task, labels, logits):
        metric = dict(zip(task.metric_names(), task.metrics()))["mcc"]
        metric.update_state(labels, logits)
        return float(metric.result())

    binary = Task("b", "binary")
    labels = np.array([1, 1, 0, 0, 1, 0], "float32")
    assert mcc(binary, labels, (2 * labels - 1)[:, None]) == pytest.approx(1.0)
    assert mcc(binary, labels, (1 - 2 * labels)[:, None]) == pytest.approx(-1.0)
    assert mcc(binary, labels, np.ones((6, 1))) == 0.0
    logits = np.array([1, -1, -1, -1, 1, 1], "float32")[:, None]  # tp 2, fn 1, tn 2, fp 1
    assert mcc(binary, labels, logits) == pytest.approx(
        (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)
    )
    multiclass = Task("m", "multiclass", num_classes=3)
    truth = np.array([0, 1, 2, 2])
    assert mcc(multiclass, truth, np.eye(3)[truth]) == pytest.approx(1.0)


def test_compare_needs_two_tasks(tmp_path, capsys):
    mapping = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mapping["tasks"] = mapping["tasks"][:1]
    for split in ("train", "dev"):
        mapping["data"][split][0]["tasks"] = ["topic"]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(mapping))
    assert cli.main(["compare", "--config", str(path), "--out", str(tmp_path)]) == 2
    assert "two or more tasks" in capsys.readouterr().err


def test_peers_smoke(tmp_path):
    """`benchmarks/peers.py --smoke` runs every candidate (tiny sizes)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import peers
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = tmp_path / "peers.json"
    results = peers.main(["--smoke", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["config"]["precisions"] == ["float32"]
    for precision in written["config"]["precisions"]:
        candidates = written["results"][precision]["candidates"]
        assert set(candidates) == set(peers.CANDIDATES)
        for candidate in candidates.values():
            assert candidate["median"] > 0
    assert results and os.path.isfile(out.with_suffix(".md"))
    # Without the shared data: a clean skip, or generated texts with --smoke.
    assert peers.main(["--data", str(tmp_path), "--out", str(out)]) is None
    pool = peers.pool_of_examples(peers.generated_sources(20), 30)
    assert len(pool) == 30
    assert sum(int(pool.masks[t.name].sum()) for t in peers.TASKS) == 30


def test_compare_weightings_trains_one_multi_task_model_per_method(monkeypatch, tmp_path):
    """Each method gets its own multi-task run against the same single-task runs."""
    config = dataclasses.replace(load_config(epochs=1), sampler="uniform")  # a mixture
    seen = []
    accuracy = {"multi_task:static": 0.6, "multi_task:pcgrad": 0.75, "topic": 0.5}

    class Result:
        def __init__(self, run_config, model):
            self.model = type("M", (), {"preprocessor": None})()
            self.metrics = {
                t.name: {"kind": t.kind, **({"accuracy": accuracy.get(model, 0.5)}
                         if t.kind != "regression" else {"mae": 1.0})}
                for t in run_config.tasks
            }
            self.compute = dict.fromkeys(["steps", "examples", "padded_tokens", "tokens"], 10)
            self.compute.update(train_seconds=1.0, train_cpu_seconds=1.0,
                                labelled_examples=dict.fromkeys(TASKS, 4))

    def fake_fit_run(run_config, label, **kwargs):
        model = label.split(" ", 2)[2]
        seen.append((model, run_config.weighting, run_config.training.batching))
        return Result(run_config, model)

    monkeypatch.setattr(compare_lib, "fit_run", fake_fit_run)
    report = compare_lib.compare(config, seeds=1, out_dir=tmp_path, verbose=0,
                                 weightings=["static", "pcgrad"])
    assert seen[:2] == [("multi_task:static", "static", "length"),
                        ("multi_task:pcgrad", "pcgrad", "every_task")]
    assert [m for m, _, _ in seen[2:]] == TASKS
    topic = report["tasks"]["topic"]["metrics"]["accuracy"]
    assert topic["difference:pcgrad"]["mean"] == pytest.approx(0.25)
    assert report["delta_m"]["multi_task:pcgrad"] > report["delta_m"]["multi_task:static"]
    table = (tmp_path / "compare.md").read_text()
    assert "| task | metric | single-task | static | pcgrad |" in table
    assert "75.00 (+25.00)" in table
    with pytest.raises(ConfigError, match="Did you mean 'pcgrad'"):
        compare_lib.compare(config, seeds=1, verbose=0, weightings=["pcgrd"])
